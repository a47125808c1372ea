//! `watch`, `advise` and `serve` as a pipeline or an approver runs them: every exit code.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

/// `backstop --config FILE <cmd> --ledger ... <args>`: global flags first, then the command's.
fn run(dir: &tempfile::TempDir, config: &str, cmd: &str, args: &[&str]) -> assert_cmd::assert::Assert {
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("GITHUB_STEP_SUMMARY").env_remove("RUST_LOG");
    c.args(["--config", config, cmd, "--ledger", dir.path().join("l.db").to_str().unwrap(), "--pace-ms", "0"]);
    c.args(args).assert()
}

const SIM: &str = "fixtures/config/simulator.toml";
const REPLAY: &str = "fixtures/config/replay.toml";

#[test]
fn exit_10_when_rolled_back_and_verified() {
    let d = tempfile::tempdir().unwrap();
    run(&d, SIM, "watch", &["--release", "checkout"])
        .code(10)
        .stdout(predicate::str::contains("rolled back and the rollback verified"));
}

/// Paths in a configuration resolve against its own folder: the example
/// configs name their policy and scenarios as `../policy/…` and
/// `../scenarios/…`, and work from any working directory; the same release
/// from another folder has the same id (the ledger continues it).
#[test]
fn config_paths_resolve_against_the_config_file_from_any_working_directory() {
    let d = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    let ledger = d.path().join("l.db");
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.current_dir(elsewhere.path()).env_remove("BACKSTOP_CONFIG").env_remove("RUST_LOG");
    // simulator.toml's policy (../policy/simulator.toml) makes payments' rollback wait for a human.
    c.args(["--config", &format!("{repo}/{SIM}"), "watch", "--release", "payments", "--pace-ms", "0"])
        .args(["--ledger", ledger.to_str().unwrap()])
        .assert()
        .code(11)
        .stdout(predicate::str::contains("A human must approve: service autonomy is approve"));
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.current_dir(elsewhere.path()).env_remove("BACKSTOP_CONFIG").env_remove("RUST_LOG");
    c.args(["--config", &format!("{repo}/{REPLAY}"), "advise", "--release", "bad", "--pace-ms", "0"])
        .args(["--ledger", ledger.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("backstop: checkout v42 — **ROLLBACK**"));
    // From the repository, the same file: the same release, recorded already.
    run(&d, SIM, "watch", &["--release", "payments"]).code(11).stdout(predicate::str::contains("recorded earlier"));
}

/// A release that ended is final for its settings — run again, it prints
/// the recorded outcome and judges nothing — but its id covers what it is
/// judged from: with the source changed (a query fixed after a failed run,
/// here the simulator's seed) the same release and candidate are a new
/// analysis, and the run says on stderr that an earlier one exists.
#[test]
fn a_changed_source_is_a_new_analysis_that_names_the_earlier_run() {
    let d = tempfile::tempdir().unwrap();
    run(&d, SIM, "watch", &["--release", "checkout"]).code(10);
    run(&d, SIM, "watch", &["--release", "checkout"])
        .code(10)
        .stdout(predicate::str::contains("recorded earlier"))
        .stderr(predicate::str::contains("judged before").not());
    let changed = d.path().join("changed.toml");
    let text = crate::support::fixture_config("simulator.toml").replace("seed = 7,", "seed = 8,");
    std::fs::write(&changed, text).unwrap();
    run(&d, changed.to_str().unwrap(), "watch", &["--release", "checkout"])
        .code(10)
        .stdout(predicate::str::contains("recorded earlier").not())
        .stderr(predicate::str::contains("release checkout (v42) was judged before from other settings (checkout-v42-"))
        .stderr(predicate::str::contains("ended rolled_back"));
}

/// CI conventions: `watch --report FILE` writes the approver's report when
/// the run ends, `$GITHUB_OUTPUT` gets the decision, the exit code and the
/// report's path, and under GitHub Actions the ending is an annotation on
/// stderr (stdout stays the run's own text).
#[test]
fn github_outputs_an_annotation_and_the_report_file() {
    let d = tempfile::tempdir().unwrap();
    let outputs = d.path().join("github-output");
    let report = d.path().join("report.html");
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("GITHUB_STEP_SUMMARY").env_remove("RUST_LOG");
    c.env("GITHUB_ACTIONS", "true").env("GITHUB_OUTPUT", &outputs);
    c.args(["--config", SIM, "watch", "--ledger", d.path().join("l.db").to_str().unwrap(), "--pace-ms", "0"]);
    c.args(["--release", "checkout", "--report", report.to_str().unwrap()])
        .assert()
        .code(10)
        .stderr(predicate::str::contains("::error title=backstop%3A checkout::"))
        .stdout(predicate::str::contains("::error").not());
    let written = std::fs::read_to_string(&outputs).unwrap();
    for line in ["exit_code=10\n", "decision=rolled_back\n", &format!("report={}\n", report.display())] {
        assert!(written.contains(line), "{line:?} in {written}");
    }
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("<html") && html.contains("checkout"), "{html}");
    // Outside GitHub Actions: no annotation.
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("GITHUB_ACTIONS").env_remove("GITHUB_OUTPUT");
    c.args(["--config", SIM, "watch", "--ledger", d.path().join("l2.db").to_str().unwrap(), "--pace-ms", "0"]);
    c.args(["--release", "search"]).assert().code(0).stderr(predicate::str::contains("::notice").not());
}

