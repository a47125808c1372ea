//! A fake Slack speaking the documented wire formats, on loopback ports it
//! chooses: the Web API methods backstop calls (response shapes and error
//! codes as Slack documents them: `not_authed`, `channel_not_found`,
//! `user_not_found`, 429 `ratelimited` with `Retry-After`), file uploads,
//! `response_url`s, and a Socket Mode WebSocket that sends `hello` and
//! envelopes and keeps every acknowledgement. Payloads are built from the
//! samples in `fixtures/slack/` (Slack's own field sets, from java-slack-sdk).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

pub const BOT: &str = "xoxb-test-bot-token";
pub const APP: &str = "xapp-test-app-token";
pub const SIGNING: &str = "test-signing-secret-0123456789";

/// One Web API call as received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
}

#[derive(Default)]
pub struct State_ {
    pub calls: Vec<Call>,
    /// User id → deleted.
    pub users: HashMap<String, bool>,
    pub groups: HashMap<String, Vec<String>>,
    pub channels: HashSet<String>,
    /// The next N `chat.postMessage` calls answer 429 (Retry-After: 1).
    pub rate_limit_posts: u32,
    /// Every method answers 503 while set.
    pub down: bool,
    /// (channel, ts) → the message as last posted or updated.
    pub messages: HashMap<(String, String), Value>,
    pub acks: Vec<Value>,
    pub connections: u32,
    pub uploads: HashMap<String, Vec<u8>>,
    pub responses: Vec<Value>,
    next_ts: u64,
    ws_url: String,
    socket: Option<mpsc::UnboundedSender<Message>>,
}

type Shared = Arc<Mutex<State_>>;

pub struct FakeSlack {
    pub base: String,
    pub api_url: String,
    pub state: Shared,
}

fn form_or_json(headers: &HeaderMap, body: &[u8]) -> Value {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.contains("json") {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    } else {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
        Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    }
}

/// A success answer in the shape of Slack's sample for the method (every
/// field Slack has been seen to send), with `fill` setting the values that matter.
fn ok_sample(name: &str, fill: impl FnOnce(&mut Value)) -> Response {
    let mut v = sample(name);
    v["ok"] = json!(true);
    if let Some(o) = v.as_object_mut() {
        o.remove("error");
    }
    fill(&mut v);
    axum::Json(v).into_response()
}

fn err(code: &str) -> Response {
    axum::Json(json!({ "ok": false, "error": code })).into_response()
}

/// `chat.postMessage`: a 429 while `rate_limit_posts` lasts, then the message stored under a new `ts`.
fn post_message(st: &mut State_, channel: String, body: &Value) -> Response {
    if st.rate_limit_posts > 0 {
        st.rate_limit_posts -= 1;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "").into_response();
    }
    if !st.channels.contains(&channel) {
        return err("channel_not_found");
    }
    st.next_ts += 1;
    let ts = format!("1700000000.{:06}", st.next_ts);
    let mut msg = body.clone();
    msg["ts"] = json!(ts);
    st.messages.insert((channel.clone(), ts.clone()), msg.clone());
    axum::Json(json!({ "ok": true, "channel": channel, "ts": ts, "message": msg })).into_response()
}

/// `chat.update`: the stored message replaced, if there is one.
fn update_message(st: &mut State_, channel: String, body: &Value) -> Response {
    let ts = body["ts"].as_str().unwrap_or("").to_string();
    let key = (channel.clone(), ts.clone());
    if !st.messages.contains_key(&key) {
        return err("message_not_found");
    }
    st.messages.insert(key, body.clone());
    axum::Json(json!({ "ok": true, "channel": channel, "ts": ts, "text": body["text"] })).into_response()
}

/// `files.completeUploadExternal`: every file named was uploaded first.
fn complete_upload(st: &State_, body: &Value) -> Response {
    let files: Value = serde_json::from_str(body["files"].as_str().unwrap_or("[]")).unwrap_or(Value::Null);
    let known = files.as_array().is_some_and(|f| {
        f.iter().all(|x| st.uploads.get(x["id"].as_str().unwrap_or("")).is_some_and(|b| !b.is_empty()))
    });
    if !known {
        return err("invalid_arguments");
    }
    ok_sample("files.completeUploadExternal.json", |_| {})
}

