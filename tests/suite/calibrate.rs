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

/// `backstop calibrate` on the six past releases under `policy`: it shows
/// what changes (6 rollbacks of healthy releases to 0), and records the
/// calibration in the ledger, where `audit list` shows it.
fn calibrate_and_record(past: &std::path::Path, ledger: &str, policy: &std::path::Path) {
    let out = backstop()
        .args(["calibrate", "--service", "checkout", "--scenarios", past.to_str().unwrap(), "--ledger", ledger])
        .args(["--policy", policy.to_str().unwrap()])
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

    calibrate_and_record(&past, ledger, &applying);

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

/// Release `k`'s start, unix seconds: six releases half an hour apart, the last
/// ending well before now.
fn past_start(now: i64, k: i64) -> i64 {
    now - now % 10 - 4 * 3600 + k * 1800
}

/// Five hours of two metrics on both sides, every 10 s, as OpenMetrics: the
/// canary's p99 runs 30 % above the stable one's (healthy, another node
/// type), except in release 5's window, where it doubles (a real fault).
fn history(now: i64) -> String {
    let (from, to) = (past_start(now, 0) - 3600, now - 1800);
    let mut seed = 7u64;
    let mut noise = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64 - 0.5
    };
    let mut stable = vec![];
    let mut canary = vec![];
    let mut cpu = vec![];
    for t in (from..to).step_by(10) {
        let s = 200.0 + 20.0 * noise();
        let faulty = (past_start(now, 5)..past_start(now, 5) + 600).contains(&t);
        let c = (200.0 + 20.0 * noise()) * if faulty { 2.0 } else { 1.3 };
        stable.push(format!("checkout_latency_p99_ms{{side=\"stable\"}} {s:.2} {t}\n"));
        canary.push(format!("checkout_latency_p99_ms{{side=\"canary\"}} {c:.2} {t}\n"));
        for side in ["stable", "canary"] {
            cpu.push(format!("checkout_cpu_percent{{side=\"{side}\"}} {:.2} {t}\n", 50.0 + 4.0 * noise()));
        }
    }
    cpu.sort_by_key(|l| l.contains("canary"));
    format!(
        "# TYPE checkout_latency_p99_ms gauge\n{}{}# TYPE checkout_cpu_percent gauge\n{}# EOF\n",
        stable.concat(),
        canary.concat(),
        cpu.concat()
    )
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_releases_in_the_ledger_are_read_back_from_real_prometheus_and_calibrate() {
    let (_prom, d, ledger_path, config) = with_history().await;
    let applying = policy(d.path(), "apply.toml", &[("apply = false", "apply = true")]);
    let out = tokio::task::spawn_blocking(move || {
        backstop()
            .args(["--config", config.to_str().unwrap(), "calibrate", "--service", "checkout", "--from-ledger"])
            .args(["--ledger", ledger_path.to_str().unwrap(), "--policy", applying.to_str().unwrap()])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        table.contains("from 5 past healthy releases (0 of them a faulty release before its fault; 1 faulty"),
        "{table}"
    );
    let latency = table.lines().find(|l| l.starts_with("latency_p99_ms")).unwrap();
    let value: f64 = latency.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(value > 20.0 && value <= 50.0, "learned above the 20 % default, within the bound: {latency}");
    assert!(
        table.contains("rollbacks of these healthy releases: 5 → 0 of 5; faulty releases caught: 1 → 1 of 1"),
        "{table}"
    );
    assert!(table.contains("recorded in the ledger"), "{table}");
}

#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs Prometheus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_auto_calibration_recalibrates_on_start_and_records_only_a_change() {
    use backstop::ledger::{Ledger, Record, RecordKind, sqlite_url};
    let (prom, d, ledger_path, config) = with_history().await;
    let auto = policy(d.path(), "auto.toml", &[("apply = false", "apply = true"), ("auto = false", "auto = true")]);
    let open = || async {
        let settings = backstop::config::Settings::load(Some(&config)).unwrap();
        let policy = backstop::policy::PolicyFile::load(&auto).unwrap();
        let (_tx, stop) = tokio::sync::watch::channel(false);
        backstop::run::Runtime::open(settings, policy, &sqlite_url(&ledger_path), stop).await.unwrap()
    };
    let service = open().await;
    let c = service.policy.calibrations["checkout"].clone();
    assert_eq!((c.releases.len(), c.faulty.len()), (5, 1));
    let latency = c.metrics.iter().find(|m| m.metric == "latency_p99_ms").unwrap();
    assert!(latency.value > 0.2 && latency.value <= 0.5, "{latency:?}");
    let judge = service.policy.judge_for("checkout");
    assert_eq!(judge.metrics["latency_p99_ms"].calibrated_from, Some(5));
    drop(service);
    // Started again with nothing new: the same calibration, not a second record.
    let again = open().await;
    assert!(again.policy.calibrations["checkout"].same_as(&c));
    let ledger = Ledger::open(&sqlite_url(&ledger_path)).await.unwrap();
    let records = ledger.of_kind(RecordKind::Calibration, None, 0, 10).await.unwrap();
    assert_eq!(records.len(), 1, "recorded once");
    assert!(records[0].0.actor.starts_with("agent"), "{}", records[0].0.actor);
    assert!(matches!(&records[0].1, Record::Calibration(r) if r.same_as(&c)));
    drop(again);
    // Prometheus gone: the start still succeeds, with the calibration in force.
    drop(prom);
    let without = open().await;
    assert!(without.policy.calibrations["checkout"].same_as(&c));
}

/// A `backstop.toml` whose one release reads the history's metrics from `url`.
fn prometheus_release(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let config = dir.join("backstop.toml");
    let source = format!(
        "{{ kind = \"prometheus\", url = \"{url}\", baseline = \"stable\", canary = \"canary\", step_s = 10, duration_s = 600, \
         metrics = [{{ name = \"latency_p99_ms\", unit = \"ms\", bad_direction = \"up\", query = \"checkout_latency_p99_ms{{side=\\\"{{{{ side }}}}\\\"}}\" }}, \
                    {{ name = \"cpu_percent\", unit = \"percent\", bad_direction = \"up\", query = \"checkout_cpu_percent{{side=\\\"{{{{ side }}}}\\\"}}\" }}] }}"
    );
    std::fs::write(&config, crate::support::release_toml("checkout", &source, None)).unwrap();
    config
}

/// Six past releases of `checkout` in a new ledger: started, and promoted
/// (release 5 rolled back).
async fn seed(path: &std::path::Path, now: i64) {
    use backstop::ledger::{Actor, Ledger, Record, ReleaseFinished, sqlite_url};
    use backstop::release::ReleaseStatus;
    let ledger = Ledger::open(&sqlite_url(path)).await.unwrap();
    let agent = Actor::Agent { instance: Some("a1".into()) };
    for k in 0..6 {
        let id = format!("checkout-v{}", 40 + k);
        let at = past_start(now, k) * 1000;
        ledger.append(&id, &agent, at, Record::ReleaseStarted(started(&id, None))).await.unwrap();
        let status = if k == 5 { ReleaseStatus::RolledBack } else { ReleaseStatus::Promoted };
        let finished = ReleaseFinished { status, ticks: 60, decided_at_s: 600, model_usage: Default::default() };
        ledger.append(&id, &agent, at + 600_000, Record::ReleaseFinished(finished)).await.unwrap();
    }
}

/// Release `id` of `checkout` started (`continued`: again, as the run
/// continuing it writes it: from where, and where its canary is read from).
fn started(id: &str, continued: Option<(u64, i64)>) -> backstop::ledger::ReleaseStarted {
    let facts = backstop::policy::ReleaseFacts {
        release_id: id.into(),
        service: "checkout".into(),
        target: "checkout".into(),
        service_targets: 0,
        declared_targets: vec!["checkout".to_string()].into(),
        candidate_revision: id.trim_start_matches("checkout-").into(),
        last_known_good: None,
        quarantine: None,
        last_known_good_from: None,
        irreversible: false,
        environment: "production".into(),
    };
    backstop::ledger::ReleaseStarted {
        facts,
        source: "prometheus".into(),
        mode: backstop::policy::RunMode::Act,
        duration_s: 600,
        policy_digest: "test".into(),
        continued_from_s: continued.map(|c| c.0),
        canary_from_ms: continued.map(|c| c.1),
    }
}

/// A release continued after its agents were away a night, its canary read
/// again from then on, is calibrated on the samples its outcome was decided
/// on (read from where its last ticks read them), not on the hour it first
/// started; one whose canary is read again so late that its window has not
/// ended yet is not read back at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_read_again_later_is_calibrated_on_the_window_it_was_decided_on() {
    use backstop::ledger::{Actor, Ledger, Record, ReleaseFinished, sqlite_url};
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("l.db");
    let now = 1_800_000_000;
    seed(&path, now).await;
    let ledger = Ledger::open(&sqlite_url(&path)).await.unwrap();
    let agent = Actor::Agent { instance: Some("a2".into()) };
    // Started 12 h ago, 300 s reached, then continued 3 h ago: its canary read from 3 h − 300 s.
    let (first_ms, again_ms) = ((now - 12 * 3600) * 1000, (now - 3 * 3600) * 1000);
    let read_from_ms = again_ms - 300_000;
    for (id, again_ms, read_from_ms) in
        [("checkout-v50", again_ms, read_from_ms), ("checkout-v51", (now - 60) * 1000, (now - 360) * 1000)]
    {
        ledger.append(id, &agent, first_ms, Record::ReleaseStarted(started(id, None))).await.unwrap();
        let again = started(id, Some((300, read_from_ms)));
        ledger.append(id, &agent, again_ms, Record::ReleaseStarted(again)).await.unwrap();
        let status = backstop::release::ReleaseStatus::Promoted;
        let finished = ReleaseFinished { status, ticks: 60, decided_at_s: 600, model_usage: Default::default() };
        ledger.append(id, &agent, again_ms + 300_000, Record::ReleaseFinished(finished)).await.unwrap();
    }
    let past = backstop::run::history::past_releases(&ledger, "checkout", now as f64).await.unwrap();
    let ids: Vec<&str> = past.iter().map(|p| p.release_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "checkout-v40",
            "checkout-v41",
            "checkout-v42",
            "checkout-v43",
            "checkout-v44",
            "checkout-v45",
            "checkout-v50"
        ]
    );
    let v50 = &past[6];
    assert_eq!(v50.started_unix_s, (first_ms / 1000) as f64, "counted once, from its first start");
    let zero = v50.time_zero();
    assert_eq!(zero.canary_s, (read_from_ms / 1000) as f64, "its canary from where its last ticks read it");
    assert_eq!(zero.started_s, (first_ms / 1000) as f64, "an earlier-window baseline before its start");
    let v40 = &past[0];
    assert_eq!(v40.time_zero().canary_s, v40.started_unix_s, "never read again: from its start");
}

/// A real Prometheus holding the history, a ledger of the releases in it,
/// and a configuration reading them: (server, folder, ledger, config).
async fn with_history()
-> (crate::support::prometheus::Prometheus, tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let now = backstop::clock::Clock::now_ms(&backstop::clock::SystemClock) / 1000;
    let prom = crate::support::prometheus::Prometheus::start_with_history(&history(now));
    let d = tempfile::tempdir().unwrap();
    let ledger_path = d.path().join("l.db");
    seed(&ledger_path, now).await;
    let config = prometheus_release(d.path(), &prom.url);
    (prom, d, ledger_path, config)
}