#[test]
fn exit_0_when_promoted() {
    let d = tempfile::tempdir().unwrap();
    run(&d, SIM, "watch", &["--release", "search"]).code(0).stdout(predicate::str::contains("promoted"));
    // Replay with no executor: the pipeline carries out the promotion.
    run(&d, REPLAY, "watch", &["--release", "good"]).code(0);
}

#[test]
fn exit_11_when_a_rollback_cannot_be_executed() {
    let d = tempfile::tempdir().unwrap();
    run(&d, REPLAY, "watch", &["--release", "bad"])
        .code(11)
        .stdout(predicate::str::contains("would rollback v42; nothing was executed"));
}

#[test]
fn exit_12_when_held_for_approval() {
    let d = tempfile::tempdir().unwrap();
    let policy = d.path().join("approve.toml");
    std::fs::write(
        &policy,
        "version = 1\nautonomy = \"approve\"\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n",
    )
    .unwrap();
    let report = d.path().join("approve.md");
    let args = ["--release", "search", "--policy", policy.to_str().unwrap(), "--report", report.to_str().unwrap()];
    run(&d, SIM, "watch", &args).code(12).stdout(predicate::str::contains("A human must approve"));
    // The approver's report holds what approving would run, step by step.
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("### The exact action") && md.contains("1. "), "{md}");
}

#[test]
fn exit_2_on_usage_and_configuration_errors() {
    let d = tempfile::tempdir().unwrap();
    run(&d, SIM, "watch", &["--release", "nope"]).code(2).stderr(predicate::str::contains("no release named `nope`"));
    let empty = d.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    run(&d, empty.to_str().unwrap(), "watch", &[]).code(2).stderr(predicate::str::contains("no releases configured"));
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "[[releases]]\nname = \"x\"\nservice = \"s\"\ntarget = \"t\"\ncandidate_revision = \"v2\"\nexecutor = { kind = \"simulator\" }\nsource = { kind = \"scenario\", path = \"x.json\" }\n").unwrap();
    run(&d, bad.to_str().unwrap(), "watch", &[]).code(2).stderr(predicate::str::contains("releases[0].executor"));
}

#[test]
fn exit_3_when_the_ledger_backend_fails() {
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG");
    c.args(["--config", SIM, "watch", "--ledger", "/proc/backstop-cannot-write-here/l.db", "--pace-ms", "0"]);
    c.assert().code(3).stderr(predicate::str::contains("cannot open ledger"));
}

#[test]
fn exit_130_on_sigint_with_the_ledger_consistent() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("l.db");
    // Interrupted mid-release, once its first tick is out (its signal handlers are set before
    // that), however long a loaded machine takes to start it.
    let args = ["--config", SIM, "watch", "--release", "search", "--ledger", db.to_str().unwrap(), "--pace-ms", "50"];
    let mut child = crate::support::agents::Agent::spawn(&args, &[]);
    child.wait_for_stdout("t=", Duration::from_secs(60));
    child.signal("INT");
    let (code, _, err) = child.finish(Duration::from_secs(60));
    assert_eq!(code, 130, "{err}");
    let mut verify = Command::cargo_bin("backstop").unwrap();
    verify.args(["audit", "verify", "--ledger", db.to_str().unwrap()]).assert().success();
    let mut list = Command::cargo_bin("backstop").unwrap();
    list.args(["audit", "list", "--ledger", db.to_str().unwrap(), "--limit", "1"])
        .assert()
        .stdout(predicate::str::contains("status=interrupted"));
}

