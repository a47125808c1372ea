//! A release across a fleet in waves, with real processes: wave 1 (a real
//! HAProxy backend and a simulated target) promotes and bakes, wave 2 (a
//! second HAProxy backend) fails and is rolled back, wave 3 never starts, and
//! policy rolls wave 1's targets back — each exactly once, though the
//! agent is SIGKILLed after wave 2's rollback ran and again after a revert ran.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::agents::Agent;
use crate::support::haproxy::Haproxy;

use crate::support::{BAD_SCENARIO as BAD, GOOD_SCENARIO as GOOD};

fn haproxy_release(name: &str, target: &str, h: &Haproxy, data: &str) -> String {
    format!(
        "[[releases]]\nname = \"{name}\"\nservice = \"checkout\"\ntarget = \"{target}\"\ncandidate_revision = \"v42\"\n\
         last_known_good = \"v41\"\nsource = {{ kind = \"scenario\", path = \"{data}\" }}\n\
         executor = {{ kind = \"haproxy\", socket = \"{}\", backend = \"be\", canary_server = \"canary\", stable_server = \"stable\" }}\n\n",
        h.unix_socket.display()
    )
}

fn simulated_release(name: &str, target: &str, seed: u32) -> String {
    format!(
        "[[releases]]\nname = \"{name}\"\nservice = \"checkout\"\ntarget = \"{target}\"\ncandidate_revision = \"v42\"\n\
         last_known_good = \"v41\"\nsource = {{ kind = \"simulator\", service = \"search\", seed = {seed} }}\n\
         executor = {{ kind = \"simulator\" }}\n\n"
    )
}

/// Every intent in the ledger: (release id, kind, target, at_ms).
async fn intents(ledger: &str) -> Vec<(String, String, String, i64)> {
    let l = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(Path::new(ledger))).await.unwrap();
    let mut out = vec![];
    for r in l.list(None, 100_000).await.unwrap().iter().filter(|r| r.kind == "intent") {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let plan = &body["plan"];
        let (kind, target) = (plan["kind"].as_str().unwrap(), plan["target"].as_str().unwrap());
        out.push((r.release_id.clone(), kind.to_string(), target.to_string(), r.at_ms));
    }
    out
}

/// Waits (at most `within`) until every `kind` intent on `target` has its
/// outcome in the ledger. A simulated target lives in its process's memory, so
/// a kill between its intent and outcome leaves nothing to reconcile against
/// (held for a human, rightly); a test that kills on purpose waits past it.
async fn wait_settled(ledger: &str, kind: &str, target: &str, within: Duration) {
    let l = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(Path::new(ledger))).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let records = l.list(None, 100_000).await.unwrap();
        let bodies = |k: &str| -> Vec<Value> {
            records.iter().filter(|r| r.kind == k).map(|r| serde_json::from_str(&r.body).unwrap()).collect()
        };
        let settled: Vec<Value> = bodies("outcome").iter().map(|b| b["plan_id"].clone()).collect();
        let plans: Vec<Value> = bodies("intent")
            .into_iter()
            .filter(|b| b["plan"]["kind"] == kind && b["plan"]["target"] == target)
            .map(|b| b["plan"]["id"].clone())
            .collect();
        if !plans.is_empty() && plans.iter().all(|p| settled.contains(p)) {
            return;
        }
        assert!(started.elapsed() < within, "{kind} on {target} not settled within {within:?}: intents {plans:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(all: &[(String, String, String, i64)], kind: &str, target: &str) -> usize {
    all.iter().filter(|(_, k, t, _)| k == kind && t == target).count()
}

