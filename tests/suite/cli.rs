//! The command line as a user runs it.

use assert_cmd::Command;
use predicates::prelude::*;

fn backstop() -> Command {
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("RUST_LOG");
    c
}

#[test]
fn demo_rolls_back_verifies_and_the_ledger_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let db_s = db.to_str().unwrap();
    backstop()
        .args(["demo", "--tick-ms", "0", "--ledger", db_s])
        .assert()
        .success()
        .stdout(predicate::str::contains("ROLLED BACK to v41 — executed and verified"))
        .stdout(predicate::str::contains("http_error_ratio: FAILING"))
        .stdout(predicate::str::contains("verified=true"))
        .stdout(predicate::str::contains(db_s));
    backstop()
        .args(["audit", "verify", "--ledger", db_s])
        .assert()
        .success()
        .stdout(predicate::str::contains("chain intact"));
    backstop()
        .args(["audit", "list", "--ledger", db_s, "--limit", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("release_finished").and(predicate::str::contains("rolled_back")));
    backstop()
        .args(["audit", "show", "1", "--ledger", db_s])
        .assert()
        .success()
        .stdout(predicate::str::contains("release_started"));

    // Tamper as an attacker with file access would, then verify names the record.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let l = backstop::ledger::Ledger::open(&backstop::ledger::sqlite_url(&db)).await.unwrap();
        sqlx::query("UPDATE ledger_records SET body = '{}' WHERE seq = 2").execute(l.pool()).await.unwrap();
    });
    backstop()
        .args(["audit", "verify", "--ledger", db_s])
        .assert()
        .code(4)
        .stdout(predicate::str::contains("record 2 was edited"));
}

#[test]
fn audit_compact_sums_up_finished_ticks_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let db_s = db.to_str().unwrap();
    backstop().args(["demo", "--scenario", "healthy", "--tick-ms", "0", "--ledger", db_s]).assert().success();
    let out = backstop().args(["audit", "compact", "--older-than-days", "0", "--ledger", db_s]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success() && text.contains("of 1 releases compacted into summaries"), "{text}");
    let removed: u64 = text.split("ledger ").nth(1).and_then(|t| t.split_whitespace().nth(1)?.parse().ok()).unwrap();
    assert!(removed > 5, "{text}");
    backstop()
        .args(["audit", "verify", "--ledger", db_s])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("chain intact ({removed} compacted records checked")));
    backstop()
        .args(["audit", "list", "--ledger", db_s, "--limit", "2"])
        .assert()
        .success()
        .stdout(predicate::str::contains(format!("{removed} tick records compacted")))
        .stdout(predicate::str::contains("release_finished"));
    backstop()
        .args(["audit", "compact", "--older-than-days", "0", "--ledger", db_s])
        .assert()
        .success()
        .stdout(predicate::str::contains("0 tick records of 0 releases"));
    backstop()
        .args(["audit", "compact", "--older-than-days=-1", "--ledger", db_s])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--older-than-days -1: expected a number of days"));
}

#[test]
fn demo_healthy_promotes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    backstop()
        .args(["demo", "--scenario", "healthy", "--tick-ms", "0", "--ledger", db.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("PROMOTED v42"));
}

#[test]
fn demo_model_drift_rolls_back_when_delayed_labels_show_accuracy_falling() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    backstop()
        // The hyphenated spelling of earlier versions, still accepted beside `model_drift`.
        .args(["demo", "--scenario", "model-drift", "--tick-ms", "0", "--ledger", db.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains("ROLLED BACK to v41"))
        .stdout(predicate::str::contains("labelled accuracy fell beyond tolerance"))
        .stdout(predicate::str::contains("canary model's scores shift"));
}

