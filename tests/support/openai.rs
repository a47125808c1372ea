//! A local server speaking the Chat Completions wire format: it answers
//! with the recorded responses of a `fixtures/model/*.json` file in order and
//! keeps every request (path, query, headers, JSON body) for assertions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
struct Script {
    responses: Arc<Mutex<VecDeque<Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct FakeOpenAi {
    pub base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeOpenAi {
    /// Serve the responses recorded in `fixtures/model/{name}`.
    pub async fn start(name: &str) -> FakeOpenAi {
        let text = std::fs::read_to_string(format!("fixtures/model/{name}")).unwrap();
        let fixture: Value = serde_json::from_str(&text).unwrap();
        let responses = fixture["responses"].as_array().unwrap().iter().cloned().collect();
        let script = Script { responses: Arc::new(Mutex::new(responses)), seen: Arc::new(Mutex::new(vec![])) };
        let seen = script.seen.clone();
        let app = Router::new().fallback(answer).with_state(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeOpenAi { base_url: format!("http://127.0.0.1:{port}/v1"), seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(State(s): State<Script>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    // Only Chat Completions is scripted: llama.cpp's `/props` and `/tokenize`
    // are not part of this wire format, so a probe for them finds nothing.
    if !uri.path().ends_with("/chat/completions") {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    s.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    let Some(next) = s.responses.lock().unwrap().pop_front() else {
        return (StatusCode::GONE, "the fixture has no more responses").into_response();
    };
    if let Some(ms) = next["delay_ms"].as_u64() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = StatusCode::from_u16(next["status"].as_u64().unwrap() as u16).unwrap();
    let mut response = match &next["body"] {
        Value::String(text) => (status, text.clone()).into_response(),
        body => (status, axum::Json(body.clone())).into_response(),
    };
    if let Some(h) = next["headers"].as_object() {
        for (k, v) in h {
            response
                .headers_mut()
                .insert(axum::http::HeaderName::try_from(k.as_str()).unwrap(), v.as_str().unwrap().parse().unwrap());
        }
    }
    response
}
