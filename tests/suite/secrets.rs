//! Marker secrets in every credential slot — URL user-info, password and
//! token query values, a Prometheus bearer token, the model's API key, the webhook's signing secret, a
//! variable passed through to a command (which prints it), a kubeconfig
//! token, an MLflow registry's URL credentials and bearer token, a
//! `session=` and a `code=` parameter, a model server that quotes the key it
//! refuses, a command printing a variable in base64 — then `watch`, `advise` (all three formats), `serve` (every
//! contract), `audit`, `config check` and `demo` at `RUST_LOG=trace`: no
//! marker in any output, report, gate answer, or byte of the ledger.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};

use crate::support::openai::FakeOpenAi;

/// Every marker shares this prefix, so one search finds any of them.
const MARK: &str = "S3CRETMARK";
const BAD: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/scenarios/holdout/holdout-bad-error-spike-strong-traffic-000.json");
const GOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/scenarios/holdout/holdout-good-healthy-000.json");

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("SWEEP_HOOK_SECRET", format!("{MARK}-hook")),
        ("SWEEP_PASSED_ENV", format!("{MARK}-env")),
        ("SWEEP_MODEL_KEY", format!("{MARK}-apikey")),
        ("SWEEP_PROM_TOKEN", format!("{MARK}-promtoken")),
        ("SWEEP_MLFLOW_TOKEN", format!("{MARK}-mlflowtoken")),
        ("RUST_LOG", "trace".into()),
    ]
}

