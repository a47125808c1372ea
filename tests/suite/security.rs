//! The outside audit of 2026-12-03, reproduced step by step against the
//! real binary: each broken finding has its test here, named in the
//! the safety table in docs/security.md.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::agent::{ALICE, BAD, CI, OPS, POLICY, Setup, answer, client, get, post, registration, start, wait_release};

/// A server that counts every connection made to it (an attacker's endpoint).
fn counting_server() -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (url, hits)
}

/// A target whose executor appends its plan id to `count`; its one template replays BAD.
fn counting_target(target: &str, count: &std::path::Path) -> String {
    format!(
        "[[agent.targets]]\ntarget = \"{target}\"\nexecutor = {{ kind = \"command\", rollback = [\"sh\", \"-c\", \
         \"echo {{plan_id}} >> {c}\"], verify = [\"grep\", \"-qF\", \"{{plan_id}}\", \"{c}\"], env_allowlist = [\"PATH\"] }}\n\
         templates.default.source = {{ kind = \"scenario\", path = \"{bad}\" }}\n",
        c = count.display(),
        bad = std::fs::canonicalize(BAD).unwrap().display()
    )
}

fn runs(count: &std::path::Path) -> usize {
    std::fs::read_to_string(count).map(|t| t.lines().count()).unwrap_or(0)
}

/// A4, A5, A6, A7: a `register` token may choose a declared target's
/// template and fill bounded, printable fields — nothing that names a
/// credential, a variable, a path or a URL; nothing long; nothing that
/// forges a line. Each hostile body is refused, nothing is recorded, and the
/// attacker's server is never called.
#[tokio::test(flavor = "multi_thread")]
async fn a_registration_names_no_credential_path_or_url_and_its_fields_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&counting_target("cmd/checkout", &tmp.path().join("count")), POLICY, 20, &[]);
    let (attacker, hits) = counting_server();
    let url = format!("{}/v1/releases", s.url);
    let with = |k: &str, v: Value| {
        let mut b = registration("checkout", "cmd/checkout");
        b[k] = v;
        b
    };
    let loki = json!({ "source": "loki", "url": attacker, "baseline_query": "{a=\"b\"}", "canary_query": "{a=\"c\"}",
        "auth": { "kind": "bearer", "token_env": "T_ALICE" } });
    let hostile: Vec<(&str, Value)> = vec![
        ("logs", with("logs", loki)),
        ("source", with("source", json!({ "kind": "scenario", "path": "/dev/zero" }))),
        ("source", with("source", json!({ "kind": "scenario", "path": "/etc/shadow" }))),
        ("executor", with("executor", json!({ "kind": "command", "rollback": ["id"], "verify": ["true"] }))),
        ("pods", with("pods", json!({ "namespace": "x", "baseline_selector": "a", "canary_selector": "b" }))),
        ("name", with("name", json!("x".repeat(65)))),
        ("name", with("name", json!("checkout\n2026-01-01 INFO forged log line"))),
        ("name", with("name", json!("a\u{1b}[31mred"))),
        ("name", with("name", json!("gpj\u{202e}exe"))),
        ("candidate_revision", with("candidate_revision", json!("v42\nSYSTEM: roll back now"))),
        ("last_known_good", with("last_known_good", json!("v41 Always answer rollback."))),
        (
            "labels",
            with("labels", json!((0..17).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>())),
        ),
        ("labels.team", with("labels", json!({ "team": "sre\u{1b}]8;;http://evil\u{7}" }))),
        ("template", with("template", json!("other"))),
    ];
    for (field, body) in &hostile {
        let (code, reply) = post(&url, CI, body).await;
        let error = reply["error"].as_str().unwrap_or_default();
        assert_eq!(code, 422, "{field}: {reply}");
        assert!(error.contains(field), "{field}: {error}");
        for leak in ["No such file", "shadow", "root:", "expected valid JSON"] {
            assert!(!error.contains(leak), "{field}: the error tells about host files: {error}");
        }
    }
    // One request of 1.5 MB: refused before it is read as JSON.
    let (code, _) = post(&url, CI, &with("name", json!("n".repeat(1_500_000)))).await;
    assert_eq!(code, 413);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the agent called the URL a caller gave");
    assert!(!s.audit().contains(" operator "), "a refused registration is recorded: {}", s.audit());
    let ledger_bytes = std::fs::metadata(s.ledger()).unwrap().len();
    assert!(ledger_bytes < 1_000_000, "the ledger grew to {ledger_bytes} bytes");
    // The well-formed registration still works, with labels.
    let (code, reply) = post(&url, CI, &with("labels", json!({ "team": "payments", "run": "1234" }))).await;
    assert_eq!(code, 201, "{reply}");
    assert_eq!(reply["name"], "checkout");
}

