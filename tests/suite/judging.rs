//! Judge v2 end to end on recorded scenarios: each `baseline_kind` gets its
//! method, and the new tests (sequential, trend) fire on the faults they are
//! for and not on the healthy families built to fool them.

use std::path::PathBuf;

use backstop::eval::{JudgeName, ReplayDecision, evaluate, judge_by_name, load_corpus};
use backstop::judge::{Comparison, judge};
use backstop::policy::PolicyFile;
use backstop::signals::{BaselineKind, ReplaySource, load_scenario};

fn policy() -> PolicyFile {
    PolicyFile::load(std::path::Path::new("policies/default.toml")).unwrap()
}

fn scenario(path: &str) -> backstop::signals::Scenario {
    load_scenario(std::path::Path::new(path)).unwrap()
}

fn replay(name: JudgeName, path: &str) -> backstop::eval::Replay {
    judge_by_name(name, &policy()).unwrap().replay(&scenario(path).data)
}

#[test]
fn an_earlier_window_baseline_is_judged_before_after_and_its_held_out_split_meets_the_bar() {
    let corpus = load_corpus(&[
        PathBuf::from("fixtures/scenarios/preceding-holdout"),
        PathBuf::from("fixtures/scenarios/seasonal-holdout"),
    ]);
    assert!(corpus.errors.is_empty(), "{:?}", corpus.errors);
    let judges = [
        judge_by_name(JudgeName::Backstop, &policy()).unwrap(),
        judge_by_name(JudgeName::BackstopPaired, &policy()).unwrap(),
    ];
    let report = evaluate(&corpus, &judges);
    let ours = &report.judges["backstop"].summary;
    let paired = &report.judges["backstop-paired"].summary;
    // The bar for earlier-window baselines: ≤ 15 % false rollbacks at ≥ 90 % recall.
    assert!(ours.false_rollback_rate.unwrap() <= 0.15 && ours.recall.unwrap() >= 0.90, "{ours:?}");
    // v1's paired test on the same releases rolls back several times as many healthy ones.
    assert!(paired.false_rollback_rate.unwrap() >= 3.0 * ours.false_rollback_rate.unwrap().max(0.02), "{paired:?}");

    // The findings say which comparison ran, with the earlier window's autocorrelation.
    let s = scenario("fixtures/scenarios/preceding-holdout/holdout-preceding-good-wander-000.json");
    assert_eq!(s.data.baseline_kind, BaselineKind::Preceding);
    let r = judge(&ReplaySource::new(s.data.clone().into()).observe_at(600), &policy().judge);
    for f in &r.findings {
        assert!(matches!(f.comparison, Comparison::BeforeAfter { .. }), "{f:?}");
    }
    assert!(r.findings[1].explanation.contains("the window before the release"), "{}", r.findings[1].explanation);
}

#[test]
fn a_tripled_error_rate_below_the_absolute_tolerance_fails_on_sequential_evidence() {
    let path = "fixtures/scenarios/v2-holdout/v2holdout-bad-subtle-errors-strong-traffic-000.json";
    let r = replay(JudgeName::Backstop, path);
    assert_eq!(r.decision, ReplayDecision::Rollback, "{r:?}");
    // The error ratio's own sequential test, not only the log templates
    // (their test is the same, on the lines the errors write): without logs too.
    let mut no_logs = policy();
    no_logs.judge.logs.enabled = false;
    let r = judge_by_name(JudgeName::Backstop, &no_logs).unwrap().replay(&scenario(path).data);
    assert_eq!(r.decision, ReplayDecision::Rollback, "{r:?}");
    assert!(
        r.why.iter().any(|w| w.starts_with("http_error_ratio: FAILING") && w.contains("sequential evidence")),
        "{:?}",
        r.why
    );
}

#[test]
fn a_slow_leak_fails_on_its_trend_and_fresh_pods_catching_up_do_not() {
    let r =
        replay(JudgeName::Backstop, "fixtures/scenarios/v2-holdout/v2holdout-bad-slow-leak-medium-traffic-000.json");
    assert_eq!(r.decision, ReplayDecision::Rollback, "{r:?}");
    assert!(r.why.iter().any(|w| w.contains("FAILING (leak)")), "{:?}", r.why);
    for k in 0..6 {
        let path = format!("fixtures/scenarios/v2-holdout/v2holdout-good-memory-warmup-{k:03}.json");
        let r = replay(JudgeName::Backstop, &path);
        assert_eq!(r.decision, ReplayDecision::Promote, "{path}: {r:?}");
    }
}
