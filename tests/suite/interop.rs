//! The interop tier: the model path against a real llama.cpp `llama-server`
//! (`--jinja`, built from the pinned llama-cpp-python sdist) serving a
//! random-weight model. Random weights cannot judge anything: these tests
//! prove the wire — every request answered 2xx, the request shape the server
//! needs (`max_tokens`, `tool_choice`, no `response_format` on tool turns),
//! every verdict accepted or rejected with a reason — and that a model never
//! makes a decision looser than the judge's alone.

use serde_json::Value;

use crate::support::llama::{Exchange, Llama};

fn backstop(args: &[&str]) -> std::process::Output {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .args(args)
        .output()
        .unwrap()
}

/// The simulator config with `[model]` pointing at `base_url`, ticking every
/// 30 s. The whole consultation may take as long as one request (at least 8 s): a
/// random-weight model on two shared CPU cores, with the rest of the suite
/// running, needs more than a production deadline to finish both turns.
fn config(dir: &std::path::Path, base_url: &str, timeout_s: u64) -> String {
    // A 30 s tick: the consultation is also held under 80 % of the tick.
    let text = crate::support::fixture_config("simulator.toml");
    let mut text = text.replace("[[releases]]\n", "[[releases]]\ntick_s = 30\n");
    let deadline = timeout_s.max(8);
    text.push_str(&format!(
        "\n[model]\nbase_url = \"{base_url}\"\nname = \"random\"\napi_key_env = \"MODEL_TEST_API_KEY\"\n\
         timeout_s = {timeout_s}\nmax_retries = 0\nmax_tokens = 256\nconsultation_deadline_s = {deadline}\n"
    ));
    let path = dir.join(format!("backstop-{timeout_s}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Strictness of a decision: a model may raise it, never lower it.
fn rank(decision: &str) -> u8 {
    match decision {
        "promote" => 0,
        "continue" | "inconclusive" => 1,
        "hold" | "require_approval" | "deny" | "escalate" => 2,
        "rollback" => 3,
        other => panic!("unknown decision {other}"),
    }
}

fn advise(cfg: Option<&str>, release: &str, ledger: &str) -> Value {
    let mut args = vec![];
    if let Some(cfg) = cfg {
        args.extend(["--config", cfg]);
    } else {
        args.extend(["--config", "fixtures/config/simulator.toml"]);
    }
    args.extend(["advise", "--release", release, "--pace-ms", "0", "--format", "json", "--ledger", ledger]);
    let out = backstop(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What every request to llama-server must look like, and how it must end.
fn assert_wire(exchanges: &[Exchange]) {
    // Both kinds of turn reached the real server: tools offered, and the
    // structured verdict asked for (json_schema, or JSON mode after a refusal).
    assert!(exchanges.iter().any(|x| x.request["tools"].is_array()), "no tools turn");
    assert!(exchanges.iter().any(|x| x.request["response_format"].is_object()), "no verdict turn");
    assert_requests(exchanges, 256);
}

/// Every request answered 200, with `max_tokens` and the shape of its turn.
fn assert_requests(exchanges: &[Exchange], max_tokens: u64) {
    assert!(!exchanges.is_empty(), "the model was never asked");
    for x in exchanges {
        assert_eq!(x.path, "/v1/chat/completions");
        assert_eq!(x.status, Some(200), "llama-server answered {:?}: {}\n{}", x.status, x.response, x.request);
        let body = &x.request;
        assert!(body["max_tokens"].as_u64().is_some_and(|n| n == max_tokens), "max_tokens sent: {body}");
        let tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
        if tools {
            assert_eq!(body["tool_choice"], "auto", "tools offered with tool_choice auto");
            assert!(body.get("response_format").is_none(), "no response_format on a tools turn: {body}");
        }
        for m in body["messages"].as_array().unwrap() {
            if m["role"] == "assistant" {
                assert!(m["content"].is_string(), "an echoed assistant turn carries content: {m}");
            }
        }
    }
}

/// Every consultation in the ledger: accepted, or rejected / unavailable with a reason.
async fn assert_consultations_explained(ledger: &str) -> usize {
    let l = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(std::path::Path::new(ledger))).await.unwrap();
    let mut n = 0;
    for r in l.list(None, 100_000).await.unwrap().iter().filter(|r| r.kind == "tick") {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let c = &body["consultation"];
        if c.is_null() {
            continue;
        }
        n += 1;
        let accepted = c["input"]["status"] == "verdict";
        let rejected = c["rejection"].is_object() || c["rejection"].is_string();
        let failed = c["error"].as_str().is_some_and(|e| !e.is_empty());
        assert!(accepted || rejected || failed, "a consultation without verdict or reason: {c}");
        if !accepted {
            assert_eq!(c["input"]["status"], "unavailable", "{c}");
            assert!(c["input"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "{c}");
        }
    }
    n
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs llama-server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advise_and_demo_through_llama_server_keep_the_wire_and_never_loosen_a_decision() {
    let llama = Llama::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &llama.base_url, 60);
    for release in ["search", "checkout"] {
        let (with, ledger) = advise_pair(dir.path(), &cfg, release).await;
        let w = with["status"]["decision"]["decision"].as_str().unwrap();
        if release == "checkout" {
            assert_eq!(w, "rollback", "a failing judge is not overruled");
        }
        let consulted = assert_consultations_explained(&ledger).await;
        if release == "search" {
            assert!(consulted >= 1, "a passing judge asks the model before promotion");
            assert!(with["model"]["usage"]["calls"].as_u64().unwrap() >= 2, "{}", with["model"]);
        }
    }
    // A memory leak is suspect at one look (the model is asked) before the judge fails it; an
    // error spike and a latency regression no longer pass through that look (their sequential
    // evidence fails them first), so the model would not be heard there.
    for (scenario, expect) in [("healthy", None), ("memory-leak", Some("rollback.within_policy"))] {
        let (text, rules, ledger) = demo(dir.path(), &cfg, scenario).await;
        match expect {
            Some(rule) => assert!(rules.contains(rule), "{rules}"),
            None => assert!(!rules.contains("rollback"), "a healthy canary is not rolled back: {rules}"),
        }
        assert!(text.lines().any(|l| l.starts_with("model: random")), "{text}");
        assert_consultations_explained(&ledger).await;
    }
    assert_wire(&llama.exchanges());
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs llama-server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_with_the_model_judge_through_llama_server_is_never_looser_than_the_judge() {
    let llama = Llama::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &llama.base_url, 60);
    let scenarios = [
        "fixtures/scenarios/holdout/holdout-good-healthy-000.json",
        "fixtures/scenarios/holdout/holdout-bad-crash-loop-medium-low-traffic-000.json",
        "fixtures/scenarios/holdout/holdout-good-noisy-000.json",
    ];
    assert_eq!(eval_never_looser(&cfg, &scenarios).await, scenarios.len());
    assert_wire(&llama.exchanges());
}

/// A model slower than `timeout_s` is abandoned: the request is dropped
/// before llama-server computes anything, llama-server is left idle, and
/// the decision is the judge's alone.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs llama-server")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_past_its_timeout_is_cancelled_and_the_judge_decides_alone() {
    let llama = Llama::start().await;
    llama.delay(3_000);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &llama.base_url, 1);
    let ledger = dir.path().join("t.db").display().to_string();
    let with = tokio::task::spawn_blocking({
        let ledger = ledger.clone();
        move || advise(Some(&cfg), "search", &ledger)
    })
    .await
    .unwrap();
    let alone = advise(None, "search", &dir.path().join("alone.db").display().to_string());
    assert_eq!(with["status"]["decision"], alone["status"]["decision"]);
    assert!(with["model"]["status"].as_str().unwrap().contains("timed out"), "{}", with["model"]);
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    assert!(llama.dropped() >= 1, "the client went away before the server was asked");
    assert!(llama.exchanges().is_empty(), "no abandoned request reached llama-server");
    assert!(!llama.slot_busy().await, "llama-server is idle");
    assert!(assert_consultations_explained(&ledger).await >= 1);
}

/// The simulator config with SmolLM2 behind `base_url`. Demos, `advise
/// --pace-ms 0` and `eval` run in simulated time, so each tick waits for the
/// answer up to the deadline: 300 s, far above what one consultation takes
/// here, so every answer is heard. Two turns (tools, then the verdict) and
/// 320 tokens per reply bound the time a degenerate answer can take.
fn smollm2_config(dir: &std::path::Path, base_url: &str) -> String {
    real_config(dir, base_url, "smollm2")
}

fn real_config(dir: &std::path::Path, base_url: &str, name: &str) -> String {
    let mut text = crate::support::fixture_config("simulator.toml");
    text.push_str(&format!(
        "\n[model]\nbase_url = \"{base_url}\"\nname = \"{name}\"\napi_key_env = \"MODEL_TEST_API_KEY\"\n\
         timeout_s = 300\nmax_retries = 0\nmax_tokens = 320\nmax_turns = 2\nconsultation_deadline_s = 300\n"
    ));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Every consultation in the ledger ended within its deadline (answered,
/// or failed for another recorded reason), and its prompt size is recorded.
async fn assert_in_time(ledger: &str, deadline_ms: u64) -> Vec<Value> {
    let l = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(std::path::Path::new(ledger))).await.unwrap();
    let mut out = vec![];
    for r in l.list(None, 100_000).await.unwrap().iter().filter(|r| r.kind == "tick") {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let c = body["consultation"].clone();
        if c.is_null() {
            continue;
        }
        assert!(!c["error"].as_str().unwrap_or("").contains("deadline"), "a consultation ran out of time: {c}");
        assert!(c["elapsed_ms"].as_u64().unwrap() <= deadline_ms, "{c}");
        assert!(c["prompt"]["tokens"].as_u64().unwrap() > 0, "{c}");
        out.push(c);
    }
    out
}

/// `demo --scenario` through the model of `cfg` (ledger in `dir`), run to
/// success: its output, its `policy rules:` line and its ledger.
async fn demo(dir: &std::path::Path, cfg: &str, scenario: &str) -> (String, String, String) {
    let ledger = dir.join(format!("demo-{scenario}.db")).display().to_string();
    let args = ["--config", cfg, "demo", "--scenario", scenario, "--tick-ms", "0", "--plain", "--ledger", &ledger];
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || backstop(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let rules = text.lines().find(|l| l.starts_with("policy rules:")).unwrap().to_string();
    (text, rules, ledger)
}

/// `advise` on `release` with the judge alone and with the model of `cfg`
/// (ledger in `dir`): the model's decision is never looser. Its JSON and ledger.
async fn advise_pair(dir: &std::path::Path, cfg: &str, release: &'static str) -> (Value, String) {
    let ledger = dir.join(format!("{release}.db")).display().to_string();
    let alone = advise(None, release, &dir.join(format!("{release}-alone.db")).display().to_string());
    let with = tokio::task::spawn_blocking({
        let (cfg, ledger) = (cfg.to_string(), ledger.clone());
        move || advise(Some(&cfg), release, &ledger)
    })
    .await
    .unwrap();
    let (a, w) = (
        alone["status"]["decision"]["decision"].as_str().unwrap(),
        with["status"]["decision"]["decision"].as_str().unwrap(),
    );
    assert!(rank(w) >= rank(a), "{release}: judge alone {a}, with the model {w}");
    (with, ledger)
}

/// `eval` with the judge alone and with the model of `cfg` on `scenarios`:
/// no decision looser with the model. The number of releases compared.
async fn eval_never_looser(cfg: &str, scenarios: &[&str]) -> usize {
    let mut args = vec!["--config", cfg, "eval", "--judge", "backstop", "--judge", "backstop+model"];
    args.extend(scenarios);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || backstop(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = |judge: &str| report["judges"][judge]["results"].as_array().unwrap().clone();
    let (alone, with) = (results("backstop"), results("backstop+model"));
    for (a, w) in alone.iter().zip(&with) {
        assert_eq!(a["scenario"], w["scenario"]);
        let (a, w) = (a["decision"].as_str().unwrap(), w["decision"].as_str().unwrap());
        assert!(rank(w) >= rank(a), "judge alone {a}, with the model {w}");
    }
    alone.len().min(with.len())
}

/// `advise` on a failing and a healthy release with the judge alone and with
/// the model of `cfg`: never looser, every consultation explained and in
/// time. The consultations taken.
async fn advise_through(dir: &std::path::Path, cfg: &str) -> Vec<Value> {
    let mut consultations = vec![];
    for release in ["checkout", "search"] {
        let (_, ledger) = advise_pair(dir, cfg, release).await;
        assert_consultations_explained(&ledger).await;
        consultations.extend(assert_in_time(&ledger, 300_000).await);
    }
    consultations
}

/// The real-model tier: SmolLM2-135M-Instruct, a real (tiny) instruct model,
/// served by llama-server `--jinja`, judges canaries through `advise`, `demo`
/// and `eval`. A 135M model judges poorly; what must hold is what backstop
/// promises with any model: every request answered 2xx, every verdict
/// accepted or rejected with a recorded reason, every consultation within
/// its deadline, and no decision looser than the judge's alone.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs llama-server and SmolLM2 (scripts/smollm2.sh)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_instruct_model_is_heard_and_never_loosens_a_decision() {
    let llama = Llama::start_real("SMOLLM2_GGUF", "scripts/smollm2.sh", 8192).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = smollm2_config(dir.path(), &llama.base_url);
    let mut consultations = advise_through(dir.path(), &cfg).await;
    for scenario in ["healthy", "error_spike"] {
        let (_, rules, ledger) = demo(dir.path(), &cfg, scenario).await;
        if scenario == "error_spike" {
            assert!(rules.contains("rollback.within_policy"), "the judge's rollback stands: {rules}");
        } else {
            assert!(!rules.contains("rollback"), "a healthy canary is not rolled back: {rules}");
        }
        assert_consultations_explained(&ledger).await;
        consultations.extend(assert_in_time(&ledger, 300_000).await);
    }
    let scenarios = [
        "fixtures/scenarios/holdout/holdout-good-healthy-000.json",
        "fixtures/scenarios/holdout/holdout-bad-crash-loop-medium-low-traffic-000.json",
    ];
    assert_eq!(eval_never_looser(&cfg, &scenarios).await, scenarios.len());
    let exchanges = llama.exchanges();
    assert_requests(&exchanges, 320);
    assert!(!consultations.is_empty(), "SmolLM2 was consulted");
    let accepted = consultations.iter().filter(|c| c["input"]["status"] == "verdict").count();
    let ms: Vec<u64> = consultations.iter().map(|c| c["elapsed_ms"].as_u64().unwrap()).collect();
    eprintln!(
        "SmolLM2: {} consultations, {} accepted, {} requests, slowest {} ms, prompts {:?} tokens",
        consultations.len(),
        accepted,
        exchanges.len(),
        ms.iter().max().unwrap(),
        consultations.iter().map(|c| c["prompt"]["tokens"].as_u64().unwrap()).collect::<Vec<_>>()
    );
}

/// The tier's second chat template: Gemma 3 270M (its own template, no
/// system role of its own) through `advise` on a failing and a healthy
/// release, with the same promises as SmolLM2's test.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs llama-server and Gemma 3 270M (scripts/gemma3.sh)")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_chat_template_gemma3_is_heard_and_never_loosens_a_decision() {
    let llama = Llama::start_real("GEMMA3_GGUF", "scripts/gemma3.sh", 4096).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = real_config(dir.path(), &llama.base_url, "gemma3");
    let consultations = advise_through(dir.path(), &cfg).await;
    assert_requests(&llama.exchanges(), 320);
    assert!(!consultations.is_empty(), "Gemma 3 was consulted");
}