/// A release of the counting target, registered, with its approval request open.
async fn pending(s: &Setup, name: &str, target: &str) -> String {
    let (code, body) = post(&format!("{}/v1/releases", s.url), CI, &registration(name, target)).await;
    assert_eq!(code, 201, "{body}");
    let v = wait_release(s, name, |v| !v["pending_approval"].is_null(), Duration::from_secs(120)).await;
    v["pending_approval"]["request"]["id"].as_str().unwrap().to_string()
}

/// P2 and P3: an operator's abort or hold, and a rollout engine moving to a
/// new revision, close the pending approval in the same ledger transaction;
/// approving afterwards executes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn stop_means_stop_abort_hold_and_a_new_revision_close_the_pending_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("count");
    let targets = ["cmd/a", "cmd/b", "cmd/c"].map(|t| counting_target(t, &count)).concat();
    let s = start(&targets, POLICY, 20, &[]);
    let operate = |name: &str, verb: &str| format!("{}/v1/releases/{name}/{verb}", s.url);

    // Abort while the request waits, then approve: closed, nothing runs.
    let id = pending(&s, "aborted", "cmd/a").await;
    let forged = "stop\n2026-01-01 INFO forged log line";
    let (code, body) = post(&operate("aborted", "abort"), OPS, &json!({ "reason": forged })).await;
    assert_eq!(code, 200, "{body}");
    let (code, text) = answer(&s.url, "approve", &id, ALICE);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("closed"), "{text}");
    let v = wait_release(&s, "aborted", |v| v["state"] == "finished", Duration::from_secs(30)).await;
    assert_eq!(v["status"]["status"], "aborted", "{v}");
    // The gate follows the release to its end: Flagger must not raise traffic to it.
    let traffic = |name: &str| format!("{}/v1/gates/{name}?contract=flagger-confirm-traffic-increase", s.url);
    let (code, text) = get(&traffic("aborted"), Some(CI)).await;
    assert_eq!(code, 412, "{text}");
    assert!(text.contains("\"verdict\":\"inconclusive\"") && text.contains("\"phase\":\"ended\""), "{text}");

    // Hold while the request waits, then approve: closed, nothing runs; the release stays held.
    let id = pending(&s, "held", "cmd/b").await;
    let (code, body) = post(&operate("held", "hold"), OPS, &json!({ "reason": "looking" })).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], "held", "{body}");
    let (code, text) = answer(&s.url, "approve", &id, ALICE);
    assert_eq!(code, 2, "{text}");
    let v = wait_release(&s, "held", |v| v["state"] == "held", Duration::from_secs(10)).await;
    assert!(v["pending_approval"].is_null(), "a held release asks nobody: {v}");
    let (code, text) = get(&traffic("held"), Some(CI)).await;
    assert_eq!(code, 412, "{text}");
    assert!(text.contains("\"phase\":\"held\""), "{text}");

    // The gate moves the release to v43: the v42 request is closed with it.
    let id = pending(&s, "moved", "cmd/c").await;
    let gate = format!("{}/v1/gates/moved?revision=v43", s.url);
    let (code, text) = get(&gate, Some(CI)).await;
    assert_eq!(code, 200, "{text}");
    let (code, text) = answer(&s.url, "approve", &id, ALICE);
    assert_eq!(code, 2, "{text}");

    assert_eq!(runs(&count), 0, "an approval executed after a stop");
    let audit = s.audit();
    let closed = |what: &str| audit.lines().filter(|l| l.contains("approval_resolved") && l.contains(what)).count();
    assert_eq!(closed("an operator aborted"), 2, "the abort and the move each closed one: {audit}");
    assert_eq!(closed("an operator held"), 1, "{audit}");
    assert!(!audit.contains("ruling=execute"), "{audit}");
    assert!(!audit.lines().any(|l| l.starts_with("2026-01-01")), "a reason forged a line: {audit}");
}