#[test]
fn json_result_and_github_step_summary() {
    let d = tempfile::tempdir().unwrap();
    let summary = d.path().join("summary.md");
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env("GITHUB_STEP_SUMMARY", &summary);
    c.args(["--config", SIM, "watch", "--release", "checkout", "--release", "search"]);
    c.args(["--ledger", d.path().join("l.db").to_str().unwrap()]);
    let out = c.args(["--pace-ms", "0", "--format", "json"]).assert().code(10).get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["exit_code"], 10);
    let releases = v["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 2);
    assert_eq!(releases[0]["report"]["recommendation"], "rollback");
    assert_eq!(releases[1]["exit_code"], 0);
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("## backstop: checkout v42 — **ROLLBACK**") && md.contains("## backstop: search v7"), "{md}");
}

#[test]
fn advise_never_acts_and_reports_the_exact_action() {
    let d = tempfile::tempdir().unwrap();
    run(&d, SIM, "advise", &["--release", "checkout"]).success().stdout(
        predicate::str::contains("mode advise (dry run: nothing executes)")
            .and(predicate::str::contains("### The exact action"))
            .and(predicate::str::contains("1. set canary weight of simulator/checkout to 0%"))
            .and(predicate::str::contains("### What would change this recommendation"))
            .and(predicate::str::contains("http_error_ratio: the canary's harmful shift"))
            // A ratio's shift and tolerance in percentage points, as in the HTML scorecard.
            .and(predicate::str::contains(" pp | 0.50 pp |")),
    );
    let out =
        run(&d, REPLAY, "advise", &["--release", "good", "--format", "json"]).success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["recommendation"], "promote");
    assert_eq!(v["acting"], false);
    assert!(v["would_change"][0].as_str().unwrap().contains("closest to failing"));
    // Nothing was executed: the ledger holds no intent.
    let mut list = Command::cargo_bin("backstop").unwrap();
    list.args(["audit", "list", "--ledger", d.path().join("l.db").to_str().unwrap(), "--limit", "1000"])
        .assert()
        .stdout(predicate::str::contains(" intent ").not());
}

pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

#[test]
fn serve_answers_the_gate_from_the_live_judgement_and_a_new_revision_starts_a_new_analysis() {
    let d = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bin = assert_cmd::cargo::cargo_bin("backstop");
    let mut child = std::process::Command::new(bin)
        .args(["--config", REPLAY, "serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--ledger", d.path().join("l.db").to_str().unwrap(), "--pace-ms", "2"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = http_get(port, "/v1/gates/bad?contract=flagger-rollout");
        if last.as_ref().is_some_and(|(code, _)| *code == 412) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let argo = http_get(port, "/v1/gates/bad?revision=v42");
    // The engine moves on to v43: a new analysis starts and answers for it.
    let moved = http_get(port, "/v1/gates/bad?revision=v43&contract=flagger-rollout");
    std::thread::sleep(Duration::from_millis(300));
    let later = http_get(port, "/v1/gates/bad");
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let (code, body) = last.expect("gate never answered");
    assert_eq!(code, 412, "{body}");
    let (code, body) = argo.unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&v["verdict"], &v["revision"]), (&"fail".into(), &"v42".into()), "{v}");
    assert_eq!(v["failing"][0], "http_error_ratio");
    let (code, body) = moved.unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, &v["verdict"], &v["revision"]), (200, &"running".into(), &"v43".into()), "{v}");
    let v: serde_json::Value = serde_json::from_str(&later.unwrap().1).unwrap();
    assert_eq!(v["revision"], "v43", "the first analysis no longer answers: {v}");
}

fn command_release(marker: &str) -> String {
    crate::support::release_toml(
        "helm/checkout",
        r#"{ kind = "scenario", path = "fixtures/scenarios/holdout/holdout-bad-error-spike-strong-traffic-000.json" }"#,
        Some(&format!(
            r#"{{ kind = "command", rollback = ["cp", "/dev/null", "{marker}-{{to_revision}}"], verify = ["test", "-e", "{marker}-{{to_revision}}"], env_allowlist = ["PATH"] }}"#
        )),
    )
}