/// The fleet's intents: each promotion and rollback exactly once (none on
/// wave 3, no promotion of the failed wave), wave 2 only after wave 1
/// promoted and baked, and each revert a release of its own.
fn each_action_once_in_wave_order(all: &[(String, String, String, i64)]) {
    for (kind, target, n) in [
        ("promote", "haproxy/eu-1", 1),
        ("promote", "simulator/eu-2", 1),
        ("rollback", "haproxy/us-1", 1),
        ("rollback", "haproxy/eu-1", 1),
        ("rollback", "simulator/eu-2", 1),
        ("promote", "haproxy/us-1", 0),
    ] {
        assert_eq!(count(all, kind, target), n, "{kind} {target} exactly {n} time(s): {all:?}");
    }
    assert!(!all.iter().any(|(_, _, t, _)| t == "simulator/ap-1"), "wave 3 never acted: {all:?}");
    // Wave 2 started only after wave 1 promoted and baked for its second.
    let promoted_at = all.iter().filter(|(_, k, _, _)| k == "promote").map(|i| i.3).max().unwrap();
    let wave2_at = all.iter().find(|(_, k, t, _)| k == "rollback" && t == "haproxy/us-1").unwrap().3;
    assert!(wave2_at >= promoted_at + 1_000, "bake: promoted at {promoted_at}, wave 2 acted at {wave2_at}");
    let reverts = all.iter().filter(|(id, _, _, _)| id.ends_with("/revert")).count();
    assert_eq!(reverts, 2, "each revert is a release of its own: {all:?}");
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_second_wave_stops_the_third_and_rolls_the_first_back_exactly_once_through_two_kills() {
    let d = tempfile::tempdir().unwrap();
    let (eu, us) = (Haproxy::start(), Haproxy::start());
    std::fs::write(d.path().join("policy.toml"), backstop::policy::DEFAULT_POLICY).unwrap();
    let text = format!(
        "policy = \"policy.toml\"\n\n{}{}{}{}[[fleets]]\nname = \"checkout-v42\"\n\
         waves = [[\"haproxy/eu-1\", \"simulator/eu-2\"], [\"haproxy/us-1\"], [\"simulator/ap-1\"]]\nbake_s = [1, 0, 0]\n",
        haproxy_release("checkout-eu-1", "haproxy/eu-1", &eu, GOOD),
        simulated_release("checkout-eu-2", "simulator/eu-2", 3),
        haproxy_release("checkout-us-1", "haproxy/us-1", &us, BAD),
        simulated_release("checkout-ap-1", "simulator/ap-1", 5),
    );
    let cfg = d.path().join("backstop.toml");
    std::fs::write(&cfg, text).unwrap();
    let ledger = d.path().join("l.db").to_str().unwrap().to_string();

    // Kill 1: wave 2's rollback ran on HAProxy, its outcome not yet recorded.
    let mut a = Agent::watch(&cfg, &ledger, 0, &[("BACKSTOP_TEST_PAUSE_AT", "after_execute@haproxy/us-1")]);
    a.wait_for("paused at after_execute", Duration::from_secs(120));
    a.kill9();
    assert_eq!(eu.weight("stable"), 0, "wave 1 promoted on eu-1 before wave 2 started");
    assert_eq!(us.weight("canary"), 0, "wave 2's rollback ran before the kill");

    // Kill 2: the restart reconciles wave 2 and starts reverting wave 1; killed after eu-1's revert ran.
    let mut a = Agent::watch(&cfg, &ledger, 0, &[("BACKSTOP_TEST_PAUSE_AT", "after_execute@haproxy/eu-1")]);
    a.wait_for("paused at after_execute", Duration::from_secs(120));
    // eu-2's revert runs beside eu-1's; its simulated target dies with the process.
    wait_settled(&ledger, "rollback", "simulator/eu-2", Duration::from_secs(60)).await;
    a.kill9();
    assert_eq!(eu.weight("canary"), 0, "eu-1's revert ran before the kill");

    // The third run finishes from the ledger: everything reconciled, nothing run twice.
    let (code, out, err) = Agent::watch(&cfg, &ledger, 0, &[]).finish(Duration::from_secs(120));
    assert_eq!(code, 10, "the fleet stopped at a rollback:\n{out}\n{err}");
    assert!(out.contains("fleet checkout-v42: stopped: wave 2 of the fleet failed"), "{out}");
    assert!(out.contains("wave 3 checkout-ap-1 (simulator/ap-1): not_started"), "{out}");
    assert!(out.contains("wave 1 checkout-eu-1 (haproxy/eu-1): promoted; revert rolled_back"), "{out}");
    assert!(out.contains("wave 1 checkout-eu-2 (simulator/eu-2): promoted; revert rolled_back"), "{out}");
    assert_eq!((eu.weight("canary"), us.weight("canary")), (0, 0));
    assert!(eu.weight("stable") > 0 && us.weight("stable") > 0, "both backends back on v41");

    let all = intents(&ledger).await;
    each_action_once_in_wave_order(&all);

    // Run again: the ledger already holds the whole fleet; nothing runs.
    let (code, out, _) = Agent::watch(&cfg, &ledger, 0, &[]).finish(Duration::from_secs(60));
    assert_eq!(code, 10, "{out}");
    assert_eq!(intents(&ledger).await.len(), all.len(), "a finished fleet acts no more");
    let verify = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .args(["audit", "verify", "--ledger", &ledger])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
fn a_fleet_that_names_an_unknown_target_or_mixes_revisions_is_refused_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let base = format!("{}{}", simulated_release("a", "simulator/a", 1), simulated_release("b", "simulator/b", 2));
    for (fleet, field, says) in [
        ("waves = [[\"simulator/a\"], [\"simulator/zz\"]]", "fleets[0].waves[1][0]", "no release has target"),
        ("waves = [[\"simulator/a\", \"simulator/a\"]]", "fleets[0].waves[0][1]", "repeats"),
        ("waves = [[\"simulator/a\"], [\"simulator/b\"]]\nbake_s = [1]", "fleets[0].bake_s", "one bake per wave"),
        ("waves = []", "fleets[0].waves", "between 1 and"),
    ] {
        let path = d.path().join("c.toml");
        std::fs::write(&path, format!("{base}[[fleets]]\nname = \"f\"\n{fleet}\n")).unwrap();
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
            .env_remove("BACKSTOP_CONFIG")
            .args(["--config", path.to_str().unwrap(), "config", "check"])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(2), "{fleet}: {text}");
        assert!(text.contains(field) && text.contains(says), "{fleet}: {text}");
    }
    let mixed = base.replacen("candidate_revision = \"v42\"", "candidate_revision = \"v43\"", 1);
    let path = d.path().join("m.toml");
    std::fs::write(&path, format!("{mixed}[[fleets]]\nname = \"f\"\nwaves = [[\"simulator/a\"], [\"simulator/b\"]]\n"))
        .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", path.to_str().unwrap(), "watch", "--release", "b"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("fleets[0].waves[1][0]") && text.contains("revision `v43`"), "{text}");
    let path = d.path().join("ok.toml");
    std::fs::write(&path, format!("{base}[[fleets]]\nname = \"f\"\nwaves = [[\"simulator/a\"], [\"simulator/b\"]]\n"))
        .unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .args(["--config", path.to_str().unwrap(), "watch", "--release", "b", "--ledger"])
        .arg(d.path().join("l.db"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("release `b` is in fleet `f`") && text.contains("--release f"), "{text}");
}

/// The agent runs `[[fleets]]` too: a member starts only when its wave
/// does (registered by the fleet), and `GET /v1/fleets` shows the fleet as
/// one release with its waves, the failed one, and each revert.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_runs_a_fleet_wave_by_wave_and_shows_it_as_one_release() {
    use crate::suite::agent::{VIEWER, get, start};
    let failing = "[[releases]]\nname = \"b\"\nservice = \"checkout\"\ntarget = \"simulator/b\"\ncandidate_revision = \"v42\"\n\
                   last_known_good = \"v41\"\nexecutor = { kind = \"simulator\" }\n\
                   source = { kind = \"simulator\", seed = 7, fault = { kind = \"error_spike\", onset_s = 300, strength = 0.05 } }\n\n";
    let config = format!(
        "{}{failing}{}[[fleets]]\nname = \"checkout-v42\"\nwaves = [[\"simulator/a\"], [\"simulator/b\"], [\"simulator/c\"]]\n\
         bake_s = [1, 0, 0]\n",
        simulated_release("a", "simulator/a", 3),
        simulated_release("c", "simulator/c", 5),
    );
    let fake = crate::support::slack::FakeSlack::start(&["C0RELEASE"]).await;
    let config = format!(
        "{config}\n[slack]\nmode = \"socket\"\napi_url = \"{}\"\nchannel = \"C0RELEASE\"\npost_interval_ms = 20\n",
        fake.api_url
    );
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let slack_env = [("SLACK_BOT_TOKEN", crate::support::slack::BOT), ("SLACK_APP_TOKEN", crate::support::slack::APP)];
    let s = start(&config, policy, 2, &slack_env);
    let started = std::time::Instant::now();
    let fleet = loop {
        let (code, text) = get(&format!("{}/v1/fleets", s.url), Some(VIEWER)).await;
        assert_eq!(code, 200, "{text}");
        let all: Value = serde_json::from_str(&text).unwrap();
        if all[0]["outcome"] == "stopped" {
            break all[0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the fleet did not stop: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(fleet["name"], "checkout-v42");
    assert_eq!(fleet["wave"], 2, "{fleet}");
    let members = fleet["members"].as_array().unwrap();
    let by = |n: &str| members.iter().find(|m| m["name"] == n).unwrap().clone();
    assert_eq!((by("a")["status"].as_str(), by("a")["revert"].as_str()), (Some("promoted"), Some("rolled_back")));
    assert_eq!(by("b")["status"], "rolled_back", "{fleet}");
    assert_eq!((by("c")["status"].as_str(), by("c")["wave"].as_u64()), (Some("not_started"), Some(3)));
    let (code, _) = get(&format!("{}/v1/releases/c", s.url), Some(VIEWER)).await;
    assert_eq!(code, 404, "wave 3 never started, so the agent never ran its release");
    let (code, text) = get(&format!("{}/v1/releases/b", s.url), Some(VIEWER)).await;
    assert_eq!(code, 200, "{text}");
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["registered_by"], "fleet checkout-v42", "{b}");
    let (code, page) = get(&format!("{}/", s.url), Some(VIEWER)).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<h2>Fleets</h2>") && page.contains("checkout-v42 — stopped at wave 2"), "{page}");
    assert!(page.contains("<td>3</td><td>c</td><td>simulator/c</td><td>not_started</td>"), "{page}");
    fleet_gates_answer_for_the_fleet(&s.url).await;
    slack_shows_the_fleet_as_one_message_with_its_members_in_its_thread(&fake).await;
}

/// The gate answers for the fleet as one thing, and for each member as the fleet left it.
async fn fleet_gates_answer_for_the_fleet(url: &str) {
    use crate::suite::agent::{VIEWER, get};
    let gate = |name: &str, contract: &str| format!("{url}/v1/gates/{name}?contract={contract}");
    let (code, text) = get(&gate("checkout-v42", "argo"), Some(VIEWER)).await;
    let whole: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((code, whole["verdict"].as_str()), (200, Some("fail")), "{text}");
    assert_eq!(whole["fleet"]["wave"], 2, "{text}");
    assert!(whole["summary"].as_str().unwrap().contains("stopped at wave 2"), "{text}");
    // Wave 1 promoted, and the fleet reverted it: the engine must roll back there too.
    let (code, text) = get(&gate("a", "flagger-rollout"), Some(VIEWER)).await;
    assert_eq!(code, 412, "a reverted member is a failed check for Flagger: {text}");
    assert!(text.contains("promotion was reverted"), "{text}");
    // Wave 3 never started: never a pass or a running, whoever asks.
    let (code, text) = get(&gate("c", "flagger-confirm-promotion"), Some(VIEWER)).await;
    assert_eq!(code, 412, "{text}");
    let c: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(c["verdict"], "fail", "{text}");
    assert!(c["summary"].as_str().unwrap().contains("wave never starts"), "{text}");
    let (_, text) = get(&format!("{}&revision=v43", gate("checkout-v42", "argo")), Some(VIEWER)).await;
    assert!(text.contains("\"verdict\":\"inconclusive\""), "another revision than the fleet's is a pause: {text}");
}

/// One top-level message for the fleet, updated to its end; each member's in its thread.
async fn slack_shows_the_fleet_as_one_message_with_its_members_in_its_thread(fake: &crate::support::slack::FakeSlack) {
    let wait = Duration::from_secs(60);
    let first = fake
        .wait_call("chat.postMessage", |c| c["text"].as_str().is_some_and(|t| t.contains("fleet checkout-v42")), wait)
        .await;
    assert!(first["thread_ts"].is_null(), "the fleet's message is top-level: {first}");
    let is_fleet = |m: &Value| m["text"].as_str().is_some_and(|t| t.contains("fleet checkout-v42"));
    let fleet_ts = fake.ts_of("C0RELEASE", is_fleet).expect("the fleet's message is stored");
    for member in ["a", "b"] {
        let m = fake
            .wait_call(
                "chat.postMessage",
                |c| c["text"].as_str().is_some_and(|t| t.contains(&format!(" {member}:"))),
                wait,
            )
            .await;
        assert_eq!(m["thread_ts"].as_str(), Some(fleet_ts.as_str()), "member {member} is in the fleet's thread: {m}");
    }
    let start = std::time::Instant::now();
    loop {
        let msg = fake.message("C0RELEASE", &fleet_ts);
        let text = msg.to_string();
        if text.contains("stopped at wave 2") {
            assert!(text.contains("Wave 3") && text.contains("not started"), "{text}");
            assert!(text.contains("revert *rolled back*"), "{text}");
            break;
        }
        assert!(start.elapsed() < wait, "the fleet's message never said it stopped: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posts = fake.calls("chat.postMessage");
    let tops: Vec<&Value> = posts.iter().filter(|c| c["thread_ts"].is_null()).collect();
    assert_eq!(tops.len(), 1, "members never post top-level messages: {tops:#?}");
}
