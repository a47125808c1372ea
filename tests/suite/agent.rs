//! `backstop agent` as a real process: releases registered over the API,
//! approvals answered from the CLI with scoped tokens, real HAProxy weights,
//! the ledger and `/metrics` agreeing, SIGTERM during an action.

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

use crate::support::agents::{Agent, lines};
use crate::support::haproxy::{Haproxy, free_port};

pub(crate) const BAD: &str = "fixtures/scenarios/holdout/holdout-bad-error-spike-strong-traffic-000.json";

pub(crate) const TOKENS: &str = r#"
[[tokens]]
identity = "alice@example.com"
scopes = ["read", "approve"]
token_env = "T_ALICE"

[[tokens]]
identity = "bob@example.com"
scopes = ["read", "approve"]
token_env = "T_BOB"

[[tokens]]
identity = "ci:github:example/checkout"
scopes = ["read", "register"]
token_env = "T_CI"

[[tokens]]
identity = "viewer@example.com"
scopes = ["read"]
token_env = "T_VIEWER"

[[tokens]]
identity = "ops@example.com"
scopes = ["read", "operate"]
token_env = "T_OPS"
"#;

pub(crate) const ALICE: &str = "alice-token-0123456789";
pub(crate) const BOB: &str = "bob-token-0123456789";
pub(crate) const CI: &str = "ci-token-0123456789";
pub(crate) const VIEWER: &str = "viewer-token-0123456789";
pub(crate) const OPS: &str = "ops-token-0123456789";

pub(crate) fn env() -> Vec<(&'static str, &'static str)> {
    vec![("T_ALICE", ALICE), ("T_BOB", BOB), ("T_CI", CI), ("T_VIEWER", VIEWER), ("T_OPS", OPS)]
}

pub(crate) const POLICY: &str = r#"
version = 1
[rate_limit]
max_rollbacks = 3
window_minutes = 60
[services.checkout]
autonomy = "approve"
[approvals]
approvers = ["group:sre"]
[approvals.groups]
sre = ["alice@example.com"]
"#;

pub(crate) struct Setup {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) url: String,
    pub(crate) agent: Agent,
}

impl Setup {
    pub(crate) fn ledger(&self) -> String {
        self.dir.path().join("l.db").display().to_string()
    }

    pub(crate) fn audit(&self) -> String {
        audit(&self.ledger())
    }
}

/// `backstop audit list` of the whole ledger.
pub(crate) fn audit(ledger: &str) -> String {
    let out = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["audit", "list", "--limit", "100000", "--ledger", ledger])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Start an agent with `config` (TOML), the tokens above and `policy`.
pub(crate) fn start(config: &str, policy: &str, pace_ms: u64, extra_env: &[(&str, &str)]) -> Setup {
    start_in(tempfile::tempdir().unwrap(), config, policy, pace_ms, extra_env)
}

/// As [`start`], in `dir` (its `l.db` is the ledger: a second agent there shares it).
pub(crate) fn start_in(
    dir: tempfile::TempDir,
    config: &str,
    policy: &str,
    pace_ms: u64,
    extra_env: &[(&str, &str)],
) -> Setup {
    for (name, text) in [("backstop.toml", config), ("tokens.toml", TOKENS), ("policy.toml", policy)] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let (url, agent) = agent_in(dir.path(), pace_ms, extra_env);
    Setup { dir, url, agent }
}

