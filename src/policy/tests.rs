//! One test per invariant (DESIGN.md), plus a table over modes × verdicts × model inputs.

use super::*;
use crate::judge::{Finding, JudgeResult, MetricStatus, Verdict};
use crate::signals::BadDirection;

fn judge(verdict: Verdict, complete: bool) -> JudgeResult {
    JudgeResult {
        verdict,
        now_s: 600,
        window_complete: complete,
        findings: vec![],
        summary: format!("{verdict:?}"),
        log_mining: None,
    }
}

fn facts() -> ReleaseFacts {
    ReleaseFacts {
        release_id: "r1".into(),
        service: "checkout".into(),
        target: "haproxy/checkout".into(),
        service_targets: 0,
        declared_targets: vec!["haproxy/checkout".into()].into(),
        candidate_revision: "v2".into(),
        last_known_good: Some("v1".into()),
        quarantine: None,
        last_known_good_from: None,
        irreversible: false,
        environment: "production".into(),
    }
}

fn policy() -> PolicyFile {
    PolicyFile::embedded_default().unwrap()
}

fn decide_with(
    p: &PolicyFile,
    j: &JudgeResult,
    model: &ModelInput,
    f: &ReleaseFacts,
    h: &History,
    failure: Option<&str>,
) -> PolicyOutcome {
    evaluate(
        p,
        &PolicyInput {
            judge: j,
            model,
            release: f,
            history: h,
            mode: RunMode::Act,
            signal_failure: failure,
            now_ms: 10_000_000,
        },
    )
}

fn decide(j: &JudgeResult, f: &ReleaseFacts) -> Decision {
    decide_with(&policy(), j, &ModelInput::NotConfigured, f, &History::default(), None).decision
}

