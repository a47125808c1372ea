//! Release memory with real processes: a revision rolled back on one HAProxy
//! backend is held on a second (not promoted without a person), an approver
//! clears it, and a release without a configured last-known-good revision
//! rolls back to the one the ledger verified on its target; a configured one
//! the ledger contradicts is refused, naming both facts.

use std::path::Path;
use std::time::Duration;

use crate::support::agents::Agent;
use crate::support::haproxy::Haproxy;

use crate::support::{BAD_SCENARIO as BAD, GOOD_SCENARIO as GOOD};

/// A configuration of one release of `checkout` on HAProxy `h`.
fn config(
    dir: &Path,
    name: &str,
    (target, h): (&str, &Haproxy),
    candidate: &str,
    lkg: Option<&str>,
    data: &str,
) -> std::path::PathBuf {
    let lkg = lkg.map(|l| format!("last_known_good = \"{l}\"\n")).unwrap_or_default();
    let text = format!(
        "policy = \"policy.toml\"\n\n[[releases]]\nname = \"{name}\"\nservice = \"checkout\"\ntarget = \"{target}\"\n\
         candidate_revision = \"{candidate}\"\n{lkg}source = {{ kind = \"scenario\", path = \"{data}\" }}\n\
         executor = {{ kind = \"haproxy\", socket = \"{}\", backend = \"be\", canary_server = \"canary\", stable_server = \"stable\" }}\n",
        h.unix_socket.display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn backstop(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn watch(cfg: &Path, ledger: &str) -> (i32, String) {
    let (code, out, err) = Agent::watch(cfg, ledger, 0, &[]).finish(Duration::from_secs(120));
    (code, format!("{out}\n{err}"))
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[test]
fn a_revision_rolled_back_on_one_haproxy_backend_is_held_on_the_second_until_an_approver_clears_it() {
    let d = tempfile::tempdir().unwrap();
    let policy = format!("{}\n[approvals]\napprovers = [\"alice@example.com\"]\n", backstop::policy::DEFAULT_POLICY);
    std::fs::write(d.path().join("policy.toml"), policy).unwrap();
    let ledger = d.path().join("l.db").to_str().unwrap().to_string();
    let (eu, us) = (Haproxy::start(), Haproxy::start());

    let first = config(d.path(), "checkout-eu", ("haproxy/eu-1", &eu), "v42", Some("v41"), BAD);
    let (code, out) = watch(&first, &ledger);
    assert_eq!(code, 10, "the failing canary is rolled back on eu-1:\n{out}");
    assert_eq!(eu.weight("canary"), 0);

    // The same revision, healthy this time, on another backend: held, never promoted.
    let second = config(d.path(), "checkout-us", ("haproxy/us-1", &us), "v42", Some("v41"), GOOD);
    let (code, out) = watch(&second, &ledger);
    assert_ne!(code, 0, "a quarantined revision is not promoted without a person:\n{out}");
    assert!(out.contains("quarantined") && out.contains("rolled back on `haproxy/eu-1`"), "evidence shown:\n{out}");
    assert_eq!(us.weight("canary"), 10, "us-1's weights are untouched");

    shown_then_cleared_by_an_approver(d.path(), &ledger);

    let third = config(d.path(), "checkout-us-again", ("haproxy/us-1", &us), "v42", Some("v41"), GOOD);
    let (code, out) = watch(&third, &ledger);
    assert_eq!(code, 0, "cleared, the healthy revision is promoted:\n{out}");
    assert_eq!(us.weight("stable"), 0, "promotion moved the weight to the canary");

    the_ledger_gives_the_last_known_good(d.path(), &ledger, &eu);
}

/// Through the agent: a registered release rolled back leaves its revision
/// quarantined in `GET /v1/revisions`; only an approver's token clears it,
/// with a reason, recorded under their identity.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_lists_the_quarantine_and_only_an_approvers_token_clears_it() {
    use crate::suite::agent::{ALICE, BOB, VIEWER, get, post};
    let s = quarantined_agent().await;

    let (code, text) = get(&format!("{}/v1/revisions", s.url), Some(VIEWER)).await;
    assert_eq!(code, 200, "{text}");
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let v42 = list.as_array().unwrap().iter().find(|r| r["revision"] == "v42").unwrap_or_else(|| panic!("{list}"));
    assert_eq!(v42["quarantine"]["condemned"]["target"], "sim/checkout", "{v42}");
    assert!(!v42["quarantine"]["condemned"]["evidence"].as_array().unwrap().is_empty(), "with its evidence: {v42}");
    let v41 = list.as_array().unwrap().iter().find(|r| r["revision"] == "v41").unwrap_or_else(|| panic!("{list}"));
    assert!(v41["verified_on"]["sim/checkout"].is_i64(), "the rollback verified v41 there: {v41}");

    let clear = format!("{}/v1/revisions/checkout/v42/clear", s.url);
    let why = serde_json::json!({ "reason": "the spike was a dependency outage, fixed" });
    assert_eq!(post(&clear, VIEWER, &why).await.0, 403, "a read-only token cannot clear");
    let (code, body) = post(&clear, BOB, &why).await;
    assert_eq!(code, 403, "bob may approve, but policy does not name him for checkout: {body}");
    assert!(body["error"].as_str().unwrap().contains("not an approver"), "{body}");
    assert_eq!(post(&clear, ALICE, &serde_json::json!({ "reason": " " })).await.0, 422, "a reason is needed");
    let (code, body) = post(&clear, ALICE, &why).await;
    assert_eq!((code, &body["quarantine"]), (200, &serde_json::Value::Null), "{body}");
    assert_eq!(post(&clear, ALICE, &why).await.0, 409, "nothing left to clear");
    let audit = s.audit();
    let line = audit.lines().find(|l| l.contains("quarantine cleared")).unwrap_or_else(|| panic!("{audit}"));
    assert!(line.contains("human:api:alice@example.com") && line.contains("dependency outage"), "{line}");
}

/// `revisions show` gives v42's condemning evidence; `revisions clear` is
/// refused to someone who is not an approver and taken from one who is.
fn shown_then_cleared_by_an_approver(dir: &Path, ledger: &str) {
    let (code, shown) = backstop(&["revisions", "--ledger", ledger, "show", "checkout", "v42"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("QUARANTINED") && shown.contains("evidence: "), "the condemning evidence:\n{shown}");
    let policy_path = dir.join("policy.toml");
    let clear = |who: &str| {
        let p = policy_path.to_str().unwrap();
        backstop(&[
            "revisions",
            "--ledger",
            ledger,
            "clear",
            "checkout",
            "v42",
            "--reason",
            "flaky dependency fixed",
            "--as",
            who,
            "--policy",
            p,
        ])
    };
    let (code, refused) = clear("mallory@example.com");
    assert_eq!(code, 2, "only an approver clears a quarantine:\n{refused}");
    assert!(refused.contains("not an approver"), "{refused}");
    let (code, cleared) = clear("alice@example.com");
    assert_eq!(code, 0, "{cleared}");
}

/// Without a configured last_known_good, a rollback on eu-1 goes to the
/// revision the ledger verified there (v41, where v42's rollback left it);
/// a configured one the ledger contradicts is refused with both facts.
fn the_ledger_gives_the_last_known_good(dir: &Path, ledger: &str, eu: &Haproxy) {
    let fourth = config(dir, "checkout-eu-v43", ("haproxy/eu-1", eu), "v43", None, BAD);
    let (code, out) = watch(&fourth, ledger);
    assert_eq!(code, 10, "{out}");
    let (_, audit) = backstop(&["audit", "--ledger", ledger, "list", "--limit", "1000"]);
    let to_v41 = audit.lines().filter(|l| l.contains(" intent ") && l.contains("rollback haproxy/eu-1 -> v41")).count();
    assert_eq!(to_v41, 2, "v42's and then v43's rollback both went to the verified v41:\n{audit}");

    // A configured revision the ledger contradicts is refused with both facts.
    let fifth = config(dir, "checkout-eu-v44", ("haproxy/eu-1", eu), "v44", Some("v40"), GOOD);
    let (code, out) = watch(&fifth, ledger);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("`v40`") && out.contains("never verified running on `haproxy/eu-1`"), "{out}");
    assert!(out.contains("v41"), "names what the ledger verified there:\n{out}");
    let (code, audit) = backstop(&["audit", "--ledger", ledger, "verify"]);
    assert_eq!(code, 0, "{audit}");
}

/// An agent whose one registered release, checkout v42 on `sim/checkout`,
/// was rolled back (v42 quarantined, v41 verified there); alice is
/// checkout's approver, bob may approve but is not named.
async fn quarantined_agent() -> crate::suite::agent::Setup {
    use crate::suite::agent::{registered_until_finished, start};
    let targets = "[[agent.targets]]\ntarget = \"sim/checkout\"\nexecutor = { kind = \"simulator\" }\n\
                   templates.default.source = { kind = \"simulator\", seed = 3, fault = { kind = \"error_spike\", onset_s = 300, strength = 0.05 } }\n";
    let policy = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n[approvals]\napprovers = [\"group:sre\"]\n\
                  [approvals.groups]\nsre = [\"alice@example.com\"]\n";
    let s = start(targets, policy, 5, &[]);
    let v = registered_until_finished(&s, "checkout", "sim/checkout").await;
    assert_eq!(v["status"]["status"], "rolled_back", "{v}");
    s
}

/// A dashboard form posted with `token`, from the agent's own page: (status, location, body).
async fn form_as(url: &str, path: &str, token: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
    crate::suite::agent::form_post_as(url, path, Some(token), fields, url).await
}

/// On the dashboard: `/revisions` shows the quarantine with its evidence to
/// anyone who may read; only an approver's page carries the form, and
/// policy still decides — a token that may approve but is not named is
/// refused, an empty reason too; alice's form lifts it, recorded as given on
/// the dashboard under her identity.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_quarantine_and_an_approvers_form_clears_it() {
    use crate::suite::agent::{ALICE, BOB, VIEWER, get};
    let s = quarantined_agent().await;
    let url = s.url.as_str();
    let (_, index) = get(&format!("{url}/"), Some(VIEWER)).await;
    assert!(index.contains("<a href=\"/revisions\">revisions</a>"), "{index}");
    let (code, page) = get(&format!("{url}/revisions"), Some(VIEWER)).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("quarantined: revision v42 was rolled back on `sim/checkout` to v41"), "{page}");
    assert!(!page.contains("<form"), "a read-only caller gets no form: {page}");

    let (_, page) = get(&format!("{url}/revisions"), Some(BOB)).await;
    let bobs = crate::suite::agent::csrf_of(&page);
    let f = [("do", "clear"), ("reason", "fixed"), ("csrf", bobs.as_str())];
    let (code, _, body) = form_as(url, "/ui/revisions/checkout/v42", BOB, &f).await;
    assert!(code == 403 && body.contains("not an approver"), "{code} {body}");

    let (_, page) = get(&format!("{url}/revisions"), Some(ALICE)).await;
    assert!(page.contains("action=\"/ui/revisions/checkout/v42\""), "{page}");
    let alices = crate::suite::agent::csrf_of(&page);
    let forged = [("do", "clear"), ("reason", "fixed"), ("csrf", bobs.as_str())];
    let (code, _, body) = form_as(url, "/ui/revisions/checkout/v42", ALICE, &forged).await;
    assert_eq!(code, 403, "bob's form token is not alice's: {body}");
    for (reason, expected) in [(" ", 422), ("the spike was a dependency outage, fixed", 303)] {
        let f = [("do", "clear"), ("reason", reason), ("csrf", alices.as_str())];
        let (code, location, body) = form_as(url, "/ui/revisions/checkout/v42", ALICE, &f).await;
        assert_eq!(code, expected, "{body}");
        assert!(code != 303 || location == "/revisions", "{location}");
    }
    let (_, page) = get(&format!("{url}/revisions"), Some(VIEWER)).await;
    assert!(!page.contains("quarantined: revision v42"), "{page}");
    let audit = s.audit();
    let line = audit.lines().find(|l| l.contains("quarantine cleared")).unwrap_or_else(|| panic!("{audit}"));
    assert!(line.contains("human:dashboard:alice@example.com") && line.contains("dependency outage"), "{line}");
}
