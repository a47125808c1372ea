//! `backstop calibrate` as an operator runs it: learn a service's tolerances
//! from its past releases, record them, and have `watch` use them only when
//! the policy opts in — never past the policy's bounds.

use assert_cmd::Command;
use predicates::prelude::*;

fn backstop() -> Command {
    let mut c = Command::cargo_bin("backstop").unwrap();
    c.env_remove("BACKSTOP_CONFIG").env_remove("RUST_LOG");
    c
}

/// A past release of a service whose canary pods run 30 % slower than the
/// stable ones (another node type, not a fault), labelled healthy.
fn hot(from: &str, to: &std::path::Path) {
    let mut d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(from).unwrap()).unwrap();
    for m in d["metrics"].as_array_mut().unwrap() {
        if m["name"] == "latency_p99_ms" {
            for v in m["canary"].as_array_mut().unwrap() {
                if let Some(x) = v.as_f64() {
                    *v = serde_json::json!(x * 1.3);
                }
            }
        }
    }
    std::fs::write(to, serde_json::to_string(&d).unwrap()).unwrap();
}

/// The default policy with `[calibration]` changed by `edit`.
fn policy(dir: &std::path::Path, name: &str, edit: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string("policies/default.toml").unwrap();
    for (from, to) in edit {
        assert_eq!(text.matches(from).count(), 1, "{from}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn calibrated_tolerances_are_recorded_and_used_only_when_the_policy_opts_in() {
    let d = tempfile::tempdir().unwrap();
    let past = d.path().join("past");
    std::fs::create_dir(&past).unwrap();
    for i in 0..6 {
        hot(&format!("fixtures/scenarios/dev/dev-good-healthy-00{i}.json"), &past.join(format!("past-{i}.json")));
    }
    let today = d.path().join("today.json");
    hot("fixtures/scenarios/holdout/holdout-good-healthy-000.json", &today);
    let ledger = d.path().join("l.db");
    let ledger = ledger.to_str().unwrap();
    let applying = policy(d.path(), "apply.toml", &[("apply = false", "apply = true")]);

    let out = backstop()
        .args(["calibrate", "--service", "checkout", "--scenarios", past.to_str().unwrap(), "--ledger", ledger])
        .args(["--policy", applying.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("calibration of checkout from 6 past healthy releases"), "{table}");
    assert!(table.contains("rollbacks of these healthy releases: 6 → 0 of 6"), "{table}");
    assert!(table.contains("recorded in the ledger (seq 1)"), "{table}");
    backstop()
        .args(["audit", "list", "--ledger", ledger])
        .assert()
        .success()
        .stdout(predicate::str::contains("calibration of checkout from 6 past releases"));

    let source = format!("{{ kind = \"scenario\", path = \"{}\" }}", today.display());
    let release = crate::support::release_toml("checkout", &source, None);
    // Each run its own candidate revision: its own release in the one ledger that holds the calibration.
    let runs = std::cell::Cell::new(0);
    let watch = |policy: &std::path::Path| {
        runs.set(runs.get() + 1);
        let config = d.path().join(format!("backstop-{}.toml", runs.get()));
        std::fs::write(&config, release.replace("\"v42\"", &format!("\"v42-{}\"", runs.get()))).unwrap();
        backstop()
            .args(["--config", config.to_str().unwrap(), "watch", "--pace-ms", "0", "--ledger", ledger])
            .args(["--policy", policy.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // Opted in: today's equally hot canary is judged by the learned tolerance, and says so.
    let out = watch(&applying);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("calibrated from 6 past releases"), "{stdout}");
    // The default policy does not apply it: the same release fails on latency.
    let out = watch(std::path::Path::new("policies/default.toml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(11), "{stdout}");
    assert!(stdout.contains("latency_p99_ms: FAILING") && !stdout.contains("calibrated from"), "{stdout}");
    // Bounds tightened since the calibration: the recorded value is clamped to them.
    let strict = policy(
        d.path(),
        "strict.toml",
        &[("apply = false", "apply = true"), ("max_relative_tolerance = 0.5", "max_relative_tolerance = 0.25")],
    );
    let out = watch(&strict);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(11), "never looser than the bound in force: {stdout}");
}

#[test]
fn too_few_releases_or_broken_bounds_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    // One faulty release: its stretch before the fault is the one healthy release.
    backstop()
        .args(["calibrate", "--service", "checkout", "--scenarios", "fixtures/scenarios/agent", "--dry-run"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("1 past healthy release(s) of `checkout`; calibration needs at least 5"));
    let bad = policy(d.path(), "bad.toml", &[("min_ratio_tolerance = 0.002", "min_ratio_tolerance = 0.5")]);
    backstop()
        .args(["calibrate", "--service", "checkout", "--scenarios", "fixtures/scenarios/dev", "--dry-run"])
        .args(["--policy", bad.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bad.toml").and(predicate::str::contains("calibration.min_ratio_tolerance")));
}