/// The webhook's receiver, and an MLflow registry's alias endpoint (whose
/// POSTs are counted with the webhook's).
async fn receiver() -> (String, Arc<Mutex<u32>>) {
    let posts = Arc::new(Mutex::new(0));
    let seen = posts.clone();
    let alias_seen = posts.clone();
    let alias = "/api/2.0/mlflow/registered-models/alias";
    let app = Router::new()
        .route(
            alias,
            post(move || {
                let seen = alias_seen.clone();
                async move {
                    *seen.lock().unwrap() += 1;
                    axum::Json(serde_json::json!({}))
                }
            })
            .get(|| async { axum::Json(serde_json::json!({ "model_version": { "version": "41" } })) }),
        )
        .route(
            "/hook",
            post(move || {
                let seen = seen.clone();
                async move {
                    *seen.lock().unwrap() += 1;
                    "accepted"
                }
            }),
        )
        .route("/state", get(|| async { axum::Json(serde_json::json!({ "revision": "v41" })) }))
        // A model server that refuses the key and quotes it back, as OpenAI's 401 does.
        .route(
            "/echo401/v1/chat/completions",
            post(|headers: axum::http::HeaderMap| async move {
                let key = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let body = serde_json::json!({ "error": { "message": format!("Incorrect API key provided: {key}"),
                    "type": "invalid_request_error", "code": "invalid_api_key" } });
                (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), posts)
}

fn config(dir: &Path, hook: &str, model: &str) -> std::path::PathBuf {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:1\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n\
             users:\n- name: u\n  user:\n    token: {MARK}-kubetoken\n"
        ),
    )
    .unwrap();
    let release = |name: &str, source: &str, executor: &str| {
        format!(
            "[[releases]]\nname = \"{name}\"\nservice = \"checkout\"\ntarget = \"t/{name}\"\n\
             candidate_revision = \"v42\"\nlast_known_good = \"v41\"\nsource = {source}\nexecutor = {executor}\n\n"
        )
    };
    let scenario = format!(r#"{{ kind = "scenario", path = "{BAD}" }}"#);
    let prom = format!(
        r#"{{ kind = "prometheus", url = "http://{MARK}-user:{MARK}-pass@127.0.0.1:1/?password={MARK}-pw&token={MARK}-qtoken", baseline = "stable", canary = "canary", step_s = 10, duration_s = 30, timeout_s = 1, metrics = [{{ name = "errors", unit = "ratio", bad_direction = "up", query = "x" }}], auth = {{ kind = "bearer", token_env = "SWEEP_PROM_TOKEN" }} }}"#
    );
    let text = [
        release(
            "hook",
            &scenario,
            &format!(
                r#"{{ kind = "webhook", url = "{hook}/hook?token={MARK}-hooktoken&session={MARK}-session", verify_url = "{hook}/state?key={MARK}-verifykey&code={MARK}-code", secret_env = "SWEEP_HOOK_SECRET", allow_http = true, retries = 0 }}"#
            ),
        ),
        release(
            "cmd",
            &scenario,
            r#"{ kind = "command", rollback = ["sh", "-c", "echo rolling back with $SWEEP_PASSED_ENV; env; printf %s \"$SWEEP_PASSED_ENV\" | base64"], verify = ["true"], env_allowlist = ["PATH", "SWEEP_PASSED_ENV"] }"#,
        ),
        release("prom", &prom, r#"{ kind = "simulator" }"#).replace("executor = { kind = \"simulator\" }\n", ""),
        release(
            "k8s",
            &scenario,
            &format!(
                r#"{{ kind = "kubernetes", workload = "deployment", namespace = "shop", name = "checkout", kubeconfig = "{}" }}"#,
                kubeconfig.display()
            ),
        ),
        format!(
            "[[releases]]\nname = \"mlflow\"\nservice = \"checkout\"\ntarget = \"t/mlflow\"\n\
             candidate_revision = \"42\"\nlast_known_good = \"41\"\nsource = {scenario}\n\
             executor = {{ kind = \"mlflow\", tracking_uri = \"{}\", model = \"checkout\", token_env = \"SWEEP_MLFLOW_TOKEN\" }}\n\n",
            hook.replacen("http://", &format!("http://{MARK}-mluser:{MARK}-mlpass@"), 1)
        ),
        format!(
            "[model]\nbase_url = \"{model}\"\nname = \"sweep\"\napi_key_env = \"SWEEP_MODEL_KEY\"\ntimeout_s = 2\nmax_retries = 0\n"
        ),
    ]
    .concat();
    let path = dir.join("backstop.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str]) -> Output {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("backstop"));
    c.env_remove("BACKSTOP_CONFIG").envs(env()).args(args);
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Everything the gate answers for each release and contract.
fn gate_answers(cfg: &str, ledger: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .envs(env())
        .args(["--config", cfg, "serve", "--listen", &format!("127.0.0.1:{port}"), "--pace-ms", "1"])
        .args(["--ledger", ledger])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes while the server runs: at `RUST_LOG=trace` it writes
    // more than a pipe holds, and a full pipe would stall it mid-log.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        })
    };
    let mut child = child;
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::suite::watch::http_get(port, "/healthz").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut all = String::new();
    for release in ["hook", "cmd", "prom", "k8s"] {
        for contract in ["", "?contract=flagger-rollout", "?contract=flagger-confirm-promotion"] {
            let (code, body) = crate::suite::watch::http_get(port, &format!("/v1/gates/{release}{contract}"))
                .unwrap_or_else(|| panic!("gate for {release} did not answer"));
            assert!(code == 200 || code == 412, "{release}{contract}: {code} {body}");
            all.push_str(&body);
        }
    }
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait().unwrap();
    all.push_str(&stdout.join().unwrap());
    all.push('\n');
    all.push_str(&stderr.join().unwrap());
    all
}

fn ledger_bytes(dir: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".db") || name.ends_with(".db-wal") {
            all.push_str(&String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()));
        }
    }
    all
}

