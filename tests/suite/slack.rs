//! Chat-ops against a fake Slack speaking Slack's wire formats
//! (`support::slack`), with `backstop agent` as a real process acting on a
//! real HAProxy: scripted conversations over Socket Mode and HTTP mode.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::agents::Agent;
use crate::support::haproxy::{Haproxy, free_port};
use crate::support::slack::{self, APP, BOT, FakeSlack, SIGNING};

const CHANNEL: &str = "C0RELEASE";
const WAIT: Duration = Duration::from_secs(90);

const POLICY: &str = r#"
version = 1
[rate_limit]
max_rollbacks = 3
window_minutes = 60
[services.checkout]
autonomy = "approve"
[approvals]
approvers = ["slack:UALICE", "slack-group:SONCALL"]
expiry_minutes = 1
"#;

fn checkout(socket: &str, onset_s: u64) -> String {
    let exec = format!(
        "{{ kind = \"haproxy\", socket = \"{socket}\", backend = \"be\", canary_server = \"canary\", stable_server = \"stable\" }}"
    );
    let source = format!(
        "{{ kind = \"simulator\", seed = 7, fault = {{ kind = \"error_spike\", onset_s = {onset_s}, strength = 0.05 }} }}"
    );
    crate::support::release_toml("haproxy/checkout", &source, Some(&exec))
}

const SEARCH: &str = "\n[[releases]]\nname = \"search\"\nservice = \"search\"\ntarget = \"simulator/search\"\n\
    candidate_revision = \"v7\"\nlast_known_good = \"v6\"\nexecutor = { kind = \"simulator\" }\n\
    source = { kind = \"simulator\", service = \"search\", seed = 3 }\n";

fn slack_toml(mode: &str, api_url: &str, agent_url: &str) -> String {
    format!(
        "\n[slack]\nmode = \"{mode}\"\napi_url = \"{api_url}\"\nchannel = \"{CHANNEL}\"\nagent_url = \"{agent_url}\"\n\
         post_interval_ms = 20\ncache_s = 60\n"
    )
}

/// `backstop agent` on `config` and the policy above, in `dir`: its URL and process.
fn agent(dir: &Path, config: &str, pace_ms: u64) -> (String, Agent) {
    agent_logging(dir, config, pace_ms, "warn")
}

/// As [`agent`], logging at `log` (`RUST_LOG`).
fn agent_logging(dir: &Path, config: &str, pace_ms: u64, log: &str) -> (String, Agent) {
    std::fs::write(dir.join("backstop.toml"), config).unwrap();
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let file = |name: &str| dir.join(name).display().to_string();
    let (cfg, pol, ledger) = (file("backstop.toml"), file("policy.toml"), file("l.db"));
    let pace = pace_ms.to_string();
    let args =
        ["--config", &cfg, "agent", "--listen", &listen, "--policy", &pol, "--ledger", &ledger, "--pace-ms", &pace];
    let env =
        [("SLACK_BOT_TOKEN", BOT), ("SLACK_APP_TOKEN", APP), ("SLACK_SIGNING_SECRET", SIGNING), ("RUST_LOG", log)];
    let mut a = Agent::spawn(&args, &env);
    a.wait_for_stdout("backstop agent on", Duration::from_secs(60));
    (format!("http://{listen}"), a)
}