#[test]
fn a_command_executor_rolls_back_a_replayed_release_and_verifies_it() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("rolled-back-to");
    let cfg = d.path().join("cmd.toml");
    let m = marker.to_str().unwrap();
    std::fs::write(&cfg, command_release(m)).unwrap();
    run(&d, cfg.to_str().unwrap(), "watch", &[])
        .code(10)
        .stdout(predicate::str::contains("rolled back and the rollback verified"));
    assert!(d.path().join("rolled-back-to-v41").exists());
    let mut list = Command::cargo_bin("backstop").unwrap();
    list.args(["audit", "list", "--ledger", d.path().join("l.db").to_str().unwrap(), "--limit", "3"])
        .assert()
        .stdout(predicate::str::contains("verified (plan"));
}

fn ledger_lines(ledger: &std::path::Path) -> usize {
    let out = Command::cargo_bin("backstop")
        .unwrap()
        .args(["audit", "list", "--ledger", ledger.to_str().unwrap(), "--limit", "100000"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn advise_unpaced(config: &str, ledger: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", config, "advise", "--ledger", ledger.to_str().unwrap()])
        .args(args)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap()
}

/// `advise` on a release `watch` already ran reports it from the ledger:
/// the same id and decision, nothing judged again (the ledger gains no
/// record), its charts from its data read again (the digest its last tick
/// recorded); a release never run is judged, a recorded scenario unpaced
/// (no --pace-ms: the replay example's seven minutes of ticks otherwise),
/// with progress on stderr.
#[test]
fn advise_reports_a_release_the_ledger_holds_without_judging_it_again() {
    let d = tempfile::tempdir().unwrap();
    let ledger = d.path().join("l.db");
    run(&d, REPLAY, "watch", &["--release", "bad"]).code(11);
    let before = ledger_lines(&ledger);
    let out = advise_unpaced(REPLAY, &ledger, &["--release", "bad", "--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["recommendation"], "rollback", "{v}");
    assert!(!v["release_id"].as_str().unwrap().contains("/advise/"), "the watched release's id: {v}");
    assert!(v["headline"].as_str().unwrap().contains("judged nothing again"), "{v}");
    assert_eq!(v["charts"]["data"], "read_again", "{v}");
    assert!(v["judge"]["findings"].as_array().is_some_and(|f| !f.is_empty()), "the last tick's findings: {v}");
    assert!(err.contains("reported from the ledger"), "{err}");
    assert_eq!(ledger_lines(&ledger), before, "nothing judged or recorded again");
    let out = advise_unpaced(REPLAY, &ledger, &["--release", "bad", "--format", "html"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"), "charts drawn from the data read again");

    // Never run with this ledger: judged now, unpaced, progress on stderr.
    let out = advise_unpaced(REPLAY, &ledger, &["--release", "good", "--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("advise: good: t=") && err.contains("promote"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["release_id"].as_str().unwrap().contains("/advise/"), "{v}");
    assert_eq!(v["charts"]["data"], "judged", "{v}");
}

/// A release whose `watch` was killed mid-window (SIGKILL: no end recorded)
/// is "being judged now" to `advise` — exit 2 with what is recorded and the
/// way out — and `--rejudge` starts a separate analysis that ends.
#[test]
fn advise_on_a_release_in_flight_says_so_and_rejudge_starts_a_separate_analysis() {
    let d = tempfile::tempdir().unwrap();
    let ledger = d.path().join("l.db");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", SIM, "watch", "--release", "search", "--ledger", ledger.to_str().unwrap()])
        .args(["--pace-ms", "200"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ledger_lines(&ledger) < 6 {
        assert!(std::time::Instant::now() < deadline, "watch recorded no ticks");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = advise_unpaced(SIM, &ledger, &["--release", "search"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is being judged now") && err.contains("--rejudge"), "{err}");
    let out = advise_unpaced(SIM, &ledger, &["--release", "search", "--rejudge", "--pace-ms", "0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mode advise (dry run: nothing executes)"));
}

/// The JSON Schema `backstop schema WHAT` prints, compiled.
fn schema_of(what: &str) -> jsonschema::Validator {
    let out = Command::cargo_bin("backstop").unwrap().args(["schema", what]).output().unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, doc: &serde_json::Value, what: &str) {
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} breaks its published schema: {errors:#?}");
}

/// The machine-readable outputs follow the schemas `backstop schema report`
/// and `backstop schema watch` publish, each with its version: `watch
/// --format json` (a rollback, a promotion), its `--report FILE.json`, and
/// `advise --format json` on a release judged now and on one read from the
/// ledger; a document that breaks the schema is caught.
#[test]
fn json_outputs_follow_their_published_versioned_schemas() {
    let (report, watch) = (schema_of("report"), schema_of("watch"));
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("report.json");
    let out = run(&d, SIM, "watch", &["--release", "checkout", "--release", "search", "--format", "json"])
        .code(10)
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["format"], "backstop.watch/v1");
    assert_valid(&watch, &v, "watch --format json");
    run(&d, REPLAY, "watch", &["--release", "bad", "--report", file.to_str().unwrap()]).code(11);
    let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written["format"], "backstop.report/v1");
    assert_valid(&report, &written, "watch --report FILE.json");
    for release in ["bad", "good"] {
        let out = run(&d, REPLAY, "advise", &["--release", release, "--format", "json"])
            .success()
            .get_output()
            .stdout
            .clone();
        assert_valid(&report, &serde_json::from_slice(&out).unwrap(), "advise --format json");
    }
    let mut broken = written.clone();
    broken["format"] = "backstop.report/v0".into();
    assert!(!report.is_valid(&broken), "a wrong version is caught");
    broken = written;
    broken["status"] = serde_json::json!({ "status": "exploded" });
    assert!(!report.is_valid(&broken), "an unknown status is caught");
}

/// A simulated healthy release ramped 5 → 25 → 50 → promotion, each step
/// judged `min_judged_s` (the simulator's window is 1,800 s).
fn ramped_release(dir: &tempfile::TempDir, min_judged_s: u64) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        "policy = \"{repo}/fixtures/policy/simulator.toml\"\n[[releases]]\nname = \"search\"\nservice = \"search\"\n\
         target = \"simulator/search\"\ncandidate_revision = \"v7\"\nlast_known_good = \"v6\"\n\
         executor = {{ kind = \"simulator\" }}\nsource = {{ kind = \"simulator\", service = \"search\", seed = 3 }}\n\
         ramp = {{ steps = [5, 25, 50, 100], min_judged_s = {min_judged_s} }}\n"
    );
    let path = dir.path().join("ramped.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The report's `ramp` of `backstop <cmd>` (JSON on stdout, or the file `--report` wrote).
fn ramp_of(json: &[u8]) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_slice(json).unwrap();
    report["ramp"].clone()
}

/// An approver sees the ramp the agent would walk: `advise` raises nothing
/// but reports the raises acting would make, and they are the raises `watch`
/// makes on the same release; `advise` on the release `watch` ran reports
/// those from the ledger.
#[test]
fn advise_shows_the_ramp_acting_would_walk_and_it_is_the_one_watch_walks() {
    let (advised, acted) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = ramped_release(&advised, 300);
    let out = run(&advised, &cfg, "advise", &["--format", "json"]).code(0).get_output().stdout.clone();
    let rehearsed = ramp_of(&out);
    assert_eq!(rehearsed["rehearsed"], true, "{rehearsed}");
    assert_eq!(crate::support::raise_weights(&rehearsed), [5, 25, 50], "{rehearsed}");
    assert_eq!(rehearsed["unfinished"], false);

    let report = acted.path().join("r.json");
    run(&acted, &cfg, "watch", &["--report", report.to_str().unwrap()]).code(0);
    let walked = ramp_of(&std::fs::read(&report).unwrap());
    assert_eq!((walked["rehearsed"].clone(), walked["raises"].clone()), (false.into(), rehearsed["raises"].clone()));

    let out = run(&acted, &cfg, "advise", &["--format", "json"]).code(0).get_output().stdout.clone();
    let recorded = ramp_of(&out);
    assert_eq!((recorded["rehearsed"].clone(), recorded["raises"].clone()), (false.into(), walked["raises"].clone()));
}

/// When the window passes before the ramp's last step was judged its time,
/// `watch` holds the promotion for a person (exit 12), and `advise` says
/// promote but that acting, it would have waited.
#[test]
fn advise_says_when_acting_would_hold_a_promotion_for_an_unfinished_ramp() {
    let (advised, acted) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // 3 × 600 s fits the 1,800-s window, but the first raise comes at the first tick (10 s).
    let cfg = ramped_release(&advised, 600);
    run(&acted, &cfg, "watch", &[]).code(12).stdout(predicate::str::contains("not yet judged its time"));
    let out = run(&advised, &cfg, "advise", &[]).code(0).get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("**PROMOTE**") && text.contains("would have waited for a person"), "{text}");
}