/// What every command prints (and the HTML reports it writes), by name:
/// config check, watch (JSON and text; one with a model that quotes its key
/// back, configured by `echo`), advise of each release in each format, the
/// gate's answers, audit list and verify, demo.
fn every_output(cfg_s: &str, ledger: &str, echo: (&str, &str), html: &Path) -> Vec<(String, String)> {
    let (echo_cfg, echo_ledger) = echo;
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut add = |what: &str, o: Output| seen.push((what.to_string(), text(&o)));
    add("config check", run(&["--config", cfg_s, "config", "check", "--ledger", ledger]));
    add("watch", run(&["--config", cfg_s, "watch", "--pace-ms", "0", "--format", "json", "--ledger", ledger]));
    add("watch text", run(&["--config", cfg_s, "watch", "--pace-ms", "0", "--ledger", ledger]));
    let echo = ["--config", echo_cfg, "watch", "--release", "cmd", "--pace-ms", "0", "--format", "json"];
    add("watch, model quoting its key", run(&[&echo[..], &["--ledger", echo_ledger]].concat()));
    let mut html_files = String::new();
    for release in ["hook", "cmd", "prom", "k8s", "mlflow"] {
        for format in ["markdown", "json"] {
            let args = ["--config", cfg_s, "advise", "--release", release, "--pace-ms", "0", "--format", format];
            add(&format!("advise {release} {format}"), run(&[&args[..], &["--ledger", ledger]].concat()));
        }
        let html_s = html.to_str().unwrap();
        let args = ["--config", cfg_s, "advise", "--release", release, "--pace-ms", "0", "--format", "html"];
        add(&format!("advise {release} html"), run(&[&args[..], &["--out", html_s, "--ledger", ledger]].concat()));
        html_files.push_str(&std::fs::read_to_string(html).unwrap_or_default());
    }
    let gate = gate_answers(cfg_s, ledger);
    add("audit list", run(&["audit", "list", "--limit", "100000", "--ledger", ledger]));
    add("audit verify", run(&["audit", "verify", "--ledger", ledger]));
    add("demo", run(&["--config", cfg_s, "demo", "--tick-ms", "0", "--ledger", ledger]));
    seen.push(("html files".into(), html_files));
    seen.push(("gate".into(), gate));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output_report_gate_answer_or_the_ledger() {
    let (hook, posts) = receiver().await;
    let model = FakeOpenAi::start("happy-path-tools.json").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &hook, &model.base_url);
    // A healthy release, so the model is asked before the promotion (and refuses the key).
    let echo_dir = tempfile::tempdir().unwrap();
    let echo_cfg = echo_dir.path().join("backstop.toml");
    std::fs::write(
        &echo_cfg,
        format!(
            "[[releases]]\nname = \"cmd\"\nservice = \"checkout\"\ntarget = \"t/cmd\"\ncandidate_revision = \"v42\"\n\
             last_known_good = \"v41\"\nsource = {{ kind = \"scenario\", path = \"{GOOD}\" }}\n\
             [model]\nbase_url = \"{hook}/echo401/v1\"\nname = \"sweep\"\napi_key_env = \"SWEEP_MODEL_KEY\"\n\
             timeout_s = 2\nmax_retries = 0\n"
        ),
    )
    .unwrap();
    let echo_cfg = echo_cfg.to_str().unwrap().to_string();
    let echo_ledger = echo_dir.path().join("l.db").to_str().unwrap().to_string();
    let (cfg_s, ledger) = (cfg.to_str().unwrap().to_string(), dir.path().join("l.db").to_str().unwrap().to_string());
    let html = dir.path().join("report.html");
    let outputs = tokio::task::spawn_blocking(move || every_output(&cfg_s, &ledger, (&echo_cfg, &echo_ledger), &html))
        .await
        .unwrap();
    let mut hits = Vec::new();
    let ledgers = [
        ("ledger bytes".to_string(), ledger_bytes(dir.path())),
        ("ledger bytes, model quoting its key".to_string(), ledger_bytes(echo_dir.path())),
    ];
    for (what, out) in outputs.iter().chain(ledgers.iter()) {
        assert!(!out.trim().is_empty(), "{what} printed nothing");
        if let Some(at) = out.find(MARK) {
            let from = out[..at].char_indices().rev().nth(120).map_or(0, |(i, _)| i);
            let to = out[at..].char_indices().nth(120).map_or(out.len(), |(i, _)| at + i);
            hits.push(format!("{what}: …{}…", &out[from..to]));
        }
    }
    assert!(hits.is_empty(), "secrets leaked:\n{}", hits.join("\n\n"));
    // The sweep covered real work: the webhook was called, the command ran and the model was asked.
    assert!(*posts.lock().unwrap() >= 2, "the webhook and the registry never both received the rollback");
    assert!(!model.requests().is_empty(), "the model was never consulted");
    let bytes = ledger_bytes(dir.path());
    assert!(bytes.contains("rolling back with"), "the command's output (masked) is in the ledger");
    let echoed = ledger_bytes(echo_dir.path());
    assert!(echoed.contains("Incorrect API key provided"), "the model's refusal is recorded (with the key masked)");
}