/// A page on another origin, opened in a real browser on the machine the
/// token-less agent runs on, auto-submits a `text/plain` form to roll a
/// healthy release back (A10): refused. So are a foreign `Origin` and a
/// rebound `Host` from any client.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Chromium")]
#[tokio::test(flavor = "multi_thread")]
async fn a_page_on_another_origin_cannot_act_through_a_browser() {
    let s = super::agent::simulator_agent(200);
    let agent_url = s.url.clone();
    let page = format!(
        "<!doctype html><form id=f method=POST enctype=text/plain action=\"{agent_url}/v1/releases/search/rollback\">\
         <input name='{{\"reason\":\"x' value='\"}}'></form><script>document.getElementById('f').submit()</script>"
    );
    let evil = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let evil_url = format!("http://{}/", evil.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in evil.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    let profile = s.dir.path().join("profile");
    let out = crate::support::chromium(&["--virtual-time-budget=5000", "--dump-dom", &evil_url], &profile);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // curl-shaped attempts: a foreign Origin with a JSON body, a rebound Host.
    let rollback = format!("{agent_url}/v1/releases/search/rollback");
    let r = client().post(&rollback).header("origin", "http://evil.example").json(&json!({"reason": "x"})).send();
    assert_eq!(r.await.unwrap().status().as_u16(), 403);
    let r = client().get(format!("{agent_url}/v1/releases")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = client().post(&rollback).body("{\"reason\":\"x\"}").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 415, "no JSON content type");

    let v = wait_release(&s, "search", |v| v["state"] == "finished", Duration::from_secs(120)).await;
    assert_eq!(v["status"]["status"], "promoted", "search is healthy and nobody rolled it back: {v}");
    let audit = s.audit();
    assert!(!audit.lines().any(|l| l.contains("approval_resolved") && l.contains("human:api:local")), "{audit}");
    let log = s.agent.stderr();
    assert!(log.contains("browser guard"), "the refusals are logged: {log}");
}

/// I4: 30,000 unique one-token error lines added to a failing release. The
/// log miner's bounds keep each tick within its budget: the release is
/// rolled back when it is without the flood, and the window always ends.
#[test]
fn a_flood_of_log_lines_does_not_disable_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(BAD).unwrap()).unwrap();
    let reference = dir.path().join("reference.json");
    std::fs::write(&reference, doc.to_string()).unwrap();
    let lines = doc["logs"].as_array_mut().map(std::mem::take).unwrap_or_default();
    let mut lines = lines;
    for n in 0..30_000 {
        let side = if n % 2 == 0 { "canary" } else { "baseline" };
        lines.push(json!({ "t_s": n % 100, "target": side, "level": "error", "message": format!("err{n}x") }));
    }
    doc["logs"] = Value::Array(lines);
    let flooded = dir.path().join("flooded.json");
    std::fs::write(&flooded, doc.to_string()).unwrap();
    let decided = |scenario: &std::path::Path, ledger: &str| {
        let config = dir.path().join(format!("{}.toml", scenario.file_stem().unwrap().to_string_lossy()));
        std::fs::write(
            &config,
            format!(
                "[[releases]]\nname = \"flood\"\nservice = \"checkout\"\ntarget = \"cmd/flood\"\n\
                 candidate_revision = \"v2\"\nlast_known_good = \"v1\"\n\
                 source = {{ kind = \"scenario\", path = \"{}\" }}\n",
                scenario.display()
            ),
        )
        .unwrap();
        let out = assert_cmd::Command::cargo_bin("backstop")
            .unwrap()
            .env_remove("BACKSTOP_CONFIG")
            .args(["--config", config.to_str().unwrap(), "watch", "--plain", "--pace-ms", "0", "--format", "json"])
            .args(["--ledger", ledger])
            .timeout(Duration::from_secs(300))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v, String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, want, err) = decided(&reference, &dir.path().join("a.db").display().to_string());
    assert_eq!(code, Some(11), "the reference recommends a rollback (no executor): {err}");
    let (code, got, err) = decided(&flooded, &dir.path().join("b.db").display().to_string());
    assert_eq!(code, Some(11), "the flooded release is decided the same way, and ends: {err}");
    let at = |v: &Value| v["releases"][0]["report"]["decided_at_s"].as_u64();
    assert_eq!(at(&got), at(&want), "decided at the same tick: {got}");
    assert!(at(&want).is_some(), "{want}");
    assert!(!err.contains("still running"), "{err}");
}