/// An agent on the files and ledger in `dir`, on a free port: its URL and process.
pub(crate) fn agent_in(dir: &Path, pace_ms: u64, extra_env: &[(&str, &str)]) -> (String, Agent) {
    let listen = format!("127.0.0.1:{}", free_port());
    let file = |name: &str| dir.join(name).display().to_string();
    let (cfg, tokens, pol, ledger) = (file("backstop.toml"), file("tokens.toml"), file("policy.toml"), file("l.db"));
    let pace = pace_ms.to_string();
    let args = [
        "--config",
        &cfg,
        "agent",
        "--listen",
        &listen,
        "--tokens",
        &tokens,
        "--policy",
        &pol,
        "--ledger",
        &ledger,
        "--pace-ms",
        &pace,
    ];
    let mut all_env = env();
    all_env.extend_from_slice(extra_env);
    let mut agent = Agent::spawn(&args, &all_env);
    agent.wait_for_stdout("backstop agent on", Duration::from_secs(60));
    (format!("http://{listen}"), agent)
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

pub(crate) async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut r = client().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

pub(crate) async fn post(url: &str, token: &str, body: &Value) -> (u16, Value) {
    let resp = client().post(url).bearer_auth(token).json(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Poll `GET /v1/releases/NAME` until `pred` holds.
pub(crate) async fn wait_release(s: &Setup, name: &str, pred: impl Fn(&Value) -> bool, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (code, text) = get(&format!("{}/v1/releases/{name}", s.url), Some(ALICE)).await;
        if code == 200 {
            let v: Value = serde_json::from_str(&text).unwrap();
            if pred(&v) {
                return v;
            }
        }
        assert!(start.elapsed() < within, "release {name} not as expected within {within:?}: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn answer(agent_url: &str, verb: &str, id: &str, token: &str) -> (i32, String) {
    let out = Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .env("BACKSTOP_AGENT_TOKEN", token)
        .env_remove(if token.is_empty() { "BACKSTOP_AGENT_TOKEN" } else { "BACKSTOP_NO_SUCH_VARIABLE" })
        .args([verb, id, "--agent", agent_url, "--reason", "error ratio up on the canary"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// HAProxy acts on `haproxy/checkout`; its one signal template is the simulator's
/// canary starting to fail at 300 s.
fn haproxy_target(socket: &str) -> String {
    format!(
        "[[agent.targets]]\ntarget = \"haproxy/checkout\"\nexecutor = {{ kind = \"haproxy\", socket = \"{socket}\", \
         backend = \"be\", canary_server = \"canary\", stable_server = \"stable\" }}\n\
         templates.default.source = {{ kind = \"simulator\", seed = 7, \
         fault = {{ kind = \"error_spike\", onset_s = 300, strength = 0.05 }} }}\n"
    )
}

/// Register `name` on `target` (the pipeline's token; 201) and wait up to
/// 120 s for it to finish: the release as the API shows it then.
pub(crate) async fn registered_until_finished(s: &Setup, name: &str, target: &str) -> Value {
    let (code, body) = post(&format!("{}/v1/releases", s.url), CI, &registration(name, target)).await;
    assert_eq!(code, 201, "{body}");
    wait_release(s, name, |v| v["state"] == "finished", Duration::from_secs(120)).await
}

/// A registration of `name` on `target`, with the target's default template.
pub(crate) fn registration(name: &str, target: &str) -> Value {
    serde_json::json!({
        "name": name, "service": "checkout", "target": target,
        "candidate_revision": "v42", "last_known_good": "v41",
    })
}

async fn canary_weight(socket: &str) -> u32 {
    crate::suite::haproxy::executor(socket).weight("canary").await.unwrap()
}

/// Registration: scope, a chosen executor and an undeclared target are
/// refused before anything runs; the one good body is registered, once.
async fn registration_is_checked_before_anything_runs(releases: &str) {
    let (code, _) = post(releases, VIEWER, &registration("checkout", "haproxy/checkout")).await;
    assert_eq!(code, 403, "a read-only token cannot register");
    let mut with_exec = registration("checkout", "haproxy/checkout");
    with_exec["executor"] =
        serde_json::json!({ "kind": "command", "rollback": ["sh", "-c", "id"], "verify": ["true"] });
    let (code, body) = post(releases, CI, &with_exec).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("executor"), "{body}");
    let (code, body) = post(releases, CI, &registration("checkout", "haproxy/elsewhere")).await;
    assert!(code == 422 && body["error"].as_str().unwrap().contains("haproxy/elsewhere"), "{code} {body}");
    let (code, body) = post(releases, CI, &registration("checkout", "haproxy/checkout")).await;
    assert_eq!(code, 201, "{body}");
    let (code, _) = post(releases, CI, &registration("checkout", "haproxy/checkout")).await;
    assert_eq!(code, 409, "a second registration of one name");
}

/// The ledger names each person (the pipeline that registered, the refused
/// and the obeyed approver); /metrics counts what happened; still ready.
async fn the_ledger_names_each_person_and_metrics_count(s: &Setup) {
    let audit = s.audit();
    let who = |needle: &str| audit.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(who("operator         pipeline:ci:github:example/checkout"), 1, "{audit}");
    assert_eq!(who("approval_requested"), 1, "{audit}");
    assert!(audit.lines().any(|l| l.contains("human:api:bob@example.com") && l.contains("refused")), "{audit}");
    assert!(
        audit.lines().any(|l| l.contains("human:api:alice@example.com") && l.contains("ruling=execute rollback")),
        "{audit}"
    );
    assert_eq!(who("intent "), 1, "{audit}");
    let (_, metrics) = get(&format!("{}/metrics", s.url), Some(VIEWER)).await;
    for line in [
        "backstop_executor_actions_total{action=\"rollback\",result=\"verified\"} 1",
        "backstop_approval_answers_total{kind=\"executed\"} 1",
        "backstop_approval_answers_total{kind=\"refused\"} 1",
        "backstop_releases{kind=\"finished\"} 1",
        "backstop_approvals_pending 0",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in\n{metrics}");
    }
    let (code, ready) = get(&format!("{}/readyz", s.url), None).await;
    assert_eq!((code, ready.trim()), (200, "ready"));
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_registers_a_simulated_release_and_only_an_approver_can_roll_it_back_on_real_haproxy() {
    let h = Haproxy::start();
    let socket = h.unix_socket.display().to_string();
    // The simulator's canary starts failing at 300 s; HAProxy is what the rollback changes.
    let s = start(&haproxy_target(&socket), POLICY, 10, &[]);
    let releases = format!("{}/v1/releases", s.url);

    registration_is_checked_before_anything_runs(&releases).await;

    // The canary fails; autonomy `approve` turns the rollback into a request. Nothing has run.
    let v = wait_release(&s, "checkout", |v| !v["pending_approval"].is_null(), Duration::from_secs(120)).await;
    assert_eq!(v["state"], "awaiting_approval");
    let id = v["pending_approval"]["request"]["id"].as_str().unwrap().to_string();
    assert_eq!(canary_weight(&socket).await, 10);

    // No token: 401. A token without the approve scope: 403. An approver's scope but not named by policy: refused.
    let (code, _) = get(&releases, None).await;
    assert_eq!(code, 401);
    let (code, _) = post(&format!("{}/v1/approvals/{id}/approve", s.url), VIEWER, &serde_json::json!({})).await;
    assert_eq!(code, 403);
    let (code, text) = answer(&s.url, "approve", &id, BOB);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("bob@example.com is not an approver for checkout"), "{text}");
    assert_eq!(canary_weight(&socket).await, 10, "a refused approval runs nothing");

    // Alice approves: executed on HAProxy and verified; a second approval is one action, not two.
    let (code, text) = answer(&s.url, "approve", &id, ALICE);
    assert_eq!(code, 10, "{text}");
    assert!(text.contains("rolled_back"), "{text}");
    assert_eq!(canary_weight(&socket).await, 0);
    let (code, text) = answer(&s.url, "approve", &id, ALICE);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("closed"), "{text}");

    // The release ends just after the approver is answered (its end record follows the action's outcome).
    wait_release(&s, "checkout", |v| v["state"] == "finished", Duration::from_secs(30)).await;
    the_ledger_names_each_person_and_metrics_count(&s).await;

    s.agent.signal("TERM");
    let (code, _, err) = s.agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
}

fn command_release(count: &Path) -> String {
    let count = count.display();
    format!(
        "[[releases]]\nname = \"checkout\"\nservice = \"checkout\"\ntarget = \"cmd/checkout\"\n\
         candidate_revision = \"v42\"\nlast_known_good = \"v41\"\n\
         source = {{ kind = \"scenario\", path = \"{}\" }}\n\
         executor = {{ kind = \"command\", rollback = [\"sh\", \"-c\", \"sleep 1; echo {{plan_id}} >> {count}\"], \
         verify = [\"grep\", \"-qF\", \"{{plan_id}}\", \"{count}\"], env_allowlist = [\"PATH\"] }}\n",
        std::fs::canonicalize(BAD).unwrap().display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_approved_rollback_lets_it_finish_and_the_agent_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("count");
    let mut s = start(&command_release(&count), POLICY, 10, &[("BACKSTOP_TEST_PAUSE_AT", "after_intent:1500")]);
    let v = wait_release(&s, "checkout", |v| !v["pending_approval"].is_null(), Duration::from_secs(120)).await;
    let id = v["pending_approval"]["request"]["id"].as_str().unwrap().to_string();
    let url = s.url.clone();
    let approve = std::thread::spawn(move || {
        Command::cargo_bin("backstop")
            .unwrap()
            .env("BACKSTOP_AGENT_TOKEN", ALICE)
            .args(["approve", &id, "--agent", &url])
            .output()
            .unwrap()
    });
    s.agent.wait_for("paused at after_intent", Duration::from_secs(60));
    s.agent.signal("TERM");
    let approved = approve.join().unwrap();
    assert_eq!(approved.status.code(), Some(10), "{}", String::from_utf8_lossy(&approved.stdout));
    let ledger = s.ledger();
    let (code, out, err) = s.agent.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(lines(&count).len(), 1, "the rollback ran exactly once, to its end");
    let audit = audit(&ledger);
    assert!(audit.contains("verified (plan"), "{audit}");
    assert!(audit.contains("status=rolled_back"), "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_releases_registered_at_once_all_run_and_metrics_match_the_ledger() {
    const N: usize = 200;
    let targets: String = (0..N)
        .map(|i| {
            format!(
                "[[agent.targets]]\ntarget = \"sim/{i}\"\nexecutor = {{ kind = \"simulator\" }}\n\
                 templates.default.source = {{ kind = \"simulator\", seed = {i}, duration_s = 600 }}\n"
            )
        })
        .collect();
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let s = start(&targets, policy, 1, &[]);
    let regs = (0..N).map(|i| {
        let body = serde_json::json!({
            "name": format!("r{i}"), "service": "checkout", "target": format!("sim/{i}"),
            "candidate_revision": "v2", "last_known_good": "v1",
        });
        let url = format!("{}/v1/releases", s.url);
        async move { post(&url, CI, &body).await }
    });
    let results = futures_all(regs).await;
    for (code, body) in &results {
        assert_eq!(*code, 201, "{body}");
    }
    let start = Instant::now();
    loop {
        let (_, text) = get(&format!("{}/v1/releases", s.url), Some(VIEWER)).await;
        let all: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(all.len(), N, "every registered release is listed");
        if all.iter().all(|v| v["state"] == "finished") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "not all finished: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = get(&format!("{}/metrics", s.url), Some(VIEWER)).await;
    let audit = s.audit();
    let count = |kind: &str| audit.lines().filter(|l| l.split_whitespace().nth(2) == Some(kind)).count();
    assert_eq!(count("operator"), N);
    assert_eq!(count("release_finished"), N);
    assert!(metrics.contains(&format!("backstop_releases{{kind=\"finished\"}} {N}")), "{metrics}");
    let ticks = count("tick");
    assert!(metrics.contains(&format!("backstop_ticks_total {ticks}\n")), "ledger has {ticks} ticks:\n{metrics}");
    let actions = count("outcome");
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("backstop_executor_actions_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted as usize, actions, "{metrics}");
    // The writer's back-pressure is exported (appends wait for room, never dropped).
    for gauge in ["backstop_ledger_queue_waits ", "backstop_ledger_queue_wait_max_seconds "] {
        assert!(metrics.lines().any(|l| l.starts_with(gauge)), "missing {gauge}in\n{metrics}");
    }
}

/// Run futures concurrently and collect their results in order.
async fn futures_all<F: std::future::Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn with_two_agents_on_one_ledger_an_answer_given_to_the_one_not_holding_the_request_acts_once() {
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("count");
    let target = format!(
        "[[agent.targets]]\ntarget = \"cmd/checkout\"\nexecutor = {{ kind = \"command\", rollback = [\"sh\", \"-c\", \
         \"echo {{plan_id}} >> {c}\"], verify = [\"grep\", \"-qF\", \"{{plan_id}}\", \"{c}\"], env_allowlist = [\"PATH\"] }}\n\
         templates.default.source = {{ kind = \"scenario\", path = \"{bad}\" }}\n",
        c = count.display(),
        bad = std::fs::canonicalize(BAD).unwrap().display()
    );
    let a = start(&target, POLICY, 20, &[]);
    let (b_url, b) = agent_in(a.dir.path(), 20, &[]);
    let (code, body) = post(&format!("{}/v1/releases", a.url), CI, &registration("checkout", "cmd/checkout")).await;
    assert_eq!(code, 201, "{body}");
    // B learns of the registration from the ledger; one of the two holds the target and asks.
    let start = Instant::now();
    let (_holder, other, id) = loop {
        let mut found = None;
        for (url, peer) in [(&a.url, &b_url), (&b_url, &a.url)] {
            let (code, text) = get(&format!("{url}/v1/releases/checkout"), Some(ALICE)).await;
            if code == 200 {
                let v: Value = serde_json::from_str(&text).unwrap();
                if let Some(id) = v["pending_approval"]["request"]["id"].as_str() {
                    found = Some((url.clone(), peer.clone(), id.to_string()));
                }
            }
        }
        if let Some(f) = found {
            break f;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no request on either agent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The other agent reads the registration from the ledger within its sync interval and follows.
    let start = Instant::now();
    while get(&format!("{other}/v1/releases/checkout"), Some(ALICE)).await.0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(20), "the other agent never picked up the registration");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The answer goes to the agent that does not hold the request: relayed through the ledger.
    let (code, text) = answer(&other, "approve", &id, ALICE);
    assert_eq!(code, 10, "{text}");
    assert_eq!(lines(&count).len(), 1, "one rollback");
    let audit = a.audit();
    assert!(
        audit.lines().any(|l| l.contains("approval_answer") && l.contains("human:api:alice@example.com")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains("approval_resolved") && l.contains("alice@example.com") && l.contains("execute")),
        "{audit}"
    );
    for agent in [a.agent, b] {
        agent.signal("TERM");
        let (code, _, err) = agent.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{err}");
    }
}

/// A person's rollback sent to the agent standing by is relayed through the
/// ledger to the agent holding the release, ruled on and run there once, and
/// the person is told the outcome by the agent they asked.
/// Two agents on one ledger (the second's URL and process after the first's
/// setup), `sim/checkout` registered; `agent` is prepended to the config.
async fn two_agents_running_checkout(agent: &str) -> (Setup, String, Agent) {
    two_agents_running_checkout_with(agent, &[]).await
}

/// As [`two_agents_running_checkout`], both agents with `env` besides.
async fn two_agents_running_checkout_with(agent: &str, env: &[(&str, &str)]) -> (Setup, String, Agent) {
    let targets = format!(
        "{agent}[[agent.targets]]\ntarget = \"sim/checkout\"\nexecutor = {{ kind = \"simulator\" }}\n\
         templates.default.source = {{ kind = \"simulator\", seed = 3 }}\n"
    );
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n\
                  [approvals]\napprovers = [\"ops@example.com\"]\n";
    let a = start(&targets, policy, 200, env);
    let (b_url, b) = agent_in(a.dir.path(), 200, env);
    let (code, body) = post(&format!("{}/v1/releases", a.url), CI, &registration("checkout", "sim/checkout")).await;
    assert_eq!(code, 201, "{body}");
    (a, b_url, b)
}

/// SIGKILL whichever of the two agents holds the release: the survivor,
/// the folder and the ledger's path.
fn kill_the_holder(a: Setup, b: Agent, holder: &str, b_url: &str) -> (Agent, tempfile::TempDir, String) {
    let ledger = a.ledger();
    let Setup { agent, dir, .. } = a;
    let survivor = if holder == b_url {
        b.kill9();
        agent
    } else {
        agent.kill9();
        b
    };
    (survivor, dir, ledger)
}

/// The agent URL whose loop runs `name` past t = 50 s, and the one standing by.
async fn holder_and_standby(urls: &[&String], name: &str) -> (String, String) {
    let started = Instant::now();
    loop {
        let mut states = Vec::new();
        for url in urls {
            let (code, text) = get(&format!("{url}/v1/releases/{name}"), Some(ALICE)).await;
            let v: Value = if code == 200 { serde_json::from_str(&text).unwrap() } else { Value::Null };
            states.push((url.to_string(), v["state"].as_str().unwrap_or("").to_string(), v["now_s"].as_u64()));
        }
        let running = states.iter().find(|(_, s, t)| s == "running" && t.is_some_and(|t| t >= 50));
        let standing = states.iter().find(|(_, s, _)| s == "standby");
        if let (Some(h), Some(s)) = (running, standing) {
            return (h.0.clone(), s.0.clone());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no holder and standby: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A person's rollback relayed while no agent holds the release — its holder
/// just killed, the standby not yet past the lease — waits for the next
/// holder, which rules on it once and runs it. (Before, it was read while
/// every loop stood by and dropped: the release went on to its end unruled.)
#[tokio::test(flavor = "multi_thread")]
async fn a_persons_rollback_relayed_during_a_takeover_is_ruled_on_by_the_next_holder() {
    let (a, b_url, b) = two_agents_running_checkout("[agent]\nlease_s = 6\n").await;
    let (holder, standby) = holder_and_standby(&[&a.url, &b_url], "checkout").await;
    let (survivor, dir, ledger) = kill_the_holder(a, b, &holder, &b_url);
    let token = [("BACKSTOP_AGENT_TOKEN", OPS)];
    let (code, out, err) = releases(&standby, &["rollback", "checkout", "--reason", "error budget burning"], &token);
    assert_eq!(code, 10, "{out}{err}");
    assert!(out.contains("approved; rollback ran: rolled_back"), "{out}");
    let audit = audit(&ledger);
    let kind = |k: &str| audit.lines().filter(|l| l.split_whitespace().nth(2) == Some(k)).count();
    assert_eq!((kind("person_request"), kind("intent"), kind("release_finished")), (1, 1, 1), "{audit}");
    let resolved: Vec<&str> = audit.lines().filter(|l| l.contains("approval_resolved")).collect();
    assert_eq!(resolved.len(), 1, "ruled on once: {audit}");
    assert!(resolved[0].contains("ops@example.com") && resolved[0].contains("execute"), "{audit}");
    survivor.signal("TERM");
    assert_eq!(survivor.finish(Duration::from_secs(30)).0, 0);
    drop(dir);
}

/// Two agents with Slack on one ledger: only the holder speaks for the
/// release (no message says "standby"), and when it is killed the agent that
/// takes over updates the same message to the release's end — one message.
#[tokio::test(flavor = "multi_thread")]
async fn with_two_agents_only_the_holder_posts_and_the_next_holder_updates_the_same_message() {
    use crate::support::slack::{APP, BOT, FakeSlack, SIGNING};
    let fake = FakeSlack::start(&["C0RELEASE"]).await;
    let slack = format!(
        "[agent]\nlease_s = 6\n[slack]\nmode = \"http\"\napi_url = \"{}\"\nchannel = \"C0RELEASE\"\npost_interval_ms = 20\n",
        fake.api_url
    );
    let env = [("SLACK_BOT_TOKEN", BOT), ("SLACK_APP_TOKEN", APP), ("SLACK_SIGNING_SECRET", SIGNING)];
    let (a, b_url, b) = two_agents_running_checkout_with(&slack, &env).await;
    let (holder, _) = holder_and_standby(&[&a.url, &b_url], "checkout").await;
    fake.wait_call("chat.postMessage", |c| c.to_string().contains("checkout"), Duration::from_secs(30)).await;
    let (survivor, dir, ledger) = kill_the_holder(a, b, &holder, &b_url);
    let start = Instant::now();
    while !audit(&ledger).lines().any(|l| l.split_whitespace().nth(2) == Some("release_finished")) {
        assert!(start.elapsed() < Duration::from_secs(120), "the release never finished after the takeover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ts = fake.ts_of("C0RELEASE", |m| m.to_string().contains("checkout")).expect("the release message");
    let shown = |fake: &FakeSlack| fake.message("C0RELEASE", &ts).to_string();
    let start = Instant::now();
    while !shown(&fake).contains("promoted") {
        assert!(start.elapsed() < Duration::from_secs(30), "never shown ended: {}", shown(&fake));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let top: Vec<Value> = fake.calls("chat.postMessage").into_iter().filter(|c| c["thread_ts"].is_null()).collect();
    assert_eq!(top.len(), 1, "one message across both agents and the takeover: {top:#?}");
    let every = fake.all_calls();
    assert!(!every.iter().any(|(_, body)| body.contains("standby")), "a standby agent spoke: {every:#?}");
    survivor.signal("TERM");
    assert_eq!(survivor.finish(Duration::from_secs(30)).0, 0);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persons_rollback_sent_to_the_standby_agent_is_relayed_to_the_holder_and_runs_once() {
    let (a, b_url, b) = two_agents_running_checkout("").await;
    let (holder, standby) = holder_and_standby(&[&a.url, &b_url], "checkout").await;
    let token = [("BACKSTOP_AGENT_TOKEN", OPS)];
    let (code, out, err) = releases(&standby, &["rollback", "checkout", "--reason", "error budget burning"], &token);
    assert_eq!(code, 10, "{out}{err}");
    assert!(out.contains("approved; rollback ran: rolled_back"), "{out}");
    let v = wait_release(&a, "checkout", |v| v["state"] == "finished", Duration::from_secs(30)).await;
    assert_eq!(v["status"]["status"], "rolled_back", "{v}");
    let audit = a.audit();
    let kind = |k: &str| audit.lines().filter(|l| l.split_whitespace().nth(2) == Some(k)).count();
    assert_eq!((kind("person_request"), kind("intent"), kind("release_finished")), (1, 1, 1), "{audit}");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("approval_resolved") && l.contains("ops@example.com") && l.contains("execute")),
        "{audit}"
    );
    let (_, text) = get(&format!("{holder}/v1/releases/checkout"), Some(ALICE)).await;
    assert!(text.contains("rolled_back"), "the holder ran it: {text}");
    for agent in [a.agent, b] {
        agent.signal("TERM");
        assert_eq!(agent.finish(Duration::from_secs(30)).0, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_release_pauses_on_sigterm_and_resumes_when_the_agent_starts_again() {
    let targets = "[[agent.targets]]\ntarget = \"sim/checkout\"\nexecutor = { kind = \"simulator\" }\n\
                   templates.default.source = { kind = \"simulator\", seed = 3 }\n";
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let s = start(targets, policy, 20, &[]);
    let body = registration("checkout", "sim/checkout");
    let (code, body) = post(&format!("{}/v1/releases", s.url), CI, &body).await;
    assert_eq!(code, 201, "{body}");
    wait_release(&s, "checkout", |v| v["now_s"].as_u64().is_some_and(|t| t >= 200), Duration::from_secs(60)).await;
    s.agent.signal("TERM");
    let Setup { dir, agent, .. } = s;
    let (code, _, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let ledger = dir.path().join("l.db").display().to_string();
    assert!(audit(&ledger).contains("release_paused"), "{}", audit(&ledger));
    // Started again on the same ledger, the agent finds the registration and continues the release.
    let s = start_in(dir, targets, policy, 5, &[]);
    let v = wait_release(&s, "checkout", |v| v["state"] == "finished", Duration::from_secs(120)).await;
    assert_eq!(v["status"]["status"], "promoted", "{v}");
    assert_eq!(v["registered_by"], "pipeline:ci:github:example/checkout");
    let audit = s.audit();
    assert!(audit.lines().any(|l| l.contains("release_started") && l.contains("continued from t=")), "{audit}");
    assert_eq!(audit.lines().filter(|l| l.contains(" operator ")).count(), 1, "registered once: {audit}");

    // The same name registered again with the next revision, which ends too: the name now means v43.
    // It names no last-known-good revision: the ledger's (v42, verified by the promotion) is used,
    // where the registration's v41 would contradict it (never verified on sim/checkout).
    let mut next = registration("checkout", "sim/checkout");
    next["candidate_revision"] = "v43".into();
    next.as_object_mut().unwrap().remove("last_known_good");
    let (code, body) = post(&format!("{}/v1/releases", s.url), CI, &next).await;
    assert_eq!(code, 201, "{body}");
    let v = wait_release(
        &s,
        "checkout",
        |v| v["candidate_revision"] == "v43" && v["state"] == "finished",
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(v["status"]["status"], "promoted", "{v}");

    // Started a third time, after both ended: not run again, but reported from the ledger.
    s.agent.signal("TERM");
    let Setup { dir, agent, .. } = s;
    assert_eq!(agent.finish(Duration::from_secs(30)).0, 0);
    let s = start_in(dir, targets, policy, 5, &[]);
    let (code, _) = get(&format!("{}/v1/releases/checkout", s.url), Some(ALICE)).await;
    assert_eq!(code, 404, "an ended release is not run again");
    let (code, text) = get(&format!("{}/v1/releases/checkout/report", s.url), Some(ALICE)).await;
    assert_eq!(code, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((report["format"].as_str(), report["release"].as_str()), (Some("backstop.report/v1"), Some("checkout")));
    assert_eq!(report["candidate_revision"], "v43", "the newest registration of the name: {report}");
    assert!(report["headline"].as_str().unwrap().to_lowercase().contains("promot"), "{report}");
    let (code, page) = get(&format!("{}/releases/checkout", s.url), Some(ALICE)).await;
    assert!(
        code == 200 && page.contains("<html") && page.contains("checkout"),
        "the dashboard shows the report: {page}"
    );
}

/// With `[ledger] compact_after_days`, the agent sums up a finished
/// release's ticks on its own; the chain still verifies, and the release's
/// report, read back from the compacted ledger by a restarted agent, still
/// says how it ended.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_compacts_a_finished_release_and_its_report_still_reads_from_the_ledger() {
    let config = "[ledger]\ncompact_after_days = 0.00001\n\
                  [[agent.targets]]\ntarget = \"sim/checkout\"\nexecutor = { kind = \"simulator\" }\n\
                  templates.default.source = { kind = \"simulator\", seed = 3 }\n";
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let s = start(config, policy, 5, &[]);
    let v = registered_until_finished(&s, "checkout", "sim/checkout").await;
    assert_eq!(v["status"]["status"], "promoted", "{v}");
    let started = Instant::now();
    while !s.audit().contains("tick records compacted") {
        assert!(started.elapsed() < Duration::from_secs(30), "not compacted: {}", s.audit());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let audit = s.audit();
    assert_eq!(
        audit.lines().filter(|l| l.split_whitespace().nth(2) == Some("tick")).count(),
        1,
        "only the last tick stays: {audit}"
    );
    s.agent.signal("TERM");
    let Setup { dir, agent, .. } = s;
    assert_eq!(agent.finish(Duration::from_secs(30)).0, 0);
    let ledger = dir.path().join("l.db").display().to_string();
    let verify =
        Command::cargo_bin("backstop").unwrap().args(["audit", "verify", "--ledger", &ledger]).output().unwrap();
    let text = String::from_utf8_lossy(&verify.stdout).to_string();
    assert!(verify.status.success() && text.contains("compacted records checked"), "{text}");
    let s = start_in(dir, config, policy, 5, &[]);
    let (code, text) = get(&format!("{}/v1/releases/checkout/report", s.url), Some(ALICE)).await;
    assert_eq!(code, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert!(report["headline"].as_str().unwrap().to_lowercase().contains("promot"), "{report}");
}

/// A release registered on a target with a ramp walks it as `[[releases]]`
/// do: its report (from the ledger) lists each raise; a target whose ramp
/// cannot fit its template's window refuses the registration, naming why
/// (a window the configuration gives is checked at load: `release::spec`'s
/// tests; a scenario file's only when the release is built).
#[tokio::test(flavor = "multi_thread")]
async fn a_registered_release_walks_its_targets_ramp_and_a_ramp_longer_than_the_window_is_refused() {
    let ramp = |min_judged_s: u64| format!("ramp = {{ steps = [5, 25, 50, 100], min_judged_s = {min_judged_s} }}\n");
    let walked = "[[agent.targets]]\ntarget = \"sim/checkout\"\nexecutor = { kind = \"simulator\" }\n\
                  templates.default.source = { kind = \"simulator\", seed = 3 }\n";
    let long = format!(
        "[[agent.targets]]\ntarget = \"haproxy/long\"\nexecutor = {{ kind = \"haproxy\", socket = \"/nonexistent.sock\", \
         backend = \"be\", canary_server = \"canary\", stable_server = \"stable\" }}\n\
         templates.default.source = {{ kind = \"scenario\", path = \"{}\" }}\n",
        std::fs::canonicalize(BAD).unwrap().display()
    );
    // Both windows are 1,800 s: three steps of 300 s fit, three of 700 s do not.
    let config = format!("{walked}{}{long}{}", ramp(300), ramp(700));
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let s = start(&config, policy, 5, &[]);
    let (code, body) = post(&format!("{}/v1/releases", s.url), CI, &registration("long", "haproxy/long")).await;
    assert_eq!(code, 422, "{body}");
    let why = body.to_string();
    assert!(why.contains("ramp") && why.contains("2100") && why.contains("1800"), "{why}");
    let v = registered_until_finished(&s, "checkout", "sim/checkout").await;
    assert_eq!(v["status"]["status"], "promoted", "{v}");
    let (code, text) = get(&format!("{}/v1/releases/checkout/report", s.url), Some(ALICE)).await;
    assert_eq!(code, 200, "{text}");
    let ramp = serde_json::from_str::<Value>(&text).unwrap()["ramp"].clone();
    let weights = crate::support::raise_weights(&ramp);
    assert_eq!((weights, ramp["rehearsed"].clone()), (vec![5, 25, 50], false.into()), "{ramp}");
    let audit = s.audit();
    assert_eq!(audit.lines().filter(|l| l.contains("intent ") && l.contains("raise")).count(), 3, "{audit}");
}

/// `backstop agent --config fixtures/config/simulator.toml` without tokens (the
/// first run of docs/agent-and-api.md), on a free port and its own ledger, `pace_ms` a tick.
pub(crate) fn simulator_agent(pace_ms: u64) -> Setup {
    simulator_agent_with(pace_ms, &[])
}

/// [`simulator_agent`] with extra environment.
pub(crate) fn simulator_agent_with(pace_ms: u64, env: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let ledger = dir.path().join("l.db").display().to_string();
    let pace = pace_ms.to_string();
    let config = "fixtures/config/simulator.toml";
    let args = ["--config", config, "agent", "--listen", &listen, "--ledger", &ledger, "--pace-ms", &pace];
    let mut agent = Agent::spawn(&args, env);
    agent.wait_for_stdout("backstop agent on", Duration::from_secs(60));
    Setup { dir, url: format!("http://{listen}"), agent }
}

/// The newcomer's path, as docs/agent-and-api.md gives it: the simulator configuration
/// and its policy, no tokens (loopback only, the caller is `local`), the
/// dashboard in a real browser, the rollback approved from the CLI, the
/// approval in `audit list`.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Chromium")]
#[tokio::test(flavor = "multi_thread")]
async fn the_newcomers_path_dashboard_in_chromium_approval_from_the_cli_then_audit_list() {
    let s = simulator_agent(5);
    let url = s.url.clone();
    let pending = wait_release(&s, "payments", |v| !v["pending_approval"].is_null(), Duration::from_secs(120)).await;
    wait_release(&s, "search", |v| v["state"] == "finished", Duration::from_secs(120)).await;
    wait_release(&s, "checkout", |v| v["state"] == "finished", Duration::from_secs(120)).await;

    let (_, page) = get(&format!("{url}/"), None).await;
    for needle in ["src=", "url(", "@import", "<script", "<link", "http://", "https://"] {
        assert!(!page.contains(needle), "dashboard contains {needle}");
    }
    let profile = s.dir.path().join("profile");
    let dom = crate::support::chromium(&["--dump-dom", &format!("{url}/")], &profile);
    assert!(dom.status.success(), "{}", String::from_utf8_lossy(&dom.stderr));
    let text = String::from_utf8_lossy(&dom.stdout);
    assert!(text.contains("backstop agent") && text.contains("1 approval(s) pending"), "{text}");
    assert!(text.contains("Approval apr-") && text.contains("roll back simulator/payments from v3 to v2"), "{text}");
    assert!(text.contains("finished (promoted)"), "search was promoted: {text}");
    assert!(text.contains("finished (rolled_back)"), "checkout was rolled back without a human: {text}");
    let log = String::from_utf8_lossy(&dom.stderr);
    assert!(!log.contains("Refused to"), "the page tried to fetch something: {log}");

    let dom =
        crate::support::chromium(&["--dump-dom", &format!("{url}/releases/payments")], &s.dir.path().join("profile-2"));
    let text = String::from_utf8_lossy(&dom.stdout);
    assert!(text.contains("Scorecard") && text.contains("http_error_ratio") && text.contains(">fail<"), "{text}");
    assert!(text.matches("<svg").count() >= 5, "a chart per metric on the release page: {text}");

    let png = s.dir.path().join("dashboard.png");
    let shot = crate::support::chromium(
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1100,700",
            "--hide-scrollbars",
            &format!("{url}/"),
        ],
        &s.dir.path().join("profile-3"),
    );
    assert!(shot.status.success(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "screenshot is {} bytes", bytes.len());
    if let Ok(keep) = std::env::var("DASHBOARD_SCREENSHOT_COPY") {
        std::fs::copy(&png, keep).unwrap();
    }

    // Approved from the CLI with no token: the agent is loopback-only and the caller is `local`.
    let id = pending["pending_approval"]["request"]["id"].as_str().unwrap().to_string();
    let (code, text) = answer(&url, "approve", &id, "");
    assert_eq!(code, 10, "rolled back and verified: {text}");
    let audit = s.audit();
    assert!(
        audit.lines().any(|l| l.contains("approval_resolved") && l.contains("human:api:local")),
        "the approval and who gave it are in `audit list`: {audit}"
    );
    s.agent.signal("TERM");
    let (code, _, err) = s.agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn without_tokens_the_agent_stays_on_loopback_and_a_bad_tokens_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.db").display().to_string();
    let run = |args: &[&str]| {
        Command::cargo_bin("backstop")
            .unwrap()
            .env_remove("BACKSTOP_CONFIG")
            .args(["--config", "fixtures/config/simulator.toml", "agent", "--ledger", &ledger])
            .args(args)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("beyond loopback"), "{out:?}");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[tokens]]\nidentity = \"a@example.com\"\nscopes = [\"read\", \"sudo\"]\nsha256 = \"00\"\n",
    )
    .unwrap();
    let out = run(&["--listen", "127.0.0.1:0", "--tokens", tokens.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens.toml") && err.contains("scopes") && err.contains("sudo"), "{err}");
    // The key that signs form tokens and Slack links: named, set, and long enough.
    for (value, expected) in [(None, "is not set"), (Some("short"), "at least 32 characters")] {
        let mut c = Command::cargo_bin("backstop").unwrap();
        c.env_remove("BACKSTOP_CONFIG").env("BACKSTOP_AGENT__SIGNING_KEY_ENV", "BACKSTOP_TEST_SIGNING_KEY");
        match value {
            Some(v) => c.env("BACKSTOP_TEST_SIGNING_KEY", v),
            None => c.env_remove("BACKSTOP_TEST_SIGNING_KEY"),
        };
        let out = c
            .args([
                "--config",
                "fixtures/config/simulator.toml",
                "agent",
                "--ledger",
                &ledger,
                "--listen",
                "127.0.0.1:0",
            ])
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("agent.signing_key_env") && err.contains(expected), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_turns_unready_while_a_running_release_stops_renewing_its_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let config = format!("[agent]\nlease_s = 1.0\n{}", command_release(&tmp.path().join("count")));
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let mut s = start(&config, policy, 10, &[("BACKSTOP_TEST_PAUSE_AT", "before_intent:4000")]);
    let (code, body) = get(&format!("{}/readyz", s.url), None).await;
    assert_eq!(code, 200, "{body}");
    // The loop stalls before its action (as a long GC pause would): no tick, no renewal.
    s.agent.wait_for("paused at before_intent", Duration::from_secs(60));
    // Unready once the lease (1 s) is past unrenewed, while the 4 s pause lasts: read until then.
    let asked = Instant::now();
    let (mut code, mut body) = get(&format!("{}/readyz", s.url), None).await;
    while code != 503 && asked.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        (code, body) = get(&format!("{}/readyz", s.url), None).await;
    }
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not renewing"), "{body}");
    // Once the release has ended, nothing needs renewing.
    wait_release(&s, "checkout", |v| v["state"] == "finished", Duration::from_secs(60)).await;
    let (code, body) = get(&format!("{}/readyz", s.url), None).await;
    assert_eq!(code, 200, "{body}");
}

/// A rollout engine moves to a new revision: a caller with only `read` gets
/// a pause for it and changes nothing; one with `register` starts a new
/// analysis of it (the earlier one aborted, both recorded under its
/// identity), and later answers are about the new revision only.
#[tokio::test(flavor = "multi_thread")]
async fn a_gate_asked_about_a_new_revision_starts_a_new_analysis_for_a_caller_who_may_register() {
    let config = "[[releases]]\nname = \"checkout\"\nservice = \"checkout\"\ntarget = \"sim/checkout\"\n\
                  candidate_revision = \"v42\"\nlast_known_good = \"v41\"\nexecutor = { kind = \"simulator\" }\n\
                  source = { kind = \"simulator\", seed = 3 }\n";
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let s = start(config, policy, 50, &[]);
    wait_release(&s, "checkout", |v| v["now_s"].as_u64().is_some_and(|t| t >= 60), Duration::from_secs(60)).await;
    let gate = |rev: &str| format!("{}/v1/gates/checkout?revision={rev}&contract=flagger-rollout", s.url);

    let (code, text) = get(&gate("v43"), Some(VIEWER)).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((code, v["verdict"].as_str(), v["revision"].as_str()), (200, Some("inconclusive"), Some("v43")), "{v}");
    assert!(v["summary"].as_str().unwrap().contains("register"), "{v}");
    assert_eq!(get_json(&s, "checkout").await["candidate_revision"], "v42", "a read-only caller changes nothing");

    let (code, text) = get(&gate("v 43"), Some(CI)).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((code, v["verdict"].as_str()), (200, Some("inconclusive")), "a malformed revision pauses: {v}");

    let (code, text) = get(&gate("v43"), Some(CI)).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((code, v["verdict"].as_str(), v["revision"].as_str()), (200, Some("running"), Some("v43")), "{v}");
    let v =
        wait_release(&s, "checkout", |v| v["now_s"].as_u64().is_some_and(|t| t >= 60), Duration::from_secs(60)).await;
    assert_eq!(v["candidate_revision"], "v43", "{v}");
    assert_eq!(v["registered_by"], "pipeline:ci:github:example/checkout");
    // The earlier loop has ended; nothing it does reaches the new revision's answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, text) = get(&format!("{}/v1/gates/checkout", s.url), Some(VIEWER)).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["revision"], "v43", "{v}");
    let audit = s.audit();
    let ci_lines =
        |what: &str| audit.lines().filter(|l| l.contains("ci:github:example/checkout") && l.contains(what)).count();
    assert_eq!(ci_lines("operator abort: superseded: the rollout engine moved to revision v43"), 1, "{audit}");
    assert_eq!(ci_lines("operator register: new analysis of checkout: revision v43"), 1, "{audit}");
    assert!(audit.lines().any(|l| l.contains("release_finished") && l.contains("aborted")), "{audit}");
    // Asked again about the same revision: no third analysis.
    let (_, text) = get(&gate("v43"), Some(CI)).await;
    assert!(text.contains("\"revision\":\"v43\""), "{text}");
    assert_eq!(s.audit().lines().filter(|l| l.contains(" operator ")).count(), 2);
}

pub(crate) async fn get_json(s: &Setup, name: &str) -> Value {
    let (code, text) = get(&format!("{}/v1/releases/{name}", s.url), Some(VIEWER)).await;
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// `backstop releases …` against a running agent, as an operator uses it.
fn releases(agent: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("BACKSTOP_AGENT_URL").env_remove("BACKSTOP_AGENT_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.arg("releases").args(args);
    if !agent.is_empty() {
        c.args(["--agent", agent]);
    }
    let out = c.timeout(Duration::from_secs(180)).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The operator CLI: list and get (the agent given as `host:port`, or by
/// `BACKSTOP_AGENT_URL` without a warning), hold and resume, a person's
/// promotion ruled by policy and carried out, `get --watch` following the
/// release to its end with its exit code; a rollback without a reason, a
/// malformed URL and an agent that is not there are clear failures.
#[test]
fn the_operator_cli_lists_holds_resumes_and_promotes_through_the_agent() {
    // RUST_LOG blank: the agent's own default level.
    let s = simulator_agent_with(300, &[("RUST_LOG", "")]);
    let hostport = s.url.trim_start_matches("http://").to_string();
    let (code, out, err) = releases(&hostport, &["list"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("NAME") && out.contains("search") && out.contains("payments"), "{out}");
    let (code, out, err) = releases("", &["get", "search"], &[("BACKSTOP_AGENT_URL", s.url.as_str())]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("search (") && out.contains("target simulator/search"), "{out}");
    assert!(!err.contains("ignoring BACKSTOP_AGENT_URL"), "{err}");

    // payments waits for an approval: the dashboard shows the exact steps approving runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, out, _) = releases(&s.url, &["get", "payments", "--format", "json"], &[]);
        if out.contains("\"pending_approval\": {") {
            break;
        }
        assert!(Instant::now() < deadline, "payments never asked: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();
    let (_, page) = crate::suite::watch::http_get(port, "/").unwrap();
    assert!(page.contains("Approving runs:<ol"), "{page}");
    let (code, out, err) = releases(&s.url, &["hold", "search", "--reason", "looking"], &[]);
    assert_eq!((code, out.trim()), (0, "search: hold: now held"), "{err}");
    let (code, out, err) = releases(&s.url, &["resume", "search"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("search: resume: now running") || out.contains("now starting"), "{out}");

    let (code, _, err) = releases(&s.url, &["rollback", "search"], &[]);
    assert_eq!(code, 2, "a rollback needs a reason");
    assert!(err.contains("needs {\"reason\""), "{err}");
    let (code, out, err) = releases(&s.url, &["promote", "search", "--reason", "verified by hand"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("approved; promote ran: promoted"), "{out}");
    let (code, out, _) = releases(&s.url, &["get", "search", "--watch"], &[]);
    assert_eq!(code, 0, "promoted: exit 0");
    assert!(out.contains("state finished"), "{out}");
    // The gate follows a person's promotion to its end: a rollout engine may promote too.
    let (code, body) =
        crate::suite::watch::http_get(port, "/v1/gates/search?contract=flagger-confirm-promotion").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"verdict\":\"pass\""), "{body}");
    let audit = s.audit();
    assert!(audit.lines().any(|l| l.contains("approval_resolved") && l.contains("local")), "{audit}");
    the_agent_logs_decisions_and_actions_at_info(&s.agent.stderr());

    let (code, _, err) = releases("not a url::", &["list"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--agent not a url::"), "{err}");
    let (code, _, err) = releases("127.0.0.1:1", &["list"], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the agent at http://127.0.0.1:1"), "{err}");
}

/// The agent logs decisions, actions and requests at `info` by default,
/// without colour codes when redirected, and not a tick that only goes on.
fn the_agent_logs_decisions_and_actions_at_info(log: &str) {
    for needle in ["Approval requested", "A person asked to act", "Action starting", "Action ended", "INFO"] {
        assert!(log.contains(needle), "{needle} not in the agent's log:\n{log}");
    }
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in a redirected log");
    assert!(!log.contains("Tick judged."), "a tick that only goes on is not logged at info");
}

/// A browser's form post to the agent at `url`: same-origin fetch metadata,
/// form-encoded, redirects not followed.
async fn form_post(url: &str, path: &str, fields: &[(&str, &str)], origin: &str) -> (u16, String, String) {
    form_post_as(url, path, None, fields, origin).await
}

/// [`form_post`] with a bearer `token` where the agent asks for one.
pub(crate) async fn form_post_as(
    url: &str,
    path: &str,
    token: Option<&str>,
    fields: &[(&str, &str)],
    origin: &str,
) -> (u16, String, String) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut r = client.post(format!("{url}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r
        .header("origin", origin)
        .header("sec-fetch-site", if origin == url { "same-origin" } else { "cross-site" })
        .header("accept", "text/html")
        .form(fields)
        .send()
        .await
        .unwrap();
    let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    (r.status().as_u16(), location, r.text().await.unwrap())
}

/// The CSRF token in a dashboard page's forms.
pub(crate) fn csrf_of(page: &str) -> String {
    let rest = page.split("name=\"csrf\" value=\"").nth(1).unwrap_or_else(|| panic!("no form token: {page}"));
    rest.split('"').next().unwrap().to_string()
}

/// Forged dashboard forms: no token, a changed one, another site's form — each 403.
async fn forged_forms_do_nothing(url: &str, token: &str) {
    let (code, _, body) = form_post(url, "/ui/releases/search", &[("do", "hold"), ("reason", "x")], url).await;
    assert_eq!(code, 403, "{body}");
    // The last hex digit changed (to one it is not).
    let last = if token.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    let fields = [("do", "hold"), ("reason", "x"), ("csrf", forged.as_str())];
    let (code, _, body) = form_post(url, "/ui/releases/search", &fields, url).await;
    assert!(code == 403 && body.contains("does not match"), "{code} {body}");
    let fields = [("do", "hold"), ("reason", "x"), ("csrf", token)];
    let (code, _, _) = form_post(url, "/ui/releases/search", &fields, "http://evil.example").await;
    assert_eq!(code, 403, "a cross-site form is refused even with a token");
}

/// Ended: its report from the ledger, as `advise` prints it, through the
/// API and the dashboard; a release never seen has none.
async fn the_ended_release_has_its_report(url: &str) {
    let (code, text) = get(&format!("{url}/v1/releases/payments/report"), None).await;
    assert_eq!(code, 200, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["format"], "backstop.report/v1");
    assert!(report["headline"].as_str().unwrap().to_lowercase().contains("roll"), "{report}");
    let (code, html) = get(&format!("{url}/releases/payments/report"), None).await;
    assert!(code == 200 && html.contains("http_error_ratio"), "{html}");
    let (_, page) = get(&format!("{url}/releases/payments"), None).await;
    assert!(page.contains("href=\"/releases/payments/report\""), "a finished release links its report: {page}");
    let (code, text) = get(&format!("{url}/v1/releases/nothing-here/report"), None).await;
    assert_eq!(code, 404, "{text}");
}

/// Dashboard buttons: a person holds, resumes and approves from the release
/// pages with form posts carrying a token signed for them; the ledger names
/// them with their reason. A form without the token, with a changed one, or
/// from another site does nothing; a rollback without a reason is refused
/// with a page saying so.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_buttons_act_through_policy_with_a_csrf_token_and_refuse_forged_forms() {
    let s = simulator_agent(300);
    let url = s.url.clone();
    let pending = wait_release(&s, "payments", |v| !v["pending_approval"].is_null(), Duration::from_secs(120)).await;
    let (code, page) = get(&format!("{url}/releases/search"), None).await;
    assert_eq!(code, 200);
    assert!(page.contains("action=\"/ui/releases/search\"") && page.contains("value=\"hold\""), "{page}");
    let token = csrf_of(&page);
    let r = reqwest::get(format!("{url}/releases/search")).await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("form-action 'self'") && csp.contains("frame-ancestors 'none'"), "no framing: {csp}");

    forged_forms_do_nothing(&url, &token).await;
    assert_ne!(state_of(&url, "search").await, "held", "nothing forged took effect");
    hold_and_resume_from_the_page(&url, &token).await;
    let id = pending["pending_approval"]["request"]["id"].as_str().unwrap().to_string();
    approve_from_the_page(&s, &token, &id).await;
    let (_, page) = get(&format!("{url}/releases/search"), None).await;
    assert!(page.contains("<td>hold</td><td>looking at the p99</td>"), "the hold and its reason: {page}");

    the_ended_release_has_its_report(&url).await;
}

/// A release's `state`, as the API gives it.
async fn state_of(url: &str, name: &str) -> String {
    let (_, v) = get(&format!("{url}/v1/releases/{name}"), None).await;
    serde_json::from_str::<Value>(&v).unwrap()["state"].as_str().unwrap().to_string()
}

/// The person's own form: search held, then resumed; back on the release
/// page each time; a rollback without a reason is refused.
async fn hold_and_resume_from_the_page(url: &str, token: &str) {
    let fields = [("do", "hold"), ("reason", "looking at the p99"), ("csrf", token)];
    let (code, location, _) = form_post(url, "/ui/releases/search", &fields, url).await;
    assert_eq!((code, location.as_str()), (303, "/releases/search"));
    assert_eq!(state_of(url, "search").await, "held");
    let (_, page) = get(&format!("{url}/releases/search"), None).await;
    assert!(page.contains("value=\"resume\"") && !page.contains("value=\"hold\""), "{page}");
    let fields = [("do", "rollback"), ("reason", ""), ("csrf", token)];
    let (code, _, body) = form_post(url, "/ui/releases/search", &fields, url).await;
    assert!(code == 422 && body.contains("a rollback needs"), "{code} {body}");
    let fields = [("do", "resume"), ("csrf", token)];
    let (code, _, _) = form_post(url, "/ui/releases/search", &fields, url).await;
    assert_eq!(code, 303);
    assert_ne!(state_of(url, "search").await, "held");
}

/// payments' approval request `id`, answered from its release page (the
/// list page, which refreshes, links there); the ledger and the page then
/// say who answered, when and why.
async fn approve_from_the_page(s: &Setup, token: &str, id: &str) {
    let url = s.url.as_str();
    let (_, list) = get(&format!("{url}/"), None).await;
    assert!(list.contains("Answer on <a href=\"/releases/payments\">") && !list.contains("<form"), "{list}");
    let (_, page) = get(&format!("{url}/releases/payments"), None).await;
    assert!(page.contains(&format!("action=\"/ui/approvals/{id}\"")) && page.contains("value=\"approve\""), "{page}");
    let fields = [("do", "approve"), ("reason", "error ratio x10, checked"), ("csrf", token)];
    let (code, location, body) = form_post(url, &format!("/ui/approvals/{id}"), &fields, url).await;
    assert_eq!((code, location.as_str()), (303, "/releases/payments"), "{body}");
    wait_release(s, "payments", |v| v["state"] == "finished", Duration::from_secs(60)).await;
    let audit = s.audit();
    assert!(
        audit.lines().any(|l| l.contains("approval_resolved") && l.contains("human:dashboard:local")),
        "the approval, who gave it and where: {audit}"
    );
    assert!(audit.contains("looking at the p99"), "the hold's reason is recorded: {audit}");
    let (_, page) = get(&format!("{url}/releases/payments"), None).await;
    assert!(!page.contains("<form"), "a finished release has no buttons: {page}");
    // The failing evidence with its numbers and the log text.
    assert!(page.contains("<h2>Log templates") && page.contains("canary /"), "{page}");
    // Who answered what, when and why, on the page itself.
    let people = page.split("<h2>People</h2>").nth(1).unwrap_or_else(|| panic!("no people section: {page}"));
    assert!(people.contains(&format!("asked {id} to roll back")), "{people}");
    assert!(
        people.contains("human:dashboard:local") && people.contains("error ratio x10, checked"),
        "the approver, with their reason: {people}"
    );
    assert!(people.contains(&format!("{id}: accepted: rollback runs")), "{people}");
}

/// Agents of two versions on one ledger could both act on one target (an
/// older agent named its leases by the target, this one by the resource its
/// executor changes). An agent or a `watch` refuses to start — exit 3, naming
/// the live agent of the other kind, nothing written — while one is heard from; an agent
/// starts once that one has been silent past a lease. And a backstop that
/// lacks a migration the ledger has (an older version) refuses to open it.
#[tokio::test(flavor = "multi_thread")]
async fn agents_of_two_versions_never_share_a_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let ledger = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(&path)).await.unwrap();
    let now_ms = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock);
    // An older agent's heartbeat: its version wrote no `sharing`.
    sqlx::query("INSERT INTO ledger_agents (instance, capacity, seen_ms) VALUES ('agent-before', NULL, $1)")
        .bind(now_ms)
        .execute(ledger.pool())
        .await
        .unwrap();
    let file = path.display().to_string();
    // Exit code and stderr of `backstop ARGS`.
    let run = |args: &[&str]| {
        let out = Command::cargo_bin("backstop")
            .unwrap()
            .env_remove("BACKSTOP_CONFIG")
            .args(args)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) =
        run(&["--config", "fixtures/config/simulator.toml", "agent", "--ledger", &file, "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("agent `agent-before`") && err.contains("another backstop version"), "{err}");
    // `watch` acts too, under the same leases.
    let (code, err) = run(&["--config", "fixtures/config/simulator.toml", "watch", "--ledger", &file]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("agent `agent-before`") && err.contains("another backstop version"), "{err}");
    assert!(ledger.list(None, 10).await.unwrap().is_empty(), "nothing recorded by the refused agent and watch");

    // Silent for an hour: gone, and this one starts.
    sqlx::query("UPDATE ledger_agents SET seen_ms = $1").bind(now_ms - 3_600_000).execute(ledger.pool()).await.unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--config", "fixtures/config/simulator.toml", "agent", "--ledger", &file, "--listen", &listen];
    let mut a = Agent::spawn(&args, &[]);
    a.wait_for_stdout("backstop agent on", Duration::from_secs(60));
    a.signal("TERM");
    let (code, _, err) = a.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");

    // A migration this version does not know: as an older backstop finds a newer one's ledger.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99, 'from a newer backstop', $1, $2, 0)",
    )
    .bind(true)
    .bind(vec![0u8; 48])
    .execute(ledger.pool())
    .await
    .unwrap();
    let (code, err) = run(&["audit", "verify", "--ledger", &file]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("set up by a newer backstop") && err.contains("migration 99"), "{err}");
}

/// The heartbeat row `instance` wrote, as its capacity (None: no row).
async fn heartbeat_of(ledger: &backstop::ledger::Ledger, instance: &str) -> Option<Option<u32>> {
    let now_ms = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock);
    ledger.roster(now_ms).await.unwrap().member(instance).map(|m| m.capacity)
}

/// Waits (at most a minute) until `instance` has heartbeated.
async fn wait_for_heartbeat(ledger: &backstop::ledger::Ledger, instance: &str) -> Option<u32> {
    let started = Instant::now();
    loop {
        if let Some(capacity) = heartbeat_of(ledger, instance).await {
            return capacity;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no heartbeat from {instance}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config for one simulated release under `agent.instance_id = "twin"` with
/// a lease of `lease_s` seconds, in `dir`: (the config's path, the ledger file's).
fn twin_config(dir: &Path, lease_s: u32) -> (String, String) {
    std::fs::write(dir.join("policy.toml"), backstop::policy::DEFAULT_POLICY).unwrap();
    let cfg = dir.join("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy = \"policy.toml\"\n[agent]\ninstance_id = \"twin\"\nlease_s = {lease_s}\n\n[[releases]]\n\
             name = \"checkout\"\nservice = \"checkout\"\ntarget = \"simulator/checkout\"\ncandidate_revision = \"v42\"\n\
             last_known_good = \"v41\"\nexecutor = {{ kind = \"simulator\" }}\nsource = {{ kind = \"simulator\", seed = 7 }}\n"
        ),
    )
    .unwrap();
    (cfg.to_str().unwrap().to_string(), dir.join("l.db").display().to_string())
}

/// Two processes under one `agent.instance_id` would both hold its leases (a
/// claim by the lease's own holder keeps its token), so both could act on one
/// target. A second agent, or a `watch`, started while one runs is refused —
/// exit 3, naming the id; an acting `watch` heartbeats too (capacity 0), so an
/// agent started beside it is refused the same, and it leaves the roster when
/// it stops; a restart after a kill, its old heartbeat still fresh, is not refused.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_under_one_instance_id_never_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file) = twin_config(dir.path(), 2);
    let ledger = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(Path::new(&file))).await.unwrap();
    let agent = |port: u16| {
        let listen = format!("127.0.0.1:{port}");
        Agent::spawn(&["--config", &cfg, "agent", "--ledger", &file, "--listen", &listen], &[])
    };
    let refused = |twin: Agent, what: &str| {
        let (code, _, err) = twin.finish(Duration::from_secs(60));
        assert_eq!(code, 3, "{what}: {err}");
        assert!(err.contains("another process is running as agent `twin`") && err.contains("instance_id"), "{err}");
    };

    let mut first = agent(free_port());
    first.wait_for_stdout("backstop agent on", Duration::from_secs(60));
    assert_eq!(wait_for_heartbeat(&ledger, "twin").await, None, "the agent's heartbeat, no capacity set");
    refused(Agent::watch(Path::new(&cfg), &file, 0, &[]), "watch beside the agent");
    refused(agent(free_port()), "a second agent");

    // Killed: its heartbeat is still fresh, but nothing moves it; the restart runs.
    first.kill9();
    let mut again = agent(free_port());
    again.wait_for_stdout("backstop agent on", Duration::from_secs(60));
    again.signal("TERM");
    let (code, _, err) = again.finish(Duration::from_secs(60));
    assert_eq!(code, 0, "the restart ran and stopped cleanly: {err}");
    assert!(err.contains("instance id's heartbeat is fresh"), "it waited for the old heartbeat to lapse: {err}");
    assert_eq!(heartbeat_of(&ledger, "twin").await, None, "a clean stop leaves the roster");

    // An acting `watch` is on the roster too, and an agent under its id is refused.
    let watch = Agent::watch(Path::new(&cfg), &file, 1_000, &[]);
    assert_eq!(wait_for_heartbeat(&ledger, "twin").await, Some(0), "a watch takes no releases from the agents");
    refused(agent(free_port()), "an agent beside a watch");
    watch.signal("TERM");
    let (_, _, err) = watch.finish(Duration::from_secs(60));
    assert!(!err.contains("another process is running"), "the watch was not the one refused: {err}");
    assert_eq!(heartbeat_of(&ledger, "twin").await, None, "a stopped watch leaves the roster");
}

/// A restart under a fixed instance id waits out its dead predecessor's
/// heartbeat, up to a lease (here ten minutes). A stop signal during that wait
/// ends it at once, with nothing run and nothing written: an agent stops
/// cleanly (exit 0), a `watch` as interrupted (exit 130).
#[tokio::test(flavor = "multi_thread")]
async fn a_stop_while_waiting_for_a_dead_predecessors_heartbeat_ends_the_wait_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, file) = twin_config(dir.path(), 600);
    let ledger = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(Path::new(&file))).await.unwrap();
    let agent = || {
        let listen = format!("127.0.0.1:{}", free_port());
        Agent::spawn(&["--config", &cfg, "agent", "--ledger", &file, "--listen", &listen], &[])
    };
    let mut first = agent();
    first.wait_for_stdout("backstop agent on", Duration::from_secs(60));
    first.kill9();
    let seen = ledger.member("twin").await.unwrap().expect("the killed agent's heartbeat").seen_ms;
    let last = ledger.checkpoint().await.unwrap().seq;
    let waiting = "instance id's heartbeat is fresh";

    let mut again = agent();
    again.wait_for(waiting, Duration::from_secs(60));
    again.signal("INT");
    let (code, out, err) = again.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "an agent stopped while waiting stops cleanly: {err}");
    assert!(out.contains("nothing ran") && !out.contains("backstop agent on"), "{out}");

    let mut watch = Agent::watch(Path::new(&cfg), &file, 0, &[]);
    watch.wait_for(waiting, Duration::from_secs(60));
    watch.signal("INT");
    let (code, _, err) = watch.finish(Duration::from_secs(30));
    assert_eq!(code, 130, "a watch stopped while waiting is interrupted: {err}");
    assert!(err.contains("nothing ran"), "{err}");
    let after = ledger.member("twin").await.unwrap().expect("the killed agent's heartbeat, left to lapse");
    assert_eq!(after.seen_ms, seen, "neither wrote a heartbeat under the id");
    assert_eq!(ledger.checkpoint().await.unwrap().seq, last, "neither wrote a record");
}
