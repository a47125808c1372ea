//! Every parser of outside input under mutation: scenario files, policy
//! files, configuration with `BACKSTOP_*` overrides, and the model's verdict.
//! Valid documents are cut, spliced, duplicated and salted with hostile
//! values; each parse must end quickly with a value or an error that names
//! the file (and, for a wrong value, the field) — never a panic or a hang.
//! (The Prometheus answer parser has its own property test in
//! `signals::prometheus::samples_tests`.)

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use backstop::config::Settings;
use backstop::judge::{JudgeConfig, judge};
use backstop::policy::PolicyFile;
use backstop::signals::{ReplaySource, SignalSource, parse_scenario};

/// Values that have broken parsers elsewhere.
const HOSTILE: &[&str] = &[
    "",
    "0",
    "-1",
    "1e400",
    "-1e400",
    "NaN",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "null",
    "[]",
    "{}",
    "\"\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "true",
    "[[[[[[[[[[]]]]]]]]]]",
    "\"\u{202e}x\"",
    "0.0000001",
    "4294967296",
    "\"a\\nb\"",
    "inf",
    "'",
    "\"",
    "=",
    "[[",
    "]]",
    "#",
];

/// One edit of a document: byte positions are taken modulo its length and
/// moved to a character boundary.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Duplicate(usize, usize),
    Hostile(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), "[ -~\n]{1,12}").prop_map(|(a, s)| Edit::Insert(a, s)),
        (any::<usize>(), 1usize..200).prop_map(|(a, n)| Edit::Duplicate(a, n)),
        (any::<usize>(), 0..HOSTILE.len()).prop_map(|(a, h)| Edit::Hostile(a, h)),
    ];
    prop::collection::vec(edit, 1..4)
}

fn boundary(s: &str, at: usize) -> usize {
    let mut i = at % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Apply `edits`; a hostile value replaces the next value-like token (after `:` or `=`).
fn mutate(doc: &str, edits: &[Edit]) -> String {
    let mut s = doc.to_string();
    for e in edits {
        match e {
            Edit::Delete(a, n) => {
                let a = boundary(&s, *a);
                let b = boundary(&s, a + n);
                s.replace_range(a..b.max(a), "");
            }
            Edit::Insert(a, t) => {
                let a = boundary(&s, *a);
                s.insert_str(a, t);
            }
            Edit::Duplicate(a, n) => {
                let a = boundary(&s, *a);
                let b = boundary(&s, a + n).max(a);
                let piece = s[a..b].to_string();
                s.insert_str(b, &piece);
            }
            Edit::Hostile(a, h) => {
                let a = boundary(&s, *a);
                if let Some(k) = s[a..].find([':', '=']).map(|k| a + k + 1) {
                    let end = s[k..].find([',', '\n', '}']).map_or(s.len(), |e| k + e);
                    s.replace_range(k..end, &format!(" {}", HOSTILE[*h]));
                }
            }
        }
    }
    s
}

/// Runs `f` and fails if it took longer than a hang would (generous: the machine is shared).
fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    assert!(start.elapsed() < Duration::from_secs(5), "{what} took {:?}", start.elapsed());
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap()
}

const CONFIG: &str = r#"
[ledger]
url = "sqlite://l.db"

[agent]
lease_s = 30

[[releases]]
name = "checkout"
service = "checkout"
target = "haproxy/checkout"
candidate_revision = "v42"
last_known_good = "v41"
tick_s = 10
source = { kind = "simulator", service = "checkout", duration_s = 600, seed = 3 }
executor = { kind = "haproxy", socket = "/run/haproxy.sock", backend = "be", canary_server = "canary", stable_server = "stable", full_weight = 100 }

[[releases]]
name = "search"
service = "search"
target = "hooks/search"
candidate_revision = "v7"
source = { kind = "prometheus", url = "http://prom:9090", baseline = "stable", canary = "canary", step_s = 10, duration_s = 600, metrics = [{ name = "errors", unit = "ratio", bad_direction = "up", query = "x" }] }
executor = { kind = "webhook", url = "https://hooks.example/rb", secret_env = "HOOK_SECRET", verify_url = "https://hooks.example/state", retries = 2 }