fn users_info(st: &State_, body: &Value) -> Response {
    let id = body["user"].as_str().unwrap_or("").to_string();
    match st.users.get(&id).copied() {
        Some(deleted) => ok_sample("users.info.json", |v| {
            v["user"]["id"] = json!(id);
            v["user"]["deleted"] = json!(deleted);
            v["user"]["is_bot"] = json!(false);
            v["user"]["name"] = json!("UALICE"); // a name that looks like an id authorises nothing
        }),
        None => err("user_not_found"),
    }
}

async fn api(
    State((s, base)): State<(Shared, String)>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = form_or_json(&headers, &body);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut st = s.lock().unwrap();
    st.calls.push(Call { method: method.clone(), body: body.clone() });
    if st.down {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let token = if method == "apps.connections.open" { APP } else { BOT };
    if auth != format!("Bearer {token}") {
        return err("not_authed");
    }
    let channel = body["channel"].as_str().or(body["channel_id"].as_str()).unwrap_or("").to_string();
    match method.as_str() {
        "chat.postMessage" => post_message(&mut st, channel, &body),
        "chat.update" => update_message(&mut st, channel, &body),
        "chat.postEphemeral" => {
            if !st.channels.contains(&channel) {
                return err("channel_not_found");
            }
            ok_sample("chat.postEphemeral.json", |_| {})
        }
        "users.info" => users_info(&st, &body),
        "usergroups.users.list" => match st.groups.get(body["usergroup"].as_str().unwrap_or("")).cloned() {
            Some(users) => ok_sample("usergroups.users.list.json", |v| v["users"] = json!(users)),
            None => err("no_such_subteam"),
        },
        "auth.test" => ok_sample("auth.test.json", |v| {
            v["user_id"] = json!("U0BACKSTOP");
            v["team"] = json!("Example");
        }),
        "apps.connections.open" => {
            let url = st.ws_url.clone();
            ok_sample("apps.connections.open.json", |v| v["url"] = json!(url))
        }
        "files.getUploadURLExternal" => {
            let id = format!("F{:08}", st.uploads.len() + 1);
            st.uploads.insert(id.clone(), vec![]);
            ok_sample("files.getUploadURLExternal.json", |v| {
                v["upload_url"] = json!(format!("{base}/upload/{id}"));
                v["file_id"] = json!(id);
            })
        }
        "files.completeUploadExternal" => complete_upload(&st, &body),
        "views.open" => views_open(&body),
        _ => err("unknown_method"),
    }
}

/// `views.open` as Slack documents it: a trigger is needed (an expired one
/// is refused), and a modal's title is at most 24 characters, its
/// `private_metadata` at most 3000, its blocks at most 100 (`invalid_arguments`
/// otherwise). The answer is the view with an id (Slack's sample of the full
/// answer is 135 kB of every block kind, so it is not kept in `fixtures/`).
fn views_open(body: &Value) -> Response {
    let trigger = body["trigger_id"].as_str().unwrap_or("");
    if trigger.is_empty() {
        return err("invalid_trigger_id");
    }
    if trigger.contains("expired") {
        return err("expired_trigger_id");
    }
    let view = &body["view"];
    let fits = view["type"] == "modal"
        && view["title"]["text"].as_str().is_some_and(|t| !t.is_empty() && t.chars().count() <= 24)
        && view["private_metadata"].as_str().is_none_or(|m| m.chars().count() <= 3000)
        && view["blocks"].as_array().is_some_and(|b| b.len() <= 100);
    if !fits {
        return err("invalid_arguments");
    }
    let mut shown = view.clone();
    shown["id"] = json!(format!("V{}", crate_cut(trigger)));
    axum::Json(json!({ "ok": true, "view": shown })).into_response()
}

async fn upload(State((s, _)): State<(Shared, String)>, Path(id): Path<String>, body: Bytes) -> Response {
    let mut st = s.lock().unwrap();
    match st.uploads.get_mut(&id) {
        Some(b) => {
            *b = body.to_vec();
            "OK - 123".into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn respond(State((s, _)): State<(Shared, String)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    s.lock().unwrap().responses.push(v);
    "ok".into_response()
}

async fn socket(s: Shared, stream: tokio::net::TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (mut tx, mut rx) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    {
        let mut st = s.lock().unwrap();
        st.connections += 1;
        st.socket = Some(out_tx);
    }
    let hello = json!({ "type": "hello", "num_connections": 1,
        "debug_info": { "host": "applink-fake", "started": "2026-11-27 00:00:00,000", "build_number": 1,
                        "approximate_connection_time": 18060 },
        "connection_info": { "app_id": "A0TEST" } });
    if tx.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            out = out_rx.recv() => match out {
                Some(Message::Close(_)) | None => { let _ = tx.close().await; return; }
                Some(m) => if tx.send(m).await.is_err() { return },
            },
            inc = rx.next() => match inc {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    s.lock().unwrap().acks.push(v);
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

impl FakeSlack {
    /// Started on a free port, with `channels` existing.
    pub async fn start(channels: &[&str]) -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state: Shared = Arc::new(Mutex::new(State_::default()));
        state.lock().unwrap().channels = channels.iter().map(|c| c.to_string()).collect();
        let app = Router::new()
            .route("/api/{method}", post(api))
            .route("/upload/{id}", post(upload))
            .route("/respond/{id}", post(respond))
            .with_state((state.clone(), base.clone()));
        let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        state.lock().unwrap().ws_url = format!("ws://{}/socket", ws_listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let ws_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws_listener.accept().await {
                tokio::spawn(socket(ws_state.clone(), stream));
            }
        });
        FakeSlack { api_url: format!("{base}/api/"), base, state }
    }

    pub fn user(&self, id: &str, deleted: bool) {
        self.state.lock().unwrap().users.insert(id.into(), deleted);
    }

    pub fn group(&self, id: &str, members: &[&str]) {
        self.state.lock().unwrap().groups.insert(id.into(), members.iter().map(|m| m.to_string()).collect());
    }

    pub fn calls(&self, method: &str) -> Vec<Value> {
        self.state.lock().unwrap().calls.iter().filter(|c| c.method == method).map(|c| c.body.clone()).collect()
    }

    /// Wait until a call to `method` satisfies `pred`; that call's body.
    pub async fn wait_call(&self, method: &str, pred: impl Fn(&Value) -> bool, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(c) = self.calls(method).into_iter().find(|c| pred(c)) {
                return c;
            }
            assert!(start.elapsed() < within, "no matching {method} within {within:?}; calls: {:#?}", self.all_calls());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn all_calls(&self) -> Vec<(String, String)> {
        let st = self.state.lock().unwrap();
        st.calls.iter().map(|c| (c.method.clone(), crate_cut(&c.body.to_string()))).collect()
    }

    /// The ts of the first message (as posted or updated) in `channel` satisfying `pred`.
    pub fn ts_of(&self, channel: &str, pred: impl Fn(&Value) -> bool) -> Option<String> {
        let st = self.state.lock().unwrap();
        let mut found: Vec<&String> =
            st.messages.iter().filter(|((c, _), m)| c == channel && pred(m)).map(|((_, ts), _)| ts).collect();
        found.sort();
        found.first().map(|ts| ts.to_string())
    }

    /// The message at `ts` in `channel`, as last posted or updated.
    pub fn message(&self, channel: &str, ts: &str) -> Value {
        self.state.lock().unwrap().messages.get(&(channel.into(), ts.into())).cloned().unwrap_or(Value::Null)
    }

    /// Wait for a Socket Mode connection (the `n`th since start).
    pub async fn wait_connection(&self, n: u32, within: Duration) {
        let start = Instant::now();
        while self.state.lock().unwrap().connections < n {
            assert!(start.elapsed() < within, "no Socket Mode connection #{n} within {within:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Send one frame on the open Socket Mode connection.
    pub fn send(&self, frame: &Value) {
        let st = self.state.lock().unwrap();
        st.socket.as_ref().expect("a Socket Mode connection").send(Message::text(frame.to_string())).unwrap();
    }

    /// Close the connection from Slack's side without a `disconnect` frame (a network drop).
    pub fn drop_connection(&self) {
        if let Some(s) = self.state.lock().unwrap().socket.take() {
            let _ = s.send(Message::Close(None));
        }
    }

    /// Wait for the acknowledgement of `envelope_id`.
    pub async fn wait_ack(&self, envelope_id: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            if let Some(a) = self.acks(envelope_id).into_iter().next() {
                return a;
            }
            assert!(start.elapsed() < within, "no ack for {envelope_id} within {within:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn acks(&self, envelope_id: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.acks.iter().filter(|a| a["envelope_id"] == envelope_id).cloned().collect()
    }

    pub fn response_url(&self, id: &str) -> String {
        format!("{}/respond/{id}", self.base)
    }

    pub fn responses(&self) -> Vec<Value> {
        self.state.lock().unwrap().responses.clone()
    }
}

fn crate_cut(s: &str) -> String {
    s.chars().take(300).collect()
}

fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("fixtures/slack/{name}")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A `block_actions` payload (Slack's sample with every field) for a button click.
pub fn block_action(
    user: &str,
    channel: &str,
    message_ts: &str,
    action_id: &str,
    value: &str,
    action_ts: &str,
) -> Value {
    let mut p = sample("BlockActionPayload.json");
    p["type"] = json!("block_actions");
    p["user"]["id"] = json!(user);
    p["user"]["name"] = json!("alice"); // names never authorise: only the id counts
    p["container"]["channel_id"] = json!(channel);
    p["container"]["message_ts"] = json!(message_ts);
    p["channel"]["id"] = json!(channel);
    let mut action = p["actions"][0].clone();
    action["type"] = json!("button");
    action["action_id"] = json!(action_id);
    action["value"] = json!(value);
    action["action_ts"] = json!(action_ts);
    p["actions"] = json!([action]);
    p["trigger_id"] = json!(format!("trig-{action_ts}"));
    p
}

/// A `view_submission` payload (Slack's sample with every field) for the
/// clearing form `opened` (the `views.open` call's view), with `reason` typed.
pub fn view_submission(user: &str, opened: &Value, view_id: &str, reason: &str) -> Value {
    let mut p = sample("ViewSubmissionPayload.json");
    p["type"] = json!("view_submission");
    p["user"]["id"] = json!(user);
    p["view"]["id"] = json!(view_id);
    p["view"]["type"] = json!("modal");
    p["view"]["callback_id"] = opened["callback_id"].clone();
    p["view"]["private_metadata"] = opened["private_metadata"].clone();
    p["view"]["state"] =
        json!({ "values": { "reason": { "reason": { "type": "plain_text_input", "value": reason } } } });
    p
}

/// A slash command's fields (Slack's sample), with `text`.
pub fn slash(user: &str, channel: &str, text: &str, response_url: &str, trigger: &str) -> Value {
    let mut p = sample("SlashCommandPayload.json");
    p["user_id"] = json!(user);
    p["user_name"] = json!("alice");
    p["channel_id"] = json!(channel);
    p["command"] = json!("/backstop");
    p["text"] = json!(text);
    p["response_url"] = json!(response_url);
    p["trigger_id"] = json!(trigger);
    p
}

/// An `event_callback` carrying an `app_mention` (Slack's sample).
pub fn mention(event_id: &str, user: &str, channel: &str, text: &str, thread_ts: &str) -> Value {
    let mut p = sample("AppMentionPayload.json");
    p["type"] = json!("event_callback");
    p["event_id"] = json!(event_id);
    p["event"]["user"] = json!(user);
    p["event"]["channel"] = json!(channel);
    p["event"]["text"] = json!(text);
    p["event"]["ts"] = json!("1700000999.000001");
    p["event"]["thread_ts"] = json!(thread_ts);
    p
}

/// A Socket Mode envelope.
pub fn envelope(kind: &str, id: &str, payload: Value, retry_attempt: u32) -> Value {
    json!({ "envelope_id": id, "type": kind, "payload": payload,
            "accepts_response_payload": kind != "events_api", "retry_attempt": retry_attempt,
            "retry_reason": if retry_attempt > 0 { "timeout" } else { "" } })
}

/// Slash-command form body (`application/x-www-form-urlencoded`), as Slack sends it.
pub fn form(payload: &Value) -> String {
    let pairs: Vec<(String, String)> = payload
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
        .collect();
    serde_urlencoded::to_string(pairs).unwrap()
}
