//! A real llama.cpp `llama-server` (built once per machine by
//! `scripts/llama-server.sh`) serving a seeded random-weight GGUF written by
//! `tests/support/random_gguf.py`, behind a recording proxy: every request
//! body and the status llama-server answered are kept for assertions, and a
//! client that gives up is seen as a dropped request.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// One proxied request and what llama-server answered.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub path: String,
    pub request: Value,
    /// `None` when the client went away before llama-server answered.
    pub status: Option<u16>,
    pub response: String,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<Exchange>>>,
    /// Milliseconds to wait before forwarding (the timeout test).
    delay_ms: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// One real model at a time: two llama-servers on the suite's two shared
/// cores starve each other (a CI run saw one SmolLM2 consultation pass
/// 300 s), so a real model's server waits for the previous one to end.
static REAL_MODEL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Llama {
    child: Child,
    /// Held while a real model serves; released after the child is killed.
    _turn: Option<tokio::sync::MutexGuard<'static, ()>>,
    _dir: tempfile::TempDir,
    /// Base URL of the proxy, with `/v1`.
    pub base_url: String,
    proxy: Proxy,
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The llama-server binary: `LLAMA_SERVER_BIN`, else the cached build
/// (built now if missing, as the test script does).
fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("LLAMA_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash").arg("scripts/llama-server.sh").stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "scripts/llama-server.sh failed; the interop tier needs llama-server");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Python with the `gguf` package: `INTEROP_PYTHON`, else the test
/// script's virtual environment under `target/`.
fn python() -> PathBuf {
    let p = std::env::var("INTEROP_PYTHON").map(PathBuf::from).unwrap_or_else(|_| "target/py/bin/python".into());
    assert!(p.exists(), "{}: no Python with `gguf`; run scripts/test.sh, which creates it", p.display());
    p
}

/// Write the random-weight model (seeded; well under a second).
pub fn write_model(path: &Path, seed: u64) {
    let status = Command::new(python())
        .args(["tests/support/random_gguf.py", &path.display().to_string(), &seed.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "random_gguf.py failed");
    assert!(std::fs::metadata(path).unwrap().len() > 100_000);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Llama {
    /// Start `llama-server --jinja` with the random-weight model on a free
    /// loopback port, and the proxy in front of it.
    pub async fn start() -> Llama {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("random.gguf");
        write_model(&model, 7);
        Self::serve(dir, &model, 32_768, 1).await
    }

    /// The same with a real model on both cores: the GGUF named by `var`,
    /// else the one `script` fetches (as the test script does) — SmolLM2
    /// (`SMOLLM2_GGUF`, `scripts/smollm2.sh`) or Gemma 3 (`GEMMA3_GGUF`, `scripts/gemma3.sh`).
    pub async fn start_real(var: &str, script: &str, context: u32) -> Llama {
        let model = std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| {
            let out = Command::new("bash")
                .args([script, &python().display().to_string()])
                .stderr(Stdio::inherit())
                .output()
                .unwrap();
            assert!(out.status.success(), "{script} failed; the real-model tier needs its model");
            PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        });
        assert!(model.exists(), "{}: no GGUF ({var})", model.display());
        let turn = REAL_MODEL.lock().await;
        let mut llama = Self::serve(tempfile::tempdir().unwrap(), &model, context, 2).await;
        llama._turn = Some(turn);
        llama
    }

    async fn serve(dir: tempfile::TempDir, model: &Path, context: u32, threads: u32) -> Llama {
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("llama-server.log")).unwrap();
        let child = Command::new(binary())
            .args(["-m", &model.display().to_string(), "--jinja", "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "-c", &context.to_string(), "-np", "1"])
            // No busy-polling between batches: the cores are shared with
            // the rest of the suite, and a spinning thread starves them.
            .args(["-t", &threads.to_string(), "--poll", "0"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let upstream = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{upstream}/health")).send().await
                && r.status().is_success()
            {
                break;
            }
            let log = std::fs::read_to_string(dir.path().join("llama-server.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "llama-server did not become healthy in 60 s:\n{log}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let proxy = Proxy { upstream, http, seen: Arc::default(), delay_ms: Arc::default(), dropped: Arc::default() };
        let app = Router::new().fallback(forward).with_state(proxy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Llama { child, _turn: None, _dir: dir, base_url, proxy }
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        self.proxy.seen.lock().unwrap().clone()
    }

    /// Hold every request this long before forwarding it.
    pub fn delay(&self, ms: u64) {
        self.proxy.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests whose client disconnected before llama-server was asked.
    pub fn dropped(&self) -> u64 {
        self.proxy.dropped.load(Ordering::SeqCst)
    }

    /// llama-server's idle/processing state of its one slot.
    pub async fn slot_busy(&self) -> bool {
        let r = self.proxy.http.get(format!("{}/slots", self.proxy.upstream)).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v.as_array().unwrap().iter().any(|s| s["is_processing"].as_bool().unwrap_or(false))
    }
}

/// Counts a request as dropped unless it reached llama-server.
struct DropWatch {
    dropped: Arc<AtomicU64>,
    armed: bool,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if self.armed {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn forward(State(p): State<Proxy>, method: Method, uri: Uri, body: Bytes) -> Response {
    let mut watch = DropWatch { dropped: p.dropped.clone(), armed: true };
    let delay = p.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    watch.armed = false;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let url = format!("{}{}", p.upstream, uri.path_and_query().map(|q| q.as_str()).unwrap_or("/"));
    let reply = p.http.request(method, url).header("content-type", "application/json").body(body).send().await;
    let (status, text) = match reply {
        Ok(r) => {
            let status = r.status().as_u16();
            (Some(status), r.text().await.unwrap_or_default())
        }
        Err(e) => (None, e.to_string()),
    };
    // Chat completions are the exchanges under test; backstop's `/props` and
    // `/tokenize` probes are forwarded without being kept.
    if uri.path().ends_with("/chat/completions") {
        p.seen.lock().unwrap().push(Exchange { path: uri.path().to_string(), request, status, response: text.clone() });
    }
    let code = status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
    (code, [("content-type", "application/json")], text).into_response()
}