[model]
base_url = "http://127.0.0.1:8080/v1"
name = "m"
timeout_s = 30
max_turns = 4
"#;

/// Setting names an override may carry, and values for them.
const ENV_KEYS: &[&str] = &[
    "BACKSTOP_LEDGER__URL",
    "BACKSTOP_AGENT__LEASE_S",
    "BACKSTOP_TELEMETRY__FORMAT",
    "BACKSTOP_TELEMETRY__LEVEL",
    "BACKSTOP_MODEL__TIMEOUT_S",
    "BACKSTOP_MODEL__MAX_TURNS",
    "BACKSTOP_POLICY",
    "BACKSTOP_AGENT__INSTANCE_ID",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn scenario_files_parse_or_name_the_file_and_what_is_wrong(e in edits(), pick in 0usize..3) {
        let path = ["fixtures/scenarios/dev/dev-bad-crash-loop-medium-traffic-000.json",
                    "fixtures/scenarios/guards/guard-shared-breach.json",
                    "fixtures/hostile/hostile-text.json"][pick];
        let doc = read(path);
        let text = mutate(&doc, &e);
        match bounded("parse_scenario", || parse_scenario(Path::new("mutated.json"), &text)) {
            Err(err) => prop_assert!(err.to_string().starts_with("mutated.json: "), "{err}"),
            Ok(s) => {
                // Whatever parses can be replayed and judged to the end without a panic.
                let end = s.data.duration_s;
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let obs = rt.block_on(ReplaySource::new(std::sync::Arc::new(s.data)).observe(end));
                if let Ok(o) = obs {
                    let r = bounded("judge", || judge(&o, &JudgeConfig::default()));
                    prop_assert_eq!(r.now_s, o.now_s);
                }
            }
        }
    }

    #[test]
    fn policy_files_parse_or_name_the_file_and_field(e in edits(), pick in 0usize..2) {
        let doc = read(["policies/default.toml", "fixtures/policy/guards.toml"][pick]);
        let text = mutate(&doc, &e);
        if let Err(err) = bounded("policy", || PolicyFile::parse(Path::new("mutated.toml"), &text)) {
            prop_assert!(err.to_string().starts_with("mutated.toml: "), "{err}");
        }
    }

    #[test]
    fn configuration_and_overrides_load_or_name_the_origin_and_field(
        e in edits(),
        env in prop::collection::vec((0..ENV_KEYS.len(), 0..HOSTILE.len()), 0..3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backstop.toml");
        std::fs::write(&path, mutate(CONFIG, &e)).unwrap();
        let env: config::Map<String, String> =
            env.into_iter().map(|(k, v)| (ENV_KEYS[k].to_string(), HOSTILE[v].to_string())).collect();
        if let Err(err) = bounded("config", || Settings::load_with_env(Some(&path), env)) {
            let text = err.to_string();
            prop_assert!(text.starts_with("configuration ("), "{text}");
            prop_assert!(text.contains(&path.display().to_string()) || text.contains("environment"), "{text}");
        }
    }

    #[test]
    fn model_verdicts_parse_or_are_rejected(e in edits(), junk in "[ -~\u{80}-\u{10ffff}]{0,64}") {
        let doc = r#"{"health": "failing", "action": "rollback", "confidence": 0.9, "findings": [{"claim": "canary_worse", "summary": "errors up", "evidence": ["judge:http_error_ratio", "log:1"]}], "what_would_change_my_mind": "errors falling"}"#;
        for text in [mutate(doc, &e), junk.clone(), format!("```json\n{}\n```", mutate(doc, &e))] {
            // Parsing only reads the shape; validation is what refuses a verdict, so a
            // confidence outside 0..1 (or NaN) must never get past it.
            if let Ok(v) = bounded("verdict", || backstop::assessor::verdict::parse(&text))
                && !(0.0..=1.0).contains(&v.confidence)
            {
                let shown = std::collections::HashMap::new();
                prop_assert!(backstop::assessor::verdict::validate(&v, &shown).is_err(), "{v:?}");
            }
        }
    }
}