fn audit(dir: &Path) -> String {
    let ledger = dir.join("l.db").display().to_string();
    let out = assert_cmd::Command::cargo_bin("backstop")
        .unwrap()
        .env_remove("BACKSTOP_CONFIG")
        .args(["audit", "list", "--limit", "100000", "--ledger", &ledger])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn canary_weight(socket: &str) -> u32 {
    crate::suite::haproxy::executor(socket).weight("canary").await.unwrap()
}

/// The text of every block of a message, joined.
fn text_of(msg: &Value) -> String {
    msg["blocks"].as_array().map(|b| b.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("\n")).unwrap_or_default()
}

/// Poll the release message until `pred` holds.
async fn wait_message(fake: &FakeSlack, ts: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let m = fake.message(CHANNEL, ts);
        if pred(&m) {
            return m;
        }
        assert!(start.elapsed() < WAIT, "release message never as expected: {m:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn approval_id(msg: &Value) -> Option<String> {
    let blocks = msg["blocks"].as_array()?;
    let actions = blocks.iter().find(|b| b["type"] == "actions")?;
    actions["elements"].as_array()?.iter().find(|e| e["action_id"] == "approve")?["value"].as_str().map(str::to_string)
}

async fn ephemeral_to(fake: &FakeSlack, user: &str, needle: &str) -> Value {
    fake.wait_call("chat.postEphemeral", |c| c["user"] == user && c.to_string().contains(needle), WAIT).await
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test(flavor = "multi_thread")]
async fn socket_mode_conversation_refusals_then_a_group_members_click_rolls_back_on_real_haproxy() {
    let fake = FakeSlack::start(&[CHANNEL]).await;
    for (user, deleted) in [("UALICE", false), ("UMALLORY", false), ("UCAROL", false), ("UGONE", true)] {
        fake.user(user, deleted);
    }
    fake.group("SONCALL", &["UCAROL", "UGONE"]);
    // Slack's first answer to the first post is a 429: honoured, then posted.
    fake.state.lock().unwrap().rate_limit_posts = 1;
    let h = Haproxy::start();
    let socket = h.unix_socket.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let agent_url = format!("http://127.0.0.1:{}", free_port());
    let config = format!("{}{}", checkout(&socket, 60), slack_toml("socket", &fake.api_url, &agent_url));
    // Traced to the bone: no token may reach a log line.
    let (agent_at, agent) = agent_logging(dir.path(), &config, 10, "trace");
    fake.wait_connection(1, WAIT).await;

    let ts = release_message(&fake).await;
    let id = the_request_shows_the_plan_and_a_signed_link(&fake, &ts, &agent_url, &agent_at).await;
    refusals_run_nothing(&fake, &ts, &id, &socket).await;
    // Slack asks for a new connection, then the network drops it: both reconnect; no click is lost.
    fake.send(&json!({ "type": "disconnect", "reason": "refresh_requested" }));
    fake.wait_connection(2, WAIT).await;
    fake.drop_connection();
    fake.wait_connection(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    a_group_members_click_rolls_back(&fake, &ts, &id, &socket).await;
    details_chart_and_why_in_the_thread(&fake, &ts).await;

    // The ledger: who clicked, by Slack id; refusals; the duplicate envelope and event acted on once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = audit(dir.path());
    let lines = |needle: &str| audit.lines().filter(|l| l.contains(needle)).count();
    assert!(
        audit.lines().any(|l| l.contains("human:slack:slack:UCAROL") && l.contains("ruling=execute rollback")),
        "{audit}"
    );
    assert_eq!(lines("human:slack:slack:UMALLORY"), 1, "one refusal for a twice-delivered click:\n{audit}");
    assert!(audit.lines().any(|l| l.contains("slack:UGONE") && l.contains("refused")), "{audit}");
    assert_eq!(lines("intent "), 1, "{audit}");
    agent.signal("TERM");
    let (code, out, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    let ledger = String::from_utf8_lossy(&std::fs::read(dir.path().join("l.db")).unwrap()).to_string();
    for secret in [BOT, APP, SIGNING] {
        for (what, text) in [("stdout", &out), ("stderr", &err), ("ledger", &ledger), ("audit", &audit)] {
            assert!(!text.contains(secret), "a Slack credential in the agent's {what}");
        }
    }
    assert!(err.len() > 10_000, "the trace was on ({} bytes)", err.len());
    every_call_is_in_the_manifests_scopes(&fake);
}

/// One message per release, in its channel (after the 429 was retried): its `ts`.
async fn release_message(fake: &FakeSlack) -> String {
    let start = Instant::now();
    let ts = loop {
        let posted = fake.state.lock().unwrap().messages.keys().find(|(c, _)| c == CHANNEL).map(|k| k.1.clone());
        if let Some(ts) = posted {
            break ts;
        }
        assert!(start.elapsed() < WAIT, "no release message; calls: {:#?}", fake.all_calls());
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(fake.calls("chat.postMessage").len() >= 2, "the 429 was answered by a retry");
    assert!(fake.message(CHANNEL, &ts).to_string().contains("checkout"));
    ts
}

/// The canary fails and the message gains Approve / Reject: the plan as the
/// executor will run it, the approvers paged (a user and a user group),
/// confirm dialogs, and a link Slack users open without a token — the
/// release page, signed for this request, until it expires. The request's id.
async fn the_request_shows_the_plan_and_a_signed_link(
    fake: &FakeSlack,
    ts: &str,
    agent_url: &str,
    agent_at: &str,
) -> String {
    let asked = wait_message(fake, ts, |m| approval_id(m).is_some()).await;
    let id = approval_id(&asked).unwrap();
    let buttons = text_of(&asked);
    assert!(buttons.contains("Approving runs:") && buttons.contains("1. "), "the exact steps: {buttons}");
    assert!(buttons.contains("<@UALICE>") && buttons.contains("<!subteam^SONCALL>"), "approvers mentioned: {buttons}");
    assert!(
        buttons.contains("\"confirm\"") && buttons.contains("Reject"),
        "confirm dialogs on both buttons: {buttons}"
    );
    let shared =
        buttons.split(&format!("<{agent_url}/shared/releases/checkout?")).nth(1).and_then(|r| r.split('|').next());
    let query = shared.unwrap_or_else(|| panic!("a signed link to the release page: {buttons}"));
    assert!(query.starts_with(&format!("request={id}&exp=")) && query.contains("&sig="), "{query}");
    let client = reqwest::Client::new();
    let open = |q: String| {
        let url = format!("{agent_at}/shared/releases/checkout?{q}");
        let c = client.clone();
        async move {
            let r = c.get(url).header("accept", "text/html").send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (code, page) = open(query.to_string()).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Approving runs:") && page.contains("Scorecard"), "the plan and the evidence: {page}");
    assert!(!page.contains("<form"), "a shared link only reads: {page}");
    let (code, _) = open(query.replace("&sig=", "&sig=0")).await;
    assert_eq!(code, 403, "a changed signature does not open");
    let (code, _) = open(query.replace("exp=", "exp=9")).await;
    assert_eq!(code, 403, "a later expiry breaks the signature");
    id
}

/// An approval click on the release message by `user`.
fn click(user: &str, ts: &str, id: &str, ts_click: &str) -> Value {
    slack::block_action(user, CHANNEL, ts, "approve", id, ts_click)
}

/// `/backstop status` is answered in the acknowledgement; Mallory is no
/// approver (refused to her alone; the same envelope again acts once); a
/// deactivated member of the approver group is refused before policy is
/// asked. HAProxy is untouched.
async fn refusals_run_nothing(fake: &FakeSlack, ts: &str, id: &str, socket: &str) {
    let status = slack::slash("UMALLORY", CHANNEL, "status", &fake.response_url("s1"), "trig-status");
    fake.send(&slack::envelope("slash_commands", "env-status", status, 0));
    let ack = fake.wait_ack("env-status", WAIT).await;
    assert!(ack["payload"].to_string().contains("checkout"), "{ack}");

    let mallory = slack::envelope("interactive", "env-mallory", click("UMALLORY", ts, id, "1700000100.000001"), 0);
    fake.send(&mallory);
    ephemeral_to(fake, "UMALLORY", "not an approver for checkout").await;
    fake.send(&slack::envelope("interactive", "env-mallory", click("UMALLORY", ts, id, "1700000100.000001"), 1));
    let start = Instant::now();
    while fake.acks("env-mallory").len() < 2 {
        assert!(start.elapsed() < WAIT, "the retried envelope was not acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.send(&slack::envelope("interactive", "env-gone", click("UGONE", ts, id, "1700000101.000001"), 0));
    ephemeral_to(fake, "UGONE", "deactivated").await;
    assert_eq!(canary_weight(socket).await, 10, "refused clicks run nothing");
}

/// Carol is an approver through the Slack user group: her click rolls back
/// on HAProxy, verified, and the one release message is updated in place
/// without buttons.
async fn a_group_members_click_rolls_back(fake: &FakeSlack, ts: &str, id: &str, socket: &str) {
    fake.send(&slack::envelope("interactive", "env-carol", click("UCAROL", ts, id, "1700000102.000001"), 0));
    fake.wait_ack("env-carol", WAIT).await;
    ephemeral_to(fake, "UCAROL", "rolled back, verified").await;
    assert_eq!(canary_weight(socket).await, 0);
    let done = wait_message(fake, ts, |m| text_of(m).contains("<@UCAROL>") && text_of(m).contains("Ended")).await;
    let shown = text_of(&done);
    assert!(shown.contains("approved") && shown.contains("rolled back, verified"), "{shown}");
    assert!(approval_id(&done).is_none(), "no buttons once decided: {shown}");
    assert!(!fake.calls("chat.update").is_empty(), "the message was updated in place");
    let top = fake.state.lock().unwrap().messages.values().filter(|m| m["thread_ts"].is_null()).count();
    assert_eq!(top, 1, "one message per release");
}

/// Details and the chart in the release's thread (files.upload is retired;
/// the new flow is used); `@backstop why?` there answers there, once for an
/// event delivered twice, with the charts again.
async fn details_chart_and_why_in_the_thread(fake: &FakeSlack, ts: &str) {
    fake.wait_call("chat.postMessage", |c| c["thread_ts"] == ts && c.to_string().contains("Judge"), WAIT).await;
    let complete = fake.wait_call("files.completeUploadExternal", |c| c["thread_ts"] == ts, WAIT).await;
    let file_id = serde_json::from_str::<Value>(complete["files"].as_str().unwrap()).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let png = fake.state.lock().unwrap().uploads[&file_id].clone();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG was uploaded");
    assert!(fake.calls("files.upload").is_empty());

    let answered = |c: &Value| c["thread_ts"] == ts && c.to_string().contains("rolled back");
    let in_thread = |f: &FakeSlack| f.calls("chat.postMessage").into_iter().filter(|c| answered(c)).count();
    fake.wait_call("chat.postMessage", answered, WAIT).await;
    let before = in_thread(fake);
    let uploads =
        |f: &FakeSlack| f.calls("files.completeUploadExternal").into_iter().filter(|c| c["thread_ts"] == ts).count();
    let charts_before = uploads(fake);
    let m = slack::mention("Ev01", "UMALLORY", CHANNEL, "<@U0BACKSTOP> why?", ts);
    fake.send(&slack::envelope("events_api", "env-why", m.clone(), 0));
    fake.send(&slack::envelope("events_api", "env-why-again", m, 1));
    let start = Instant::now();
    while in_thread(fake) < before + 1 {
        assert!(start.elapsed() < WAIT, "no answer in the thread");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    fake.wait_ack("env-why-again", WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(in_thread(fake), before + 1, "one answer for one event");
    assert!(uploads(fake) > charts_before, "the charts follow a why in the thread");
}

/// Every method called is covered by a scope the manifest asks for, and no scope is unused.
fn every_call_is_in_the_manifests_scopes(fake: &FakeSlack) {
    let scopes = manifest_scopes();
    let mut used = std::collections::BTreeSet::new();
    for (method, _) in fake.all_calls() {
        let scope = scope_of(&method);
        // connections:write belongs to the app-level token, made by hand (see the manifest's comment).
        let covered = scope.is_empty() || scope == "connections:write" || scopes.contains(scope);
        assert!(covered, "{method} needs {scope}, not in slack/manifest.yaml");
        used.insert(scope.to_string());
    }
    used.insert("commands".into()); // /backstop itself
    used.insert("app_mentions:read".into()); // the app_mention event
    assert_eq!(
        used.into_iter()
            .filter(|s| !s.is_empty() && s != "connections:write")
            .collect::<std::collections::BTreeSet<_>>(),
        scopes
    );
}

/// The bot scopes `slack/manifest.yaml` asks for.
fn manifest_scopes() -> std::collections::BTreeSet<String> {
    use serde::Deserialize;
    let text = std::fs::read_to_string("slack/manifest.yaml").unwrap();
    let v =
        serde_json::to_value(serde_yaml_ng::Value::deserialize(serde_yaml_ng::Deserializer::from_str(&text)).unwrap())
            .unwrap();
    v["oauth_config"]["scopes"]["bot"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

/// The scope a Web API method needs (Slack's method reference); "" for none.
fn scope_of(method: &str) -> &'static str {
    match method {
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" => "chat:write",
        "users.info" => "users:read",
        "usergroups.users.list" => "usergroups:read",
        "files.getUploadURLExternal" | "files.completeUploadExternal" => "files:write",
        "apps.connections.open" => "connections:write",
        "auth.test" | "views.open" => "",
        other => panic!("backstop called {other}, which the manifest does not account for"),
    }
}

/// A request signed as Slack signs it.
fn signed(client: &reqwest::Client, url: &str, body: String, ts: i64, content_type: &str) -> reqwest::RequestBuilder {
    let sig = backstop::slack::verify::sign(SIGNING.as_bytes(), &ts.to_string(), body.as_bytes());
    client
        .post(url)
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sig)
        .body(body)
}

fn now_s() -> i64 {
    backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000
}

async fn wait_response(fake: &FakeSlack, needle: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(r) = fake.responses().into_iter().find(|r| r.to_string().contains(needle)) {
            return r;
        }
        assert!(start.elapsed() < WAIT, "no response_url answer containing `{needle}`: {:#?}", fake.responses());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Slack's URL check is answered; a forged and a stale command get 401
/// (recorded); a signed hold from an approver is answered at once and done
/// after, and Slack's retry of it acts once; resume undoes it.
async fn unsigned_and_stale_requests_are_refused_and_a_retry_acts_once(
    client: &reqwest::Client,
    fake: &FakeSlack,
    url: &str,
) {
    let form = "application/x-www-form-urlencoded";

    // Slack's URL check; a forged and a stale request get 401 and are recorded.
    let challenge = json!({ "token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification" });
    let r = signed(client, &format!("{url}/slack/events"), challenge.to_string(), now_s(), "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["challenge"], challenge["challenge"]);
    let hold = slack::form(&slack::slash(
        "UALICE",
        CHANNEL,
        "hold checkout db migration",
        &fake.response_url("h1"),
        "trig-hold",
    ));
    let forged = client
        .post(format!("{url}/slack/commands"))
        .header("content-type", form)
        .header("x-slack-request-timestamp", now_s().to_string())
        .header("x-slack-signature", format!("v0={}", "0".repeat(64)))
        .body(hold.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let stale =
        signed(client, &format!("{url}/slack/commands"), hold.clone(), now_s() - 600, form).send().await.unwrap();
    assert_eq!(stale.status(), 401);

    // A signed hold from an approver: answered at once, done after; Slack's retry of it acts once.
    let r = signed(client, &format!("{url}/slack/commands"), hold.clone(), now_s(), form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Asking policy"));
    let retry = signed(client, &format!("{url}/slack/commands"), hold.clone(), now_s(), form)
        .header("x-slack-retry-num", "1")
        .header("x-slack-retry-reason", "http_timeout");
    assert_eq!(retry.send().await.unwrap().status(), 200);
    wait_response(fake, "held checkout").await;
    let resume =
        slack::form(&slack::slash("UALICE", CHANNEL, "resume checkout", &fake.response_url("r1"), "trig-resume"));
    signed(client, &format!("{url}/slack/commands"), resume, now_s(), form).send().await.unwrap();
    wait_response(fake, "resumed checkout").await;
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test(flavor = "multi_thread")]
async fn http_mode_checks_signatures_acts_once_per_retry_and_a_person_rolls_back_through_policy() {
    let fake = FakeSlack::start(&[CHANNEL]).await;
    for user in ["UALICE", "UMALLORY"] {
        fake.user(user, false);
    }
    fake.group("SONCALL", &[]);
    let h = Haproxy::start();
    let socket = h.unix_socket.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("{}{SEARCH}{}", checkout(&socket, 60), slack_toml("http", &fake.api_url, "http://agent.example"));
    let (url, agent) = agent(dir.path(), &config, 100);
    let client = reqwest::Client::new();
    unsigned_and_stale_requests_are_refused_and_a_retry_acts_once(&client, &fake, &url).await;
    let form = "application/x-www-form-urlencoded";
    // `/backstop rollback` of a healthy release: Mallory is refused; Alice's goes through policy and runs.
    let ask = |user: &str, trig: &str| {
        slack::form(&slack::slash(
            user,
            CHANNEL,
            "rollback search p99 doubled after deploy",
            &fake.response_url(trig),
            trig,
        ))
    };
    signed(&client, &format!("{url}/slack/commands"), ask("UMALLORY", "rb1"), now_s(), form).send().await.unwrap();
    wait_response(&fake, "not an approver for search").await;
    signed(&client, &format!("{url}/slack/commands"), ask("UALICE", "rb2"), now_s(), form).send().await.unwrap();
    wait_response(&fake, "rolled back, verified").await;

    // checkout's request expires unanswered (expiry_minutes = 1); a click after that is refused and recorded.
    let start = Instant::now();
    let id = loop {
        let found = fake.state.lock().unwrap().messages.values().find_map(approval_id);
        if let Some(id) = found {
            break id;
        }
        assert!(start.elapsed() < WAIT, "no approval request for checkout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expired_by = Instant::now() + Duration::from_secs(75);
    while !audit(dir.path()).contains("expired") {
        assert!(Instant::now() < expired_by, "the request did not expire:\n{}", audit(dir.path()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let late = slack::block_action("UALICE", CHANNEL, "1700000000.000001", "approve", &id, "1700000200.000001");
    let body = serde_urlencoded::to_string([("payload", late.to_string())]).unwrap();
    let r = signed(&client, &format!("{url}/slack/interactive"), body, now_s(), form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    ephemeral_to(&fake, "UALICE", "closed").await;
    assert_eq!(canary_weight(&socket).await, 10, "an expired request runs nothing");

    tokio::time::sleep(Duration::from_millis(300)).await;
    the_ledger_names_each_person_and_each_refusal(&audit(dir.path()));
    agent.signal("TERM");
    let (code, _, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
}

/// HTTP mode's audit: one hold for a retried command, by Alice; her
/// rollback executed, Mallory's refused; both unverified requests; the
/// click on an expired request refused as closed.
fn the_ledger_names_each_person_and_each_refusal(audit: &str) {
    let lines = |needle: &str| audit.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("operator hold"), 1, "one hold for a retried command:\n{audit}");
    assert!(audit.lines().any(|l| l.contains("human:slack:slack:UALICE") && l.contains("operator hold")), "{audit}");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("human:slack:slack:UALICE") && l.contains("rollback-") && l.contains("ruling=execute")),
        "{audit}"
    );
    assert!(audit.lines().any(|l| l.contains("human:slack:slack:UMALLORY") && l.contains("refused")), "{audit}");
    assert!(
        audit.lines().any(|l| l.contains("unverified request to /slack/commands") && l.contains("does not match")),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains("unverified request to /slack/commands") && l.contains("from now")),
        "{audit}"
    );
    assert!(
        audit.lines().any(|l| l.contains("slack:UALICE")
            && l.contains("checkout-v42")
            && l.contains("approve refused")
            && l.contains("closed")),
        "{audit}"
    );
}

/// The audit's S2: a signed `/backstop hold` captured and replayed after
/// the agent restarted was acted on again (dedupe lived in memory). The
/// taken request is in the ledger, so the replay is acknowledged and ignored.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs HAProxy")]
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_request_replayed_after_a_restart_is_not_acted_on_again() {
    let fake = FakeSlack::start(&[CHANNEL]).await;
    fake.user("UALICE", false);
    fake.group("SONCALL", &[]);
    let h = Haproxy::start();
    let socket = h.unix_socket.display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}{}", checkout(&socket, 900), slack_toml("http", &fake.api_url, "http://agent.example"));
    let (url, agent) = agent(dir.path(), &config, 200);
    let hold = slack::form(&slack::slash("UALICE", CHANNEL, "hold checkout looking", &fake.response_url("h1"), "t1"));
    let ts = now_s().to_string();
    let sig = backstop::slack::verify::sign(SIGNING.as_bytes(), &ts, hold.as_bytes());
    let send = |url: String| {
        reqwest::Client::new()
            .post(format!("{url}/slack/commands"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", ts.clone())
            .header("x-slack-signature", sig.clone())
            .body(hold.clone())
            .send()
    };
    assert_eq!(send(url.clone()).await.unwrap().status(), 200);
    wait_response(&fake, "held checkout").await;
    agent.signal("TERM");
    let (code, _, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    // The same captured request, well within its five minutes, to the restarted agent.
    let (url, agent) = self::agent(dir.path(), &config, 200);
    assert_eq!(send(url).await.unwrap().status(), 200, "a replay is acknowledged (Slack must not retry it)");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit = audit(dir.path());
    assert_eq!(audit.lines().filter(|l| l.contains("operator hold")).count(), 1, "acted on once:\n{audit}");
    assert!(audit.contains("chat-ops: request"), "the taken request is in the ledger:\n{audit}");
    agent.signal("TERM");
    let _ = agent.finish(Duration::from_secs(30));
}

/// Decisions of a finished release, from the audit (tick lines).
fn decisions(audit: &str) -> Vec<String> {
    audit
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("tick"))
        .map(|l| l.split_whitespace().skip(5).collect::<Vec<_>>().join(" "))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_unreachable_for_a_whole_release_changes_no_decision_and_no_timing() {
    // An auto release whose canary fails: judged and rolled back by the simulator's executor.
    let release = "[[releases]]\nname = \"orders\"\nservice = \"orders\"\ntarget = \"simulator/orders\"\n\
        candidate_revision = \"v2\"\nlast_known_good = \"v1\"\nexecutor = { kind = \"simulator\" }\n\
        source = { kind = \"simulator\", service = \"orders\", seed = 5, fault = { kind = \"error_spike\", onset_s = 120, strength = 0.05 } }\n";
    let dead = format!("http://127.0.0.1:{}/api/", free_port());
    // A Slack that answers, but not for this channel (`channel_not_found`): a refusal, not an outage.
    let refusing = FakeSlack::start(&["C0OTHER"]).await;
    let mut seen = vec![];
    for slack_at in [None, Some(dead.as_str()), Some(refusing.api_url.as_str())] {
        let dir = tempfile::tempdir().unwrap();
        let config = match slack_at {
            Some(api) => format!("{release}{}", slack_toml("http", api, "http://a")),
            None => release.to_string(),
        };
        let (url, agent) = agent(dir.path(), &config, 5);
        let start = Instant::now();
        loop {
            let v: Value = reqwest::get(format!("{url}/v1/releases/orders")).await.unwrap().json().await.unwrap();
            if v["state"] == "finished" {
                break;
            }
            assert!(start.elapsed() < WAIT, "{v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let audit = audit(dir.path());
        match slack_at {
            Some(api) if api == dead => assert!(audit.contains("chat-ops: chat.postMessage not delivered"), "{audit}"),
            Some(_) => assert!(
                audit.contains("chat.postMessage not delivered: slack chat.postMessage: channel_not_found"),
                "{audit}"
            ),
            None => {}
        }
        seen.push((decisions(&audit), audit.contains("rolled_back")));
        agent.signal("TERM");
        let (code, _, err) = agent.finish(Duration::from_secs(30));
        assert_eq!(code, 0, "{err}");
    }
    assert!(seen.iter().all(|s| s.1), "every run rolled back");
    assert!(!seen[0].0.is_empty());
    assert_eq!(seen[0].0, seen[1].0, "the same ticks, decisions and release times with Slack down");
    assert_eq!(seen[0].0, seen[2].0, "the same with Slack refusing the channel");
    let tries = refusing.calls("chat.postMessage").len();
    assert!((1..=3).contains(&tries), "a refusal is not retried like an outage: {tries} posts");
}

/// An agent restarted mid-release takes up the release's message where it
/// was posted (the ledger's `chat-ops: … posted` record) and updates it in
/// place, instead of posting a second message for the same release.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_restarted_mid_release_updates_its_message_instead_of_posting_another() {
    let fake = FakeSlack::start(&[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{SEARCH}{}", slack_toml("http", &fake.api_url, "http://a"));
    let top_level = |fake: &FakeSlack| {
        let posts = fake.calls("chat.postMessage");
        posts.into_iter().filter(|c| c["thread_ts"].is_null() && c.to_string().contains("search")).count()
    };
    // 180 ticks of 200 ms: the release is mid-way for half a minute.
    let (url, agent) = agent(dir.path(), &config, 200);
    let first = fake.wait_call("chat.postMessage", |c| c.to_string().contains("search"), WAIT).await;
    assert!(first["thread_ts"].is_null(), "{first}");
    let ts = fake.ts_of(CHANNEL, |m| m.to_string().contains("search")).expect("the release message");
    let state = |url: String| async move {
        let v: Value = reqwest::get(format!("{url}/v1/releases/search")).await.unwrap().json().await.unwrap();
        v["state"].as_str().unwrap_or_default().to_string()
    };
    // Mid-release: its first tick judged (the message is posted before it, at "starting").
    let start = Instant::now();
    loop {
        match state(url.clone()).await.as_str() {
            "running" => break,
            "starting" => assert!(start.elapsed() < WAIT, "the release's first tick was never judged"),
            other => panic!("restarted mid-release, found {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.signal("TERM");
    let (code, _, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
    assert!(audit(dir.path()).contains(&format!("chat-ops: release message posted in {CHANNEL} at {ts}")));
    let updates_before = fake.calls("chat.update").len();

    let (url, agent) = self::agent(dir.path(), &config, 5);
    let start = Instant::now();
    while state(url.clone()).await != "finished" {
        assert!(start.elapsed() < WAIT, "the release never finished after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended = wait_message(&fake, &ts, |m| text_of(m).contains("promoted")).await;
    assert!(text_of(&ended).contains("search"), "{ended:#}");
    let updates = fake.calls("chat.update");
    assert!(updates[updates_before..].iter().any(|u| u["ts"] == ts.as_str()), "updated in place after the restart");
    assert_eq!(top_level(&fake), 1, "one message for the release across the restart: {:#?}", fake.all_calls());
    agent.signal("TERM");
    let _ = agent.finish(Duration::from_secs(30));
}

/// An agent in HTTP mode whose auto release of orders rolled back, so v2 is
/// quarantined; Alice, Mallory and a deactivated user are known to Slack.
/// Returns the agent's directory, URL and process, and the release
/// message's ts once it says the release ended and how to lift the quarantine.
async fn quarantined_orders(fake: &FakeSlack) -> (tempfile::TempDir, String, Agent, String) {
    let release = "[[releases]]\nname = \"orders\"\nservice = \"orders\"\ntarget = \"simulator/orders\"\n\
        candidate_revision = \"v2\"\nlast_known_good = \"v1\"\nexecutor = { kind = \"simulator\" }\n\
        source = { kind = \"simulator\", service = \"orders\", seed = 5, fault = { kind = \"error_spike\", onset_s = 120, strength = 0.05 } }\n";
    for (user, deleted) in [("UALICE", false), ("UMALLORY", false), ("UGONE", true)] {
        fake.user(user, deleted);
    }
    fake.group("SONCALL", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (url, agent) = agent(dir.path(), &format!("{release}{}", slack_toml("http", &fake.api_url, "http://a")), 5);
    let start = Instant::now();
    while !audit(dir.path()).contains("quarantined") {
        assert!(start.elapsed() < WAIT, "orders v2 was never quarantined:\n{}", audit(dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The release's message says so, and how to lift it.
    let ts = loop {
        if let Some(ts) = fake.ts_of(CHANNEL, |m| m.to_string().contains("orders")) {
            break ts;
        }
        assert!(start.elapsed() < WAIT, "no message for orders: {:#?}", fake.all_calls());
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let ended = wait_message(fake, &ts, |m| text_of(m).contains("Ended")).await;
    let shown = text_of(&ended);
    assert!(
        shown.contains("`v2` is quarantined for orders")
            && shown.contains("`/backstop clear orders v2 &lt;reason&gt;`"),
        "{shown}"
    );
    (dir, url, agent, ts)
}

/// `/backstop clear` lifts a quarantine through the API's rule and record:
/// an auto release rolled back (orders v2 quarantined); a deactivated user,
/// a non-approver and a revision never quarantined are refused and recorded;
/// a clearing without a reason is a usage error at once; Alice's clears it,
/// told in the channel and recorded under her Slack identity.
#[tokio::test(flavor = "multi_thread")]
async fn an_approver_clears_a_quarantine_from_slack_and_every_refusal_is_recorded() {
    let fake = FakeSlack::start(&[CHANNEL]).await;
    let (dir, url, agent, _) = quarantined_orders(&fake).await;
    let client = reqwest::Client::new();
    let command = |user: &str, text: &str, trig: &str| {
        let body = slack::form(&slack::slash(user, CHANNEL, text, &fake.response_url(trig), trig));
        signed(&client, &format!("{url}/slack/commands"), body, now_s(), "application/x-www-form-urlencoded").send()
    };
    let at_once = command("UALICE", "clear orders v2", "c0").await.unwrap().text().await.unwrap();
    assert!(at_once.contains("needs a service, a revision and a reason"), "{at_once}");
    for (user, text, trig, told) in [
        ("UGONE", "clear orders v2 fixed", "c1", "deactivated"),
        ("UMALLORY", "clear orders v2 fixed", "c2", "not an approver for orders"),
        ("UALICE", "clear orders v1 fixed", "c3", "not quarantined"),
    ] {
        command(user, text, trig).await.unwrap();
        let r = wait_response(&fake, told).await;
        assert_eq!(r["response_type"], "ephemeral", "a refusal is told to the asker alone: {r}");
    }
    command("UALICE", "clear orders v2 the spike was the <!channel> cache, fixed", "c4").await.unwrap();
    let r = wait_response(&fake, "no longer quarantined").await;
    assert_eq!(r["response_type"], "in_channel", "the team sees it: {r}");
    assert!(r["text"].as_str().unwrap().contains("<@UALICE> cleared orders v2"), "{r}");
    assert!(!r["text"].as_str().unwrap().contains("<!channel>"), "typed text is escaped: {r}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = audit(dir.path());
    let line = |who: &str, what: &str| audit.lines().any(|l| l.contains(who) && l.contains(what));
    assert!(line("human:slack:slack:UALICE", "quarantine cleared: the spike was"), "{audit}");
    assert!(line("slack:UGONE", "clear refused"), "{audit}");
    assert!(line("human:slack:slack:UMALLORY", "clear refused"), "{audit}");
    assert!(line("human:slack:slack:UALICE", "clear refused"), "{audit}");
    assert_eq!(audit.matches("quarantine cleared").count(), 1, "{audit}");
    agent.signal("TERM");
    let (code, _, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
}

/// The quarantine line's "Clear quarantine…" button opens a form (Slack's
/// `views.open`, which needs no scope) whose submission is the same
/// clearing as the command: an expired trigger is told with the command
/// that does the same; a blank reason is told and nothing is asked of
/// policy; Mallory's submission is refused and recorded; Alice's clears it
/// and the channel is told (a post: a form has no `response_url`); Slack's
/// retry of her submission acts once.
#[tokio::test(flavor = "multi_thread")]
async fn an_approver_clears_a_quarantine_through_the_button_and_its_form() {
    let fake = FakeSlack::start(&[CHANNEL]).await;
    let (dir, url, agent, ts) = quarantined_orders(&fake).await;
    let blocks = fake.message(CHANNEL, &ts)["blocks"].clone();
    let button = blocks
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == "clear_quarantine")
        .unwrap_or_else(|| panic!("no Clear quarantine button: {blocks:#}"));
    assert!(button.get("confirm").is_none(), "the click only opens the form: {button}");
    let value = button["value"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();
    let form = "application/x-www-form-urlencoded";
    let interact = |payload: Value| {
        let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        signed(&client, &format!("{url}/slack/interactive"), body, now_s(), form).send()
    };
    let click = |user: &str, at: &str| slack::block_action(user, CHANNEL, &ts, "clear_quarantine", &value, at);

    interact(click("UALICE", "expired.1")).await.unwrap();
    let told = ephemeral_to(&fake, "UALICE", "Could not open the form").await;
    assert!(told.to_string().contains("expired_trigger_id") && told.to_string().contains("/backstop clear orders v2"));

    // Opening: the form names the quarantine and asks for a reason.
    let opened = |at: &str| {
        let trigger = format!("trig-{at}");
        fake.wait_call("views.open", move |c| c["trigger_id"] == trigger.as_str(), WAIT)
    };
    let submit = |user: &str, view: &Value, id: &str, reason: &str| {
        interact(slack::view_submission(user, &view["view"], id, reason))
    };
    interact(click("UMALLORY", "1700000300.000001")).await.unwrap();
    let mallorys = opened("1700000300.000001").await;
    assert_eq!(mallorys["view"]["callback_id"], "clear_quarantine");
    assert!(mallorys["view"].to_string().contains("`v2` for *orders*"), "{mallorys:#}");
    let r = submit("UMALLORY", &mallorys, "VMALLORY", "I think it is fine").await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap()), (200, String::new()), "an empty answer closes the form");
    ephemeral_to(&fake, "UMALLORY", "not an approver for orders").await;

    interact(click("UALICE", "1700000301.000001")).await.unwrap();
    let alices = opened("1700000301.000001").await;
    submit("UALICE", &alices, "VALICE", "   ").await.unwrap();
    ephemeral_to(&fake, "UALICE", "needs a service, a revision and a reason").await;
    for _ in 0..2 {
        submit("UALICE", &alices, "VALICE2", "the spike was the <!channel> cache, fixed").await.unwrap();
    }
    let said = fake
        .wait_call(
            "chat.postMessage",
            |b| b["text"].as_str().is_some_and(|t| t.contains("no longer quarantined")),
            WAIT,
        )
        .await;
    let text = said["text"].as_str().unwrap();
    assert_eq!(said["channel"], CHANNEL, "{said}");
    assert!(text.contains("<@UALICE> cleared orders v2") && !text.contains("<!channel>"), "{text}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = audit(dir.path());
    let line = |who: &str, what: &str| audit.lines().any(|l| l.contains(who) && l.contains(what));
    assert!(line("human:slack:slack:UALICE", "quarantine cleared: the spike was"), "{audit}");
    assert!(line("human:slack:slack:UMALLORY", "clear refused"), "{audit}");
    assert_eq!(audit.matches("quarantine cleared").count(), 1, "a retried submission acts once: {audit}");
    assert_eq!(audit.matches("clear refused").count(), 1, "a blank reason never reaches policy: {audit}");
    agent.signal("TERM");
    let (code, _, err) = agent.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn every_field_slack_sends_parses_and_unknown_kinds_are_ignored() {
    use backstop::slack::wire::{Event, EventBody, Interaction, SlashCommand};
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("fixtures/slack/{name}")).unwrap()).unwrap()
    };
    let c: SlashCommand = serde_json::from_value(read("SlashCommandPayload.json")).unwrap();
    assert_eq!(c.command, "");
    let a = slack::block_action("U1", "C1", "1.2", "approve", "apr-1", "3.4");
    match serde_json::from_value::<Interaction>(a).unwrap() {
        Interaction::BlockActions { user, actions, .. } => {
            assert_eq!((user.id.as_str(), actions[0].value.as_str()), ("U1", "apr-1"))
        }
        other => panic!("{other:?}"),
    }
    let mut v = read("ViewSubmissionPayload.json");
    v["type"] = json!("view_submission");
    assert!(matches!(serde_json::from_value::<Interaction>(v).unwrap(), Interaction::ViewSubmission { .. }));
    let mut v = read("BlockActionPayload.json");
    v["type"] = json!("shortcut");
    assert_eq!(serde_json::from_value::<Interaction>(v).unwrap(), Interaction::Other);
    match serde_json::from_value::<EventBody>(slack::mention("Ev1", "U1", "C1", "<@U0> why?", "1.2")).unwrap() {
        EventBody::EventCallback { event: Event::AppMention { text, thread_ts, .. }, .. } => {
            assert_eq!((text.as_str(), thread_ts.as_deref()), ("<@U0> why?", Some("1.2")))
        }
        other => panic!("{other:?}"),
    }
    let mut v = read("AppMentionPayload.json");
    v["type"] = json!("event_callback");
    v["event"]["type"] = json!("reaction_added");
    assert!(matches!(
        serde_json::from_value::<EventBody>(v).unwrap(),
        EventBody::EventCallback { event: Event::Other, .. }
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_reaches_slack_read_only_and_names_a_missing_token() {
    let fake = FakeSlack::start(&[CHANNEL]).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = slack_toml("socket", &fake.api_url, "http://a");
    let env = [("SLACK_BOT_TOKEN", BOT), ("SLACK_APP_TOKEN", APP)];
    let (code, text) = tokio::task::block_in_place(|| crate::suite::check::check(&cfg, dir.path(), &env));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("bot user U0BACKSTOP in Example"), "{text}");
    assert_eq!(fake.calls("auth.test").len(), 1);
    assert!(fake.calls("chat.postMessage").is_empty() && fake.calls("apps.connections.open").is_empty(), "read-only");
    let wrong = [("SLACK_BOT_TOKEN", "xoxb-not-the-one"), ("SLACK_APP_TOKEN", APP)];
    let (code, text) = tokio::task::block_in_place(|| crate::suite::check::check(&cfg, dir.path(), &wrong));
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("auth.test: not_authed") && !text.contains("xoxb-not-the-one"), "{text}");
    let (code, text) =
        tokio::task::block_in_place(|| crate::suite::check::check(&cfg, dir.path(), &[("SLACK_BOT_TOKEN", BOT)]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("slack.app_token_env") && text.contains("SLACK_APP_TOKEN"), "{text}");
    let bad = cfg.replace(CHANNEL, "#releases");
    let (code, text) = tokio::task::block_in_place(|| crate::suite::check::check(&bad, dir.path(), &env));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("slack.channel") && text.contains("channel id"), "{text}");
}