#[test]
fn failing_canary_rolls_back_to_last_known_good_only() {
    match decide(&judge(Verdict::Fail, false), &facts()) {
        Decision::Rollback { plan } => {
            assert_eq!(plan.to_revision, "v1");
            assert_eq!(plan.target, "haproxy/checkout");
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn invariant_undeclared_target_is_denied() {
    let f = ReleaseFacts { target: "haproxy/other".into(), ..facts() };
    assert!(matches!(decide(&judge(Verdict::Fail, false), &f), Decision::Deny { .. }));
}

#[test]
fn invariant_no_last_known_good_is_denied() {
    let f = ReleaseFacts { last_known_good: None, ..facts() };
    assert!(matches!(decide(&judge(Verdict::Fail, false), &f), Decision::Deny { .. }));
}

#[test]
fn invariant_irreversible_release_is_never_rolled_back_automatically() {
    let f = ReleaseFacts { irreversible: true, ..facts() };
    for action in [IrreversibleAction::RequireApproval, IrreversibleAction::Hold] {
        let p = PolicyFile { irreversible: action, ..policy() };
        let d =
            decide_with(&p, &judge(Verdict::Fail, false), &ModelInput::NotConfigured, &f, &History::default(), None);
        assert!(!matches!(d.decision, Decision::Rollback { .. }), "{d:?}");
        assert!(d.trace.iter().any(|h| h.rule == RuleId::Irreversible));
    }
}

#[test]
fn invariant_rate_limit_holds() {
    let p = policy();
    let now = 10_000_000;
    let past = |at_ms: i64, id: &str| crate::policy::PastRollback { at_ms, release_id: id.into() };
    let n = p.rate_limit.max_rollbacks as usize;
    let recent = History { automated_rollbacks: (0..n).map(|i| past(now - 1000, &format!("checkout-v{i}"))).collect() };
    let d = decide_with(&p, &judge(Verdict::Fail, false), &ModelInput::NotConfigured, &facts(), &recent, None);
    let Decision::RequireApproval { reason, .. } = &d.decision else { panic!("{d:?}") };
    // The hold names the rollbacks that used the limit up, newest first.
    let named = (0..n).rev().map(|i| format!("checkout-v{i}")).collect::<Vec<_>>().join(", ");
    assert!(reason.contains(&named), "{reason}");
    let old = History { automated_rollbacks: vec![past(now - 24 * 3_600_000, "old"); 10] };
    let d = decide_with(&p, &judge(Verdict::Fail, false), &ModelInput::NotConfigured, &facts(), &old, None);
    assert!(matches!(d.decision, Decision::Rollback { .. }), "old rollbacks must not count: {d:?}");
}

#[test]
fn invariant_signal_failure_holds_never_rolls_back() {
    for v in [Verdict::Fail, Verdict::Pass, Verdict::Inconclusive] {
        let d = decide_with(
            &policy(),
            &judge(v, false),
            &ModelInput::NotConfigured,
            &facts(),
            &History::default(),
            Some("prometheus: 503"),
        );
        assert!(matches!(d.decision, Decision::Hold { .. }), "{v:?}: {d:?}");
    }
}

#[test]
fn invariant_missing_data_holds_never_rolls_back() {
    let mut j = judge(Verdict::Inconclusive, false);
    j.now_s = 900;
    let spec = crate::signals::MetricSpec { name: "err".into(), unit: "ratio".into(), bad_direction: BadDirection::Up };
    j.findings.push(Finding { status: MetricStatus::NoData, ..Finding::empty(&spec) });
    assert!(matches!(decide(&j, &facts()), Decision::Hold { .. }));
    j.window_complete = true;
    assert!(matches!(decide(&j, &facts()), Decision::Hold { .. }));
}

#[test]
fn invariant_model_cannot_loosen() {
    let promote = ModelInput::Verdict { recommendation: ModelRecommendation::Promote, evidence_verified: true };
    let d = decide_with(&policy(), &judge(Verdict::Fail, false), &promote, &facts(), &History::default(), None);
    assert!(matches!(d.decision, Decision::Rollback { .. }), "{d:?}");
    let d = decide_with(&policy(), &judge(Verdict::Inconclusive, false), &promote, &facts(), &History::default(), None);
    assert_eq!(d.decision, Decision::Continue);
}

#[test]
fn model_rollback_needs_policy_and_verified_evidence() {
    let rb = |v| ModelInput::Verdict { recommendation: ModelRecommendation::Rollback, evidence_verified: v };
    let pass = judge(Verdict::Pass, true);
    let d = decide_with(&policy(), &pass, &rb(true), &facts(), &History::default(), None);
    assert!(matches!(d.decision, Decision::RequireApproval { .. }), "off by default: {d:?}");
    let allow = PolicyFile { allow_model_rollback: true, ..policy() };
    let d = decide_with(&allow, &pass, &rb(false), &facts(), &History::default(), None);
    assert!(matches!(d.decision, Decision::RequireApproval { .. }), "unverified evidence: {d:?}");
    let d = decide_with(&allow, &pass, &rb(true), &facts(), &History::default(), None);
    assert!(matches!(d.decision, Decision::Rollback { .. }), "{d:?}");
}

#[test]
fn model_required_for_promotion_holds_when_unavailable() {
    let p = PolicyFile { require_model_for_promotion: true, ..policy() };
    let down = ModelInput::Unavailable { reason: "timeout".into() };
    let d = decide_with(&p, &judge(Verdict::Pass, true), &down, &facts(), &History::default(), None);
    assert!(matches!(d.decision, Decision::Hold { .. }), "{d:?}");
}

#[test]
fn autonomy_and_freeze_require_a_human() {
    let mut p = policy();
    p.services.insert("checkout".into(), file_service(Autonomy::Approve));
    for v in [Verdict::Fail, Verdict::Pass] {
        let d = decide_with(&p, &judge(v, true), &ModelInput::NotConfigured, &facts(), &History::default(), None);
        assert!(matches!(d.decision, Decision::RequireApproval { .. }), "{v:?}: {d:?}");
    }
    let frozen = PolicyFile::parse(
        std::path::Path::new("p.toml"),
        "version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n[[freeze]]\nname = \"all\"\nstart = \"1970-01-01T00:00:00Z\"\nend = \"2999-01-01T00:00:00Z\"\n",
    )
    .unwrap();
    let d = decide_with(
        &frozen,
        &judge(Verdict::Pass, true),
        &ModelInput::NotConfigured,
        &facts(),
        &History::default(),
        None,
    );
    assert!(matches!(d.decision, Decision::RequireApproval { proposed: Proposal::Promote, .. }), "{d:?}");
}

fn file_service(a: Autonomy) -> file::ServicePolicy {
    file::ServicePolicy { autonomy: Some(a), ..Default::default() }
}

/// The whole table: no combination of mode, verdict and model input promotes
/// a failing canary, rolls back a passing one without policy's consent, or
/// rolls back when a signal backend failed.
#[test]
fn decision_table_never_loosens() {
    let models = [
        ModelInput::NotConfigured,
        ModelInput::Unavailable { reason: "x".into() },
        ModelInput::Verdict { recommendation: ModelRecommendation::Promote, evidence_verified: true },
        ModelInput::Verdict { recommendation: ModelRecommendation::Continue, evidence_verified: true },
        ModelInput::Verdict { recommendation: ModelRecommendation::Hold, evidence_verified: false },
        ModelInput::Verdict { recommendation: ModelRecommendation::Rollback, evidence_verified: false },
        ModelInput::Verdict { recommendation: ModelRecommendation::Rollback, evidence_verified: true },
    ];
    for mode in [RunMode::Act, RunMode::Advise] {
        for verdict in [Verdict::Pass, Verdict::Fail, Verdict::Inconclusive] {
            for model in &models {
                for failure in [None, Some("down")] {
                    let j = judge(verdict, verdict == Verdict::Pass);
                    let f = facts();
                    let h = History::default();
                    let input = PolicyInput {
                        judge: &j,
                        model,
                        release: &f,
                        history: &h,
                        mode,
                        signal_failure: failure,
                        now_ms: 0,
                    };
                    let d = evaluate(&policy(), &input).decision;
                    let case = format!("{mode:?} {verdict:?} {model:?} {failure:?}: {d:?}");
                    if verdict == Verdict::Fail {
                        assert!(!matches!(d, Decision::Promote), "{case}");
                    }
                    if verdict != Verdict::Fail || failure.is_some() {
                        assert!(!matches!(d, Decision::Rollback { .. }), "{case}");
                    }
                    if verdict != Verdict::Pass {
                        assert!(!matches!(d, Decision::Promote), "{case}");
                    }
                }
            }
        }
    }
}

// ---- SLO guards: the judge on real series, then policy, over every model input.

mod guards {
    use super::*;
    use crate::signals::{BaselineKind, MetricSeries, MetricSpec, Observation, Traffic};

    const GUARDED: &str = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n\
                           [judge.metrics.err]\nmax = 0.05\nfor_s = 60\nmin_requests = 50\n";

    /// 60 steps of 10 s; error ratios per step from `b(i)`, `c(i)`.
    fn obs(kind: BaselineKind, b: impl Fn(usize) -> f64, c: impl Fn(usize) -> f64, canary_n: u64) -> Observation {
        let n = 60;
        Observation {
            service: "checkout".into(),
            step_s: 10,
            duration_s: 600,
            now_s: 600,
            baseline_kind: kind,
            traffic: Some(Traffic { baseline: vec![1000; n], canary: vec![canary_n; n] }),
            metrics: vec![MetricSeries {
                spec: MetricSpec { name: "err".into(), unit: "ratio".into(), bad_direction: BadDirection::Up },
                baseline: (0..n).map(|i| Some(b(i))).collect(),
                canary: (0..n).map(|i| Some(c(i))).collect(),
            }],
            logs: vec![],
            events: vec![],
            ml: Default::default(),
        }
    }

    fn parse(text: &str) -> PolicyFile {
        PolicyFile::parse(std::path::Path::new("guards.toml"), text).unwrap()
    }

    fn models() -> Vec<ModelInput> {
        let v = |recommendation| ModelInput::Verdict { recommendation, evidence_verified: true };
        vec![
            ModelInput::NotConfigured,
            ModelInput::Unavailable { reason: "timeout".into() },
            v(ModelRecommendation::Promote),
            v(ModelRecommendation::Continue),
            v(ModelRecommendation::Hold),
            v(ModelRecommendation::Rollback),
        ]
    }

    fn outcomes(p: &PolicyFile, o: &Observation) -> Vec<PolicyOutcome> {
        let mut allowing = p.clone();
        allowing.allow_model_rollback = true;
        let j = crate::judge::judge(o, &p.judge_for("checkout"));
        let mut out = vec![];
        for p in [p, &allowing] {
            for m in models() {
                out.push(decide_with(p, &j, &m, &facts(), &History::default(), None));
            }
        }
        out
    }

    fn rules(o: &PolicyOutcome) -> Vec<RuleId> {
        o.trace.iter().map(|r| r.rule.clone()).collect()
    }

    #[test]
    fn a_canary_past_its_guard_fails_before_the_statistics_are_sure() {
        // 12 requests a step, one error each (8.3 %) against a 3 % baseline from step 30.
        let o = obs(BaselineKind::Concurrent, |_| 0.03, |i| if i >= 30 { 1.0 / 12.0 } else { 0.0 }, 12);
        let without = crate::judge::judge(&o, &policy().judge);
        assert_ne!(without.verdict, crate::judge::Verdict::Fail, "the paired test alone is not sure yet");
        for d in outcomes(&parse(GUARDED), &o) {
            assert!(matches!(d.decision, Decision::Rollback { .. }), "{d:?}");
            assert!(rules(&d).contains(&RuleId::GuardCanaryBreach), "{:?}", rules(&d));
            let detail = &d.trace.iter().find(|r| r.rule == RuleId::GuardCanaryBreach).unwrap().detail;
            assert!(detail.contains("canary 8.33% > guard 5.00% for 60s (baseline 3.00%)"), "{detail}");
        }
    }

    #[test]
    fn a_shared_breach_is_never_a_rollback_nor_a_promotion() {
        let jump = |i: usize| if i >= 20 { 0.08 } else { 0.003 };
        let o = obs(BaselineKind::Concurrent, jump, jump, 60);
        for d in outcomes(&parse(GUARDED), &o) {
            assert!(!matches!(d.decision, Decision::Rollback { .. } | Decision::Promote), "{d:?}");
            assert!(rules(&d).contains(&RuleId::GuardSharedBreach), "{:?}", rules(&d));
            match &d.decision {
                Decision::Hold { reason } => assert!(reason.contains("incident-like condition on err"), "{reason}"),
                // Only a model asking to roll back turns the hold into a question for a human.
                Decision::RequireApproval { proposed: Proposal::Rollback { .. }, .. } => {
                    assert!(rules(&d).contains(&RuleId::ModelRollbackNeedsHuman))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn without_a_guard_a_baseline_that_jumps_holds_instead_of_promoting() {
        let jump = |i: usize| if i >= 20 { 0.08 } else { 0.003 };
        let o = obs(BaselineKind::Concurrent, jump, jump, 60);
        for d in outcomes(&policy(), &o) {
            assert!(!matches!(d.decision, Decision::Rollback { .. } | Decision::Promote), "{d:?}");
            assert!(rules(&d).contains(&RuleId::BaselineShifted), "{:?}", rules(&d));
        }
    }

    #[test]
    fn with_an_earlier_window_as_baseline_a_canary_breach_fails_even_if_the_baseline_breached() {
        for kind in [BaselineKind::Preceding, BaselineKind::Seasonal] {
            let o = obs(kind, |_| 0.06, |_| 0.07, 400);
            for d in outcomes(&parse(GUARDED), &o) {
                assert!(matches!(d.decision, Decision::Rollback { .. }), "{kind:?}: {d:?}");
            }
        }
    }

    #[test]
    fn a_guard_never_loosens_a_failing_metric() {
        // Both sides past the guard, and the canary far worse than the baseline:
        // the comparison fails the metric; the shared breach does not soften it.
        let o = obs(BaselineKind::Concurrent, |_| 0.06, |i| if i >= 10 { 0.30 } else { 0.06 }, 400);
        for d in outcomes(&parse(GUARDED), &o) {
            assert!(matches!(d.decision, Decision::Rollback { .. }), "{d:?}");
        }
        // And a guard that never fires changes nothing about a statistical failure.
        let loose = parse(&GUARDED.replace("max = 0.05", "max = 0.9"));
        let o = obs(BaselineKind::Concurrent, |_| 0.003, |i| if i >= 10 { 0.2 } else { 0.003 }, 400);
        for d in outcomes(&loose, &o) {
            assert!(matches!(d.decision, Decision::Rollback { .. }), "{d:?}");
        }
    }

    #[test]
    fn a_spike_shorter_than_for_s_is_not_a_breach() {
        let o = obs(BaselineKind::Concurrent, |_| 0.004, |i| if (40..43).contains(&i) { 1.0 / 16.0 } else { 0.0 }, 16);
        let j = crate::judge::judge(&o, &parse(GUARDED).judge_for("checkout"));
        assert!(j.findings[0].guard.is_none(), "{:?}", j.findings[0]);
        assert_eq!(j.verdict, crate::judge::Verdict::Pass);
    }

    #[test]
    fn a_service_override_replaces_the_general_guard() {
        let p = parse(&format!("{GUARDED}[services.checkout.metrics.err]\nmax = 0.5\n"));
        let o = obs(BaselineKind::Concurrent, |_| 0.03, |i| if i >= 30 { 1.0 / 12.0 } else { 0.0 }, 12);
        let j = crate::judge::judge(&o, &p.judge_for("checkout"));
        assert!(j.findings[0].guard.is_none(), "checkout's own limit is 50 %");
        let j = crate::judge::judge(&o, &p.judge_for("search"));
        assert!(j.findings[0].guard.is_some(), "other services keep the general 5 %");
    }

    #[test]
    fn guard_fields_are_validated_with_the_field_named() {
        let head = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
        for (body, field) in [
            ("[judge.metrics.err]\nmax = 0.05\nmin = 0.01\n", "judge.metrics.err.min"),
            ("[judge.metrics.err]\nmax = 0.05\nfor_s = 0\n", "judge.metrics.err.for_s"),
            ("[judge.metrics.err]\nmax = 0.05\nmin_requests = 0\n", "judge.metrics.err.min_requests"),
            ("[judge.metrics.err]\nfor_s = 30\n", "judge.metrics.err.max"),
            ("[services.checkout.metrics.lat]\nmax = 800\nfor_s = 999999\n", "services.checkout.metrics.lat.for_s"),
            ("[services.checkout.metrics.lat]\nmaxx = 800\n", "maxx"),
        ] {
            let e =
                PolicyFile::parse(std::path::Path::new("p.toml"), &format!("{head}{body}")).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("p.toml"), "{body}: {e}");
        }
    }

    #[test]
    fn a_guard_on_a_metrics_good_side_is_refused_with_the_field_named() {
        let p = parse(&GUARDED.replace("max = 0.05", "min = 0.05"));
        let up = [MetricSpec { name: "err".into(), unit: "ratio".into(), bad_direction: BadDirection::Up }];
        let e = p.check_guards("checkout", &up).unwrap_err().to_string();
        assert!(e.contains("guards.toml") && e.contains("`judge.metrics.err.min`") && e.contains("`max`"), "{e}");
        let p = parse(
            "version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n[services.checkout.metrics.rps]\nmax = 10\n",
        );
        let down = [MetricSpec { name: "rps".into(), unit: "rps".into(), bad_direction: BadDirection::Down }];
        let e = p.check_guards("checkout", &down).unwrap_err().to_string();
        assert!(e.contains("services.checkout.metrics.rps.max"), "{e}");
        assert!(p.check_guards("search", &down).is_ok(), "another service has no such guard");
        let both = [MetricSpec { name: "rps".into(), unit: "rps".into(), bad_direction: BadDirection::Both }];
        assert!(p.check_guards("checkout", &both).is_ok());
    }
}

#[test]
fn a_policy_that_ignores_every_metric_of_a_release_is_refused_with_the_field_named() {
    let mut text = String::from("version = 1\nrate_limit = { max_rollbacks = 1, window_minutes = 60 }\n");
    for m in ["err", "lat"] {
        text.push_str(&format!("[judge.metrics.{m}]\nignore = true\n"));
    }
    let p = PolicyFile::parse(std::path::Path::new("quiet.toml"), &text).unwrap();
    let spec = |name: &str| crate::signals::MetricSpec {
        name: name.into(),
        unit: "ms".into(),
        bad_direction: BadDirection::Up,
    };
    let e = p.check_guards("checkout", &[spec("err"), spec("lat")]).unwrap_err().to_string();
    assert!(
        e.contains("quiet.toml") && e.contains("judge.metrics.lat.ignore") && e.contains("vouch for nothing"),
        "{e}"
    );
    assert!(p.check_guards("checkout", &[spec("err"), spec("lat"), spec("cpu")]).is_ok(), "one metric still judged");
}

// ---- Model releases: drift holds, falling labelled quality rolls back, pending labels follow policy.

mod ml {
    use super::*;
    use crate::signals::simulator::{ModelSim, SimConfig, Simulator};

    fn release(m: ModelSim) -> crate::signals::Observation {
        let cfg = SimConfig { total_rps: 200.0, canary_weight: 0.2, model: Some(m), ..SimConfig::default() };
        Simulator::new(cfg).observe_at(1800)
    }

    fn outcome(p: &PolicyFile, m: ModelSim, model: &ModelInput) -> PolicyOutcome {
        let j = crate::judge::judge(&release(m), &p.judge_for("checkout"));
        decide_with(p, &j, model, &facts(), &History::default(), None)
    }

    fn rules(o: &PolicyOutcome) -> Vec<RuleId> {
        o.trace.iter().map(|r| r.rule.clone()).collect()
    }

    fn parse(text: &str) -> PolicyFile {
        let head = "version = 1\n[rate_limit]\nmax_rollbacks = 3\nwindow_minutes = 60\n";
        PolicyFile::parse(std::path::Path::new("ml.toml"), &format!("{head}{text}")).unwrap()
    }

    const DRIFT: ModelSim = ModelSim {
        positive_rate: 0.3,
        accuracy: 0.92,
        label_share: 0.5,
        label_delay_s: 120,
        change_at_s: 300,
        prediction_shift: 0.0,
        feature_shift: 1.0,
        accuracy_drop: 0.0,
        schema_change: false,
    };

    #[test]
    fn data_drift_with_stable_quality_holds_for_a_human_and_never_promotes() {
        let concur = ModelInput::Verdict { recommendation: ModelRecommendation::Promote, evidence_verified: true };
        for model in [ModelInput::NotConfigured, concur] {
            let o = outcome(&policy(), DRIFT, &model);
            assert!(rules(&o).contains(&RuleId::DriftHolds), "{:?}", rules(&o));
            match &o.decision {
                Decision::Hold { reason } => assert!(reason.contains("drift on feature.amount"), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        // Unless policy says drift is a rollback.
        let strict = outcome(&parse("[judge.ml]\ndrift = \"rollback\"\n"), DRIFT, &ModelInput::NotConfigured);
        assert!(matches!(strict.decision, Decision::Rollback { .. }), "{strict:?}");
    }

    #[test]
    fn prediction_drift_with_falling_labelled_accuracy_rolls_back() {
        let m = ModelSim { feature_shift: 0.0, prediction_shift: 0.1, accuracy_drop: 0.08, ..DRIFT };
        let o = outcome(&policy(), m, &ModelInput::NotConfigured);
        assert!(matches!(o.decision, Decision::Rollback { .. }), "{o:?}");
        let why = &o.trace[0].detail;
        assert!(why.contains("label.fraud"), "{why}");
    }

    #[test]
    fn a_window_that_ends_waiting_for_labels_holds_or_promotes_with_watch_as_policy_says() {
        let m = ModelSim { feature_shift: 0.0, label_delay_s: 4000, ..DRIFT };
        let held = outcome(&policy(), m.clone(), &ModelInput::NotConfigured);
        assert!(rules(&held).contains(&RuleId::LabelsPendingHold), "{:?}", rules(&held));
        assert!(matches!(&held.decision, Decision::Hold { reason } if reason.contains("label.fraud")), "{held:?}");
        let p = parse("[judge.ml]\nlabels_pending = \"promote\"\n");
        let promoted = outcome(&p, m, &ModelInput::NotConfigured);
        assert_eq!(promoted.decision, Decision::Promote, "{promoted:?}");
        assert!(rules(&promoted).contains(&RuleId::LabelsPendingPromoteWithWatch), "{:?}", rules(&promoted));
    }

    #[test]
    fn a_schema_change_holds_by_default_and_its_nulls_fail_the_canary() {
        // Without the null-rate metric the event alone holds; with it the canary fails.
        let m = ModelSim { feature_shift: 0.0, schema_change: true, ..DRIFT };
        let mut obs = release(m);
        let j = crate::judge::judge(&obs, &policy().judge);
        assert_eq!(j.verdict, crate::judge::Verdict::Fail, "{}", j.summary);
        assert!(j.failing().any(|f| f.metric == "feature_null_ratio"));
        obs.metrics.retain(|m| m.spec.name != "feature_null_ratio");
        let j = crate::judge::judge(&obs, &policy().judge);
        assert!(j.drifted().any(|f| f.metric == "input_schema"), "{}", j.summary);
        let o = decide_with(&policy(), &j, &ModelInput::NotConfigured, &facts(), &History::default(), None);
        assert!(matches!(o.decision, Decision::Hold { .. }), "{o:?}");
    }
}

fn quarantined() -> ReleaseFacts {
    let condemned = memory::Condemned {
        release_id: "r0".into(),
        target: "haproxy/eu-1".into(),
        rolled_back_to: "v1".into(),
        reason: "error_ratio +5 pt".into(),
        evidence: vec![],
    };
    let q = memory::Quarantine { revision: "v2".into(), at_ms: 1_000, by: "agent:a".into(), condemned };
    ReleaseFacts { quarantine: Some(q), ..facts() }
}

#[test]
fn a_quarantined_revision_is_held_from_its_first_tick_and_promoted_only_through_a_person() {
    let f = quarantined();
    match decide(&judge(Verdict::Inconclusive, false), &f) {
        Decision::Hold { reason } => assert!(reason.contains("rolled back on `haproxy/eu-1`"), "{reason}"),
        d => panic!("a quarantined release holds while judged: {d:?}"),
    }
    match decide(&judge(Verdict::Pass, true), &f) {
        Decision::RequireApproval { proposed: Proposal::Promote, reason } => {
            assert!(reason.contains("revisions clear checkout v2"), "{reason}")
        }
        d => panic!("a passing quarantined canary needs a person: {d:?}"),
    }
    // Knowing the revision is bad makes nothing slower: the judge's rollback stands.
    assert!(matches!(decide(&judge(Verdict::Fail, false), &f), Decision::Rollback { .. }));
    // Without the quarantine, the same pass promotes.
    assert_eq!(decide(&judge(Verdict::Pass, true), &facts()), Decision::Promote);
}

#[test]
fn a_refusing_policy_denies_a_quarantined_promotion_even_to_a_person() {
    let mut p = policy();
    p.quarantine.action = memory::QuarantineAction::Refuse;
    let f = quarantined();
    let d = decide_with(&p, &judge(Verdict::Pass, true), &ModelInput::NotConfigured, &f, &History::default(), None);
    assert!(matches!(d.decision, Decision::Deny { .. }), "{:?}", d.decision);
    assert!(d.trace.iter().any(|h| h.rule == RuleId::QuarantineRefuses));
    let who = approval::Principal::named("alice@example.com");
    p.approvals.approvers = vec![who.identity.clone()];
    let ask = approval::PromoteAsk { who: &who, release: &f, judge: Some(Verdict::Pass), reason: "ship it" };
    assert!(matches!(
        approval::rule_promote(&p, &ask).ruling,
        approval::Ruling::Refused { why: approval::Refusal::Quarantined { .. }, .. }
    ));
    p.quarantine.action = memory::QuarantineAction::Hold;
    let allowed = approval::rule_promote(&p, &ask).ruling;
    assert!(matches!(allowed, approval::Ruling::Execute { decision: Decision::Promote }), "{allowed:?}");
}

/// A release's start record stores how many targets were declared, not
/// the list (10,000 releases × 10,000 names was 1 GiB of start records);
/// records written before, holding the list, still read.
#[test]
fn declared_targets_are_stored_as_their_count_and_old_lists_still_read() {
    let f = facts();
    let stored = serde_json::to_value(&f).unwrap();
    assert_eq!(stored["declared_targets"], serde_json::json!({ "count": 1 }));
    let back: ReleaseFacts = serde_json::from_value(stored.clone()).unwrap();
    assert!(back.declared_targets.is_empty(), "a count reads as no list: the configuration's list decides");
    let mut old = stored;
    old["declared_targets"] = serde_json::json!(["haproxy/checkout", "haproxy/payments"]);
    let back: ReleaseFacts = serde_json::from_value(old).unwrap();
    assert_eq!(&*back.declared_targets, ["haproxy/checkout".to_string(), "haproxy/payments".to_string()]);
}
