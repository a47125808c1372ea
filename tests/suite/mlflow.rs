//! Model releases end to end on real programs: a real MLflow tracking server
//! (from PyPI) holds a registered model with two versions and the serving
//! alias on the candidate; `backstop watch` judges a model canary whose
//! delayed labels show its accuracy falling, moves the alias back to the
//! last-known-good version, reads it back, and the ledger says why.

use std::process::Command;

use crate::support::mlflow::Mlflow;

const FALLING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/scenarios/model-holdout/modelholdout-model-bad-drift-falling-accuracy-000.json"
);

fn config(dir: &std::path::Path, tracking_uri: &str, last_known_good: &str) -> std::path::PathBuf {
    let cfg = dir.join("backstop.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[releases]]\nname = \"fraud-scorer\"\nservice = \"fraud-scorer\"\ntarget = \"mlflow/fraud-scorer\"\n\
             candidate_revision = \"2\"\nlast_known_good = \"{last_known_good}\"\n\
             source = {{ kind = \"scenario\", path = \"{FALLING}\" }}\n\
             executor = {{ kind = \"mlflow\", tracking_uri = \"{tracking_uri}\", model = \"fraud-scorer\", alias = \"champion\" }}\n"
        ),
    )
    .unwrap();
    cfg
}

fn backstop(args: &[&str]) -> (i32, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("backstop"))
        .env_remove("BACKSTOP_CONFIG")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn watch(cfg: &std::path::Path, ledger: &std::path::Path) -> (i32, String) {
    backstop(&[
        "--config",
        cfg.to_str().unwrap(),
        "watch",
        "--plain",
        "--pace-ms",
        "0",
        "--ledger",
        ledger.to_str().unwrap(),
    ])
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs MLflow")]
#[tokio::test(flavor = "multi_thread")]
async fn watch_moves_the_mlflow_alias_back_when_delayed_labels_show_accuracy_falling() {
    let mlflow = Mlflow::start().await;
    mlflow.register("fraud-scorer", 2, "champion").await;
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "2");
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &mlflow.url, "1");
    let ledger = d.path().join("l.db");

    // `config check` reaches the registry read-only first.
    let (code, text) = backstop(&["--config", cfg.to_str().unwrap(), "config", "check"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("alias `champion` names version 2"), "{text}");
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "2", "a check changes nothing");

    let (code, text) = watch(&cfg, &ledger);
    assert_eq!(code, 10, "rolled back and verified:\n{text}");
    assert!(text.contains("labelled accuracy fell beyond tolerance"), "{text}");
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "1", "the alias is back on the last-known-good version");

    // The ledger says why: the tick that decided names the labelled signal, the
    // revision's condemnation (release memory) carries it as evidence, the
    // intent the exact request, the outcome what was read back.
    let db = ledger.to_str().unwrap();
    let (code, list) = backstop(&["audit", "list", "--ledger", db, "--limit", "1000"]);
    assert_eq!(code, 0, "{list}");
    let seq_of = |kind: &str| -> u64 {
        let line = list.lines().find(|l| l.split_whitespace().nth(2) == Some(kind)).unwrap_or_else(|| panic!("{list}"));
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    let show = |seq: u64| backstop(&["audit", "show", "--ledger", db, &seq.to_string()]).1;
    let intent = seq_of("intent");
    let condemned = show(intent - 1);
    assert!(condemned.contains("\"event\": \"condemned\"") && condemned.contains("label.fraud"), "{condemned}");
    let deciding = show(intent - 2);
    assert!(deciding.contains("\"kind\": \"tick\"") && deciding.contains("label.fraud"), "{deciding}");
    assert!(deciding.contains("labelled accuracy fell beyond tolerance"), "{deciding}");
    assert!(show(intent).contains("set alias `champion` of registered model `fraud-scorer` to version 1"));
    assert!(show(seq_of("outcome")).contains("alias `champion` of model `fraud-scorer` names version 1"));
    let (code, verify) = backstop(&["audit", "verify", "--ledger", ledger.to_str().unwrap()]);
    assert_eq!(code, 0, "{verify}");
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs MLflow")]
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_is_down_or_refuses_the_version_fails_the_rollback_clearly_and_changes_nothing() {
    let mut mlflow = Mlflow::start().await;
    mlflow.register("fraud-scorer", 2, "champion").await;
    let d = tempfile::tempdir().unwrap();

    // A last-known-good version the registry does not have: MLflow's own refusal, nothing moved.
    let cfg = config(d.path(), &mlflow.url, "7");
    let (code, text) = watch(&cfg, &d.path().join("a.db"));
    assert_eq!(code, 11, "{text}");
    assert!(text.contains("RESOURCE_DOES_NOT_EXIST") && text.contains("version=7"), "{text}");
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "2");

    // The registry stopped: the rollback fails with a clear reason, and after a restart the alias is untouched.
    mlflow.stop();
    let cfg = config(d.path(), &mlflow.url, "1");
    let (code, text) = watch(&cfg, &d.path().join("b.db"));
    assert_eq!(code, 11, "{text}");
    assert!(text.contains("MLflow unreachable"), "{text}");
    mlflow.launch().await;
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "2");
}

#[test]
fn a_revision_that_is_not_an_mlflow_version_is_refused_at_load_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), "http://127.0.0.1:9", "v41");
    let (code, text) = watch(&cfg, &d.path().join("l.db"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("releases[0].last_known_good") && text.contains("version number"), "{text}");
}

/// Killed with SIGKILL mid-action against the real registry: after the
/// intent (nothing moved: the restart holds instead of retrying blindly), and
/// after the alias moved but before the outcome (the restart reads the alias
/// back and reconciles; nothing runs twice).
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs MLflow")]
#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_rollback_the_restart_reads_the_alias_back_and_never_acts_blindly() {
    use crate::support::agents::Agent;
    use std::time::Duration;
    let mlflow = Mlflow::start().await;
    mlflow.register("fraud-scorer", 2, "champion").await;
    let d = tempfile::tempdir().unwrap();
    let cfg = config(d.path(), &mlflow.url, "1");

    let first = d.path().join("a.db");
    let mut a = Agent::watch(&cfg, first.to_str().unwrap(), 0, &[("BACKSTOP_TEST_PAUSE_AT", "after_intent")]);
    a.wait_for("paused at after_intent", Duration::from_secs(60));
    a.kill9();
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "2", "the intent was recorded but nothing ran");
    let (code, out) = watch(&cfg, &first);
    assert_eq!(code, 11, "{out}");
    assert!(out.contains("recorded as about to run before the agent stopped"), "{out}");
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "2", "a restart never retries blindly");

    let second = d.path().join("b.db");
    let mut a = Agent::watch(&cfg, second.to_str().unwrap(), 0, &[("BACKSTOP_TEST_PAUSE_AT", "after_execute")]);
    a.wait_for("paused at after_execute", Duration::from_secs(60));
    a.kill9();
    assert_eq!(mlflow.alias("fraud-scorer", "champion").await, "1");
    let (code, out) = watch(&cfg, &second);
    assert_eq!(code, 10, "{out}");
    assert!(out.contains("reconciled after a restart"), "{out}");
    let (code, list) = backstop(&["audit", "list", "--ledger", second.to_str().unwrap(), "--limit", "1000"]);
    assert_eq!(code, 0, "{list}");
    let intents = list.lines().filter(|l| l.split_whitespace().nth(2) == Some("intent")).count();
    assert_eq!(intents, 1, "one intent, never a second action:\n{list}");
}
