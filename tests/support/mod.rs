//! Test support: real services started on loopback ports the tests choose.

pub mod agents;
pub mod cloudwatch;
pub mod graphite;
pub mod haproxy;
pub mod influx;
pub mod llama;
pub mod mlflow;
pub mod openai;
pub mod pg;
pub mod prometheus;
pub mod saas;
pub mod victoria;
pub mod slack;

/// A configuration under `fixtures/config/`, to be written elsewhere: its
/// paths (relative to its own folder) made absolute so the copy still finds them.
pub fn fixture_config(name: &str) -> String {
    let text = std::fs::read_to_string(format!("fixtures/config/{name}")).unwrap();
    text.replace("\"../", &format!("\"{}/fixtures/", env!("CARGO_MANIFEST_DIR")))
}

/// A path under the repository as an absolute one, for a configuration written
/// to a temporary folder (its relative paths resolve against that folder).
pub fn repo_path(relative: &str) -> String {
    format!("{}/{relative}", env!("CARGO_MANIFEST_DIR"))
}

/// One action of a ledger, as recorded: its kind (`raise 25` for a ramp
/// step), its result's label and what was read back from the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub kind: String,
    pub result: String,
    pub observed: String,
}

/// Every action in the ledger at `path` with its outcome, in ledger order.
pub async fn actions(path: &std::path::Path) -> Vec<Action> {
    use backstop::executor::ActionKind;
    use backstop::ledger::{ActionResult, Record};
    let l = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(path)).await.unwrap();
    let mut kinds = std::collections::HashMap::new();
    let mut done = vec![];
    for r in l.list(None, 100_000).await.unwrap() {
        match Record::from_stored(&r).unwrap() {
            Record::Intent(i) => {
                let kind = match i.plan.kind {
                    ActionKind::Raise { weight } => format!("raise {weight}"),
                    k @ (ActionKind::Rollback | ActionKind::Promote) => k.to_string(),
                };
                kinds.insert(i.plan.id.clone(), kind);
            }
            Record::Outcome(o) => {
                let observed = match &o.result {
                    ActionResult::Verified { observed, .. }
                    | ActionResult::NotVerified { observed, .. }
                    | ActionResult::Reconciled { observed }
                    | ActionResult::Unresolved { observed } => observed.clone(),
                    other => other.label().to_string(),
                };
                let kind = kinds.get(&o.plan_id).cloned().unwrap_or_default();
                done.push(Action { kind, result: o.result.label().to_string(), observed });
            }
            _ => {}
        }
    }
    done
}

/// A one-release `backstop.toml`: release `checkout` of service `checkout`,
/// v42 against last-known-good v41, on `target`, with the given `source` and
/// optional `executor` (TOML inline tables). A scenario path under
/// `fixtures/` is made absolute: the file is written outside the repository,
/// and its paths resolve against its own folder.
pub fn release_toml(target: &str, source: &str, executor: Option<&str>) -> String {
    let source = source.replace("path = \"fixtures/", &format!("path = \"{}/fixtures/", env!("CARGO_MANIFEST_DIR")));
    let executor = executor.map(|e| format!("executor = {e}\n")).unwrap_or_default();
    format!(
        "[[releases]]\nname = \"checkout\"\nservice = \"checkout\"\ntarget = \"{target}\"\n\
         candidate_revision = \"v42\"\nlast_known_good = \"v41\"\nsource = {source}\n{executor}"
    )
}

/// Debian's headless Chromium with a throwaway profile; its log on stderr
/// (where a refused fetch shows as "Refused to ...").
pub fn chromium(args: &[&str], profile: &std::path::Path) -> std::process::Output {
    std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium is installed by scripts/test.sh")
}

/// A recorded release whose canary's errors spike: rolled back.
pub const BAD_SCENARIO: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/scenarios/holdout/holdout-bad-error-spike-strong-traffic-000.json");
/// A recorded healthy release: promoted.
pub const GOOD_SCENARIO: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/scenarios/holdout/holdout-good-healthy-000.json");

/// Wait until `GET path` on loopback `port` answers a status line starting
/// with `status` (`"HTTP/1.1 200"`), or fail naming `what`.
pub fn wait_http(port: u16, path: &str, status: &str, what: &str) {
    let ready = || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read, Write};
            let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut b = String::new();
            let _ = s.read_to_string(&mut b);
            b.starts_with(status)
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `backstop --config CFG ARGS` with its data under `dir` and `env` set, two
/// minutes at most: (exit code, stdout then stderr).
pub fn backstop_at(
    cfg: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, String) {
    let mut cmd = assert_cmd::Command::cargo_bin("backstop").unwrap();
    cmd.env_remove("BACKSTOP_CONFIG").env("XDG_DATA_HOME", dir).args(["--config", cfg.to_str().unwrap()]).args(args);
    // Not this machine's AWS profiles (a test names its own files).
    for var in ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"] {
        cmd.env(var, dir.join("no-aws-files"));
    }
    cmd.env_remove("AWS_PROFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.timeout(std::time::Duration::from_secs(120)).output().unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The weights of a report's `ramp.raises`, in order (`ramp` is the report's `ramp` object).
pub fn raise_weights(ramp: &serde_json::Value) -> Vec<u64> {
    ramp["raises"].as_array().unwrap().iter().map(|r| r["weight"].as_u64().unwrap()).collect()
}

/// The first JSON value in `out` (a report on stdout, before stderr's lines).
pub fn first_json(out: &str) -> serde_json::Value {
    let json = &out[out.find('{').unwrap_or_else(|| panic!("no JSON: {out}"))..];
    let mut values = serde_json::Deserializer::from_str(json).into_iter::<serde_json::Value>();
    values.next().and_then(Result::ok).unwrap_or_else(|| panic!("no JSON: {out}"))
}

/// The facts of release `rel-1` of `checkout` on `target` (v1 → v2, declared target `sim/checkout`).
pub fn checkout_facts(target: &str) -> backstop::policy::ReleaseFacts {
    backstop::policy::ReleaseFacts {
        release_id: "rel-1".into(),
        service: "checkout".into(),
        target: target.into(),
        service_targets: 0,
        declared_targets: vec!["sim/checkout".into()].into(),
        candidate_revision: "v2".into(),
        last_known_good: Some("v1".into()),
        quarantine: None,
        last_known_good_from: None,
        irreversible: false,
        environment: "test".into(),
    }
}

/// The simulator with a 10 % error spike from 300 s.
pub fn error_spike_at_300() -> backstop::signals::simulator::SimConfig {
    use backstop::signals::simulator::{FaultKind, FaultSpec, SimConfig};
    SimConfig {
        fault: Some(FaultSpec { kind: FaultKind::ErrorSpike, onset_s: 300, strength: 0.1 }),
        ..SimConfig::default()
    }
}