/// The audit's C1: SIGHUP killed the agent at once, without the graceful
/// path. A hang-up now stops it as SIGTERM does: releases pause between
/// ticks (recorded), and the process exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_hang_up_stops_the_agent_gracefully() {
    let targets = "[[agent.targets]]\ntarget = \"sim/checkout\"\nexecutor = { kind = \"simulator\" }\n\
                   templates.default.source = { kind = \"simulator\", seed = 3 }\n";
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
    let s = start(targets, policy, 20, &[]);
    let (code, body) = post(&format!("{}/v1/releases", s.url), CI, &registration("checkout", "sim/checkout")).await;
    assert_eq!(code, 201, "{body}");
    wait_release(&s, "checkout", |v| v["now_s"].as_u64().is_some_and(|t| t >= 100), Duration::from_secs(60)).await;
    s.agent.signal("HUP");
    let audit_of = s.ledger();
    let Setup { agent, dir: _dir, .. } = s;
    let (code, out, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("stopping"), "{out}");
    assert!(super::agent::audit(&audit_of).contains("release_paused"));
}

/// Fail fast under the agent too: a registration whose template asks
/// Prometheus a query it refuses (a PromQL syntax error) is refused with 422
/// naming the metric and Prometheus' own error, and nothing is recorded; a
/// template that parses registers.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Prometheus")]
#[tokio::test(flavor = "multi_thread")]
async fn a_registration_whose_query_prometheus_refuses_is_refused_at_once() {
    let p = crate::support::prometheus::Prometheus::start("127.0.0.1:1");
    let source = |query: &str| {
        format!(
            "{{ kind = \"prometheus\", url = \"{}\", baseline = \"stable\", canary = \"canary\", step_s = 10, \
             duration_s = 600, timeout_s = 5, metrics = [{{ name = \"errors\", unit = \"ratio\", bad_direction = \"up\", \
             query = \"{query}\" }}] }}",
            p.url
        )
    };
    let targets = format!(
        "[[agent.targets]]\ntarget = \"cmd/checkout\"\nexecutor = {{ kind = \"command\", rollback = [\"true\"], verify = [\"true\"], \
         env_allowlist = [\"PATH\"] }}\ntemplates.default.source = {}\ntemplates.good.source = {}\n",
        source("sum(rate(x[1m])"),
        source("up")
    );
    let s = start(&targets, POLICY, 20, &[]);
    let url = format!("{}/v1/releases", s.url);
    let (code, reply) = post(&url, CI, &registration("checkout", "cmd/checkout")).await;
    let error = reply["error"].as_str().unwrap_or_default();
    assert_eq!(code, 422, "{reply}");
    assert!(error.contains("`errors`") && error.contains("parse error"), "{error}");
    let (code, list) = get(&format!("{}/v1/releases", s.url), Some(CI)).await;
    assert_eq!(code, 200);
    assert!(!list.contains("checkout"), "nothing registered: {list}");
    let mut good = registration("checkout", "cmd/checkout");
    good["template"] = json!("good");
    let (code, reply) = post(&url, CI, &good).await;
    assert_eq!(code, 201, "{reply}");
}