#[test]
fn demo_unknown_scenario_is_a_usage_error() {
    backstop()
        .args(["demo", "--scenario", "nope", "--tick-ms", "0", "--ledger", "/tmp/unused.db"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("invalid value 'nope' for '--scenario")
                .and(predicate::str::contains("crash_loop")),
        );
}

#[test]
fn eval_says_why_when_asked() {
    let out = backstop()
        .args(["eval", "fixtures/scenarios/dev", "--format", "json", "--why"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let results = v["judges"]["backstop"]["results"].as_array().unwrap();
    let rolled_back: Vec<&serde_json::Value> = results.iter().filter(|r| r["decision"] == "rollback").collect();
    assert!(!rolled_back.is_empty());
    for r in rolled_back {
        let why = r["why"].as_array().unwrap_or_else(|| panic!("{r}"));
        assert!(why.iter().any(|w| w.as_str().is_some_and(|w| w.contains("FAILING"))), "{r}");
    }
    assert!(results.iter().filter(|r| r["decision"] == "promote").all(|r| r.get("why").is_none()));
}

#[test]
fn eval_prints_format_json_for_the_corpus() {
    let out = backstop()
        .args(["eval", "fixtures/scenarios", "--format", "json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let results = v["judges"]["backstop"]["results"].as_array().unwrap();
    assert!(results.len() >= 40, "{}", results.len());
    for r in results {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 5, "{r}");
        for k in ["scenario", "decision", "decided_at_s", "truth_bad", "onset_s"] {
            assert!(keys.contains(&k), "{r}");
        }
        let d = r["decision"].as_str().unwrap();
        // FORMAT.md's four decisions (the guard scenarios include a shared breach: escalate).
        assert!(["rollback", "promote", "escalate", "inconclusive"].contains(&d), "{r}");
        assert_eq!(r["decided_at_s"].is_null(), d == "inconclusive");
    }
    let s = &v["judges"]["backstop"]["summary"];
    assert!(s["recall"].as_f64().unwrap() >= 0.9, "{s}");
    assert!(s["false_rollback_rate"].as_f64().unwrap() <= 0.02, "{s}");
}

#[test]
fn eval_reports_broken_files_and_runs_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string("fixtures/scenarios/dev/dev-good-healthy-000.json").unwrap();
    // No truth field: still decided, truth fields null.
    let mut doc: serde_json::Value = serde_json::from_str(&good).unwrap();
    doc.as_object_mut().unwrap().remove("truth");
    std::fs::write(dir.path().join("a-untruthful.json"), doc.to_string()).unwrap();
    let broken = good.replacen("\"bad_direction\":\"up\"", "\"bad_direction\":\"sideways\"", 1);
    std::fs::write(dir.path().join("b-broken.json"), broken).unwrap();
    let out = backstop()
        .args(["eval", dir.path().to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("b-broken.json").and(predicate::str::contains("metrics[0].bad_direction")))
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let results = v["judges"]["backstop"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0]["truth_bad"].is_null() && results[0]["onset_s"].is_null());
    assert_eq!(results[0]["decision"], "promote");
}

#[test]
fn eval_unknown_judge_is_a_usage_error() {
    backstop()
        .args(["eval", "fixtures/scenarios/dev", "--judge", "oracle"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'oracle'"))
        .stderr(predicate::str::contains("possible values: backstop, backstop-paired, backstop+model"));
}

#[test]
fn eval_table_has_one_row_per_corpus() {
    backstop()
        .args(["eval", "fixtures/scenarios/dev", "fixtures/scenarios/holdout", "--format", "table"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("fixtures/scenarios/dev")
                .and(predicate::str::contains("fixtures/scenarios/holdout"))
                .and(predicate::str::contains("(all)")),
        );
}

/// The names below the table are exactly the JSON results a judge got wrong,
/// and the table's F1 is the one FORMAT.md's counts give.
#[test]
fn eval_table_misses_lists_exactly_the_wrong_answers() {
    let corpus = "fixtures/real-kpis/preceding-dev";
    let run = |args: &[&str]| {
        let out = backstop().args(["eval", corpus, "--judge", "kayenta"]).args(args).assert().success();
        String::from_utf8(out.get_output().stdout.clone()).unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&run(&["--format", "json"])).unwrap();
    let results = v["judges"]["kayenta"]["results"].as_array().unwrap();
    let wrong = |bad: bool, rolled_back: bool| -> Vec<String> {
        let mut names: Vec<String> = results
            .iter()
            .filter(|r| r["truth_bad"] == bad && (r["decision"] == "rollback") == rolled_back)
            .map(|r| r["scenario"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    let (missed, false_rb) = (wrong(true, false), wrong(false, true));
    assert!(!missed.is_empty() && !false_rb.is_empty(), "kayenta errs both ways on this corpus");
    let table = run(&["--format", "table", "--misses"]);
    let listed = |head: &str| -> Vec<String> {
        let at = table.find(head).unwrap_or_else(|| panic!("{head} in {table}"));
        table[at..].lines().skip(1).take_while(|l| l.starts_with("  ")).map(|l| l.trim().to_string()).collect()
    };
    assert_eq!(listed(&format!("kayenta on {corpus}, missed ({}):", missed.len())), missed);
    assert_eq!(listed(&format!("kayenta on {corpus}, false rollbacks ({}):", false_rb.len())), false_rb);
    let caught = results.iter().filter(|r| r["truth_bad"] == true && r["decision"] == "rollback").count();
    let f1 = 2.0 * caught as f64 / (2 * caught + false_rb.len() + missed.len()) as f64;
    assert!(table.contains(&format!(" {f1:.3} ")), "F1 {f1:.3} in {table}");
    assert!(!run(&["--format", "table"]).contains("missed ("), "the list only on request");
}

#[test]
fn policy_check_accepts_default_and_names_bad_fields() {
    backstop()
        .args(["policy", "check", "policies/default.toml"])
        .assert()
        .success()
        .stdout(predicate::str::contains("valid"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[rate_limit]\nmax_rollbacks = 0\nwindow_minutes = 60\n").unwrap();
    backstop()
        .args(["policy", "check", bad.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.toml").and(predicate::str::contains("rate_limit.max_rollbacks")));
}

#[test]
fn schema_config_is_json_schema() {
    let out = backstop().args(["schema", "config"]).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["properties"]["ledger"].is_object(), "{v}");
    assert!(v["properties"]["releases"].is_object(), "{v}");
}

#[test]
fn schema_ledger_describes_every_record_kind() {
    let out = backstop().args(["schema", "ledger"]).assert().success().get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["oneOf"].is_array(), "{v}");
    for kind in ["release_started", "tick", "intent", "outcome", "lease", "release_finished"] {
        assert!(text.contains(&format!("\"{kind}\"")), "no `{kind}` in the ledger schema");
    }
    for result in ["verified", "reconciled", "unresolved", "resolved_by_human"] {
        assert!(text.contains(&format!("\"{result}\"")), "no `{result}` in the ledger schema");
    }
}

#[test]
fn bad_config_file_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("backstop.toml");
    std::fs::write(&cfg, "[ledger]\nurll = \"sqlite://x.db\"\n").unwrap();
    backstop()
        .args(["--config", cfg.to_str().unwrap(), "schema", "config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("urll"));
}

#[test]
fn env_override_is_validated() {
    backstop()
        .env("BACKSTOP_LEDGER__URL", "mysql://nope")
        .args(["schema", "config"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("ledger.url"));
}

#[test]
fn an_unrelated_backstop_variable_is_a_warning_not_a_failure() {
    backstop().env("BACKSTOP_TOKEN", "abc").args(["schema", "config"]).assert().success().stderr(
        predicate::str::contains("warning: ignoring BACKSTOP_TOKEN").and(predicate::str::contains("abc").not()),
    );
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_token() {
    backstop()
        .args(["--config", "fixtures/config/replay.toml", "serve", "--listen", "0.0.0.0:0", "--pace-ms", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("beyond loopback").and(predicate::str::contains("--token-env")));
    backstop()
        .args(["--config", "fixtures/config/replay.toml", "serve", "--token-env", "BACKSTOP_TEST_NO_SUCH_VAR"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("BACKSTOP_TEST_NO_SUCH_VAR"));
}

/// Two releases whose executors name one system resource (the same HAProxy
/// backend, here) under different targets would hold different leases on
/// it: refused at load, the second release's executor named.
#[test]
fn two_targets_cannot_point_executors_at_one_resource() {
    let dir = tempfile::tempdir().unwrap();
    let source = r#"{ kind = "scenario", path = "fixtures/scenarios/holdout/holdout-good-healthy-000.json" }"#;
    let haproxy = |backend: &str| {
        format!(
            r#"{{ kind = "haproxy", socket = "/run/haproxy.sock", backend = "{backend}", canary_server = "c", stable_server = "s" }}"#
        )
    };
    let two = |b1: &str, b2: &str| {
        let a = crate::support::release_toml("haproxy/checkout", source, Some(&haproxy(b1)));
        let b = crate::support::release_toml("haproxy/search", source, Some(&haproxy(b2)))
            .replace("\"checkout\"", "\"search\"");
        format!("{a}\n{b}")
    };
    let cfg = dir.path().join("two.toml");
    std::fs::write(&cfg, two("be_checkout", "be_checkout")).unwrap();
    backstop().args(["--config", cfg.to_str().unwrap(), "schema", "config"]).assert().code(2).stderr(
        predicate::str::contains("releases[1].executor")
            .and(predicate::str::contains("backend be_checkout"))
            .and(predicate::str::contains("haproxy/checkout")),
    );
    std::fs::write(&cfg, two("be_checkout", "be_search")).unwrap();
    backstop().args(["--config", cfg.to_str().unwrap(), "schema", "config"]).assert().success();
}

#[test]
fn every_executor_setting_is_checked_at_load_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let source = r#"{ kind = "scenario", path = "fixtures/scenarios/holdout/holdout-good-healthy-000.json" }"#;
    for (executor, field) in [
        (r#"{ kind = "command", rollback = [] }"#, "releases[0].executor.rollback"),
        (r#"{ kind = "webhook", url = "not a url", secret_env = "PATH" }"#, "releases[0].executor.url"),
        // A signed action in clear text: refused unless allow_http = true.
        (
            r#"{ kind = "webhook", url = "http://deploy.example/hook", secret_env = "PATH" }"#,
            "releases[0].executor.url",
        ),
        (
            r#"{ kind = "webhook", url = "https://deploy.example/hook", verify_url = "http://deploy.example/state", secret_env = "PATH" }"#,
            "releases[0].executor.verify_url",
        ),
        (
            r#"{ kind = "haproxy", socket = "/tmp/s", backend = "be", canary_server = "c", stable_server = "s", full_weight = 0 }"#,
            "releases[0].executor.full_weight",
        ),
    ] {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, crate::support::release_toml("t/x", source, Some(executor))).unwrap();
        backstop()
            .args(["--config", cfg.to_str().unwrap(), "schema", "config"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(field).and(predicate::str::contains("bad.toml")));
    }
}

#[test]
fn config_file_from_env_is_not_an_override() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("b.toml");
    std::fs::write(&cfg, "[telemetry]\nlevel = \"error\"\n").unwrap();
    backstop()
        .env("BACKSTOP_CONFIG", cfg.to_str().unwrap())
        .args(["policy", "check", "policies/default.toml"])
        .assert()
        .success();
}

#[test]
fn bench_prints_its_table() {
    backstop()
        .args(["bench", "--releases", "5", "--ledger-releases", "5", "--ticks", "1", "--tick-s", "1"])
        .args(["--iterations", "2", "--appends", "5"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("| judge, one tick, 20 metrics × 360 samples, Concurrent baseline |")
                .and(predicate::str::contains("| judge, one tick, 20 metrics × 360 samples, Preceding baseline |"))
                .and(predicate::str::contains("5 concurrent releases"))
                .and(predicate::str::contains("appends/s")),
        );
}

/// `bench --agents` repeated: a row per run, then the CPU ratio's median
/// over the runs; no tick recorded twice in any run. Zero runs is refused.
#[test]
fn bench_agents_reports_every_run_and_the_median_ratio() {
    let args = ["bench", "--agents", "2", "--agent-releases", "4", "--agent-ticks", "2"];
    let assert = backstop().args(args).args(["--agent-runs", "2"]).assert().success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert_eq!(stdout.matches("2 agents sharing 4 releases").count(), 2, "{stdout}");
    assert_eq!(stdout.matches(", 0 recorded twice").count(), 2, "{stdout}");
    assert!(stdout.contains("| 2 agents against one, 2 runs on SQLite | CPU ratio median "), "{stdout}");
    backstop()
        .args(args)
        .args(["--agent-runs", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bench --agent-runs: at least 1 run"));
}

/// `advise` plans with the webhook's settings but never reads its signing
/// secret; `watch`, which could act, refuses to start without it.
#[test]
fn advise_plans_without_an_executor_secret_and_watch_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let source =
        r#"{ kind = "scenario", path = "fixtures/scenarios/holdout/holdout-bad-error-spike-strong-traffic-000.json" }"#;
    let executor =
        r#"{ kind = "webhook", url = "https://deploy.example/hook", secret_env = "BACKSTOP_TEST_UNSET_SECRET" }"#;
    let cfg = dir.path().join("hook.toml");
    std::fs::write(&cfg, crate::support::release_toml("argo/checkout", source, Some(executor))).unwrap();
    let ledger = dir.path().join("l.db");
    backstop()
        .env_remove("BACKSTOP_TEST_UNSET_SECRET")
        .args(["--config", cfg.to_str().unwrap(), "advise", "--pace-ms", "0", "--ledger", ledger.to_str().unwrap()])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "POST a signed rollback of argo/checkout to v41 to https://deploy.example/hook",
        ));
    backstop()
        .env_remove("BACKSTOP_TEST_UNSET_SECRET")
        .args(["--config", cfg.to_str().unwrap(), "watch", "--pace-ms", "0", "--ledger", ledger.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("BACKSTOP_TEST_UNSET_SECRET"));
}

/// Completions and the man page come from the command definition: every
/// subcommand is in them, bash accepts the script, and a broken
/// `backstop.toml` in the working directory does not stop them.
#[test]
fn completions_and_the_man_page_name_every_command_without_reading_configuration() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("backstop.toml"), "this is not = = toml").unwrap();
    let run = |args: &[&str]| {
        let out = backstop().current_dir(d.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    let zsh = run(&["completions", "zsh"]);
    let fish = run(&["completions", "fish"]);
    let man = run(&["man"]);
    assert!(zsh.starts_with("#compdef backstop"), "{zsh}");
    assert!(man.contains(".TH backstop 1"), "{man}");
    for sub in ["watch", "advise", "agent", "revisions", "completions"] {
        for (name, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish), ("man", &man)] {
            assert!(text.contains(sub), "{name} lacks `{sub}`");
        }
    }
    let script = d.path().join("backstop.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    let bad = backstop().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an unknown shell is a usage error");
}
