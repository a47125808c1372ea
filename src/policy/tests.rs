//! One test per invariant (DESIGN.md), plus a table over modes × verdicts × model inputs.

use super::*;
use crate::judge::{Finding, JudgeResult, MetricStatus, Verdict};
use crate::signals::BadDirection;

fn judge(verdict: Verdict, complete: bool) -> JudgeResult {
    JudgeResult { verdict, now_s: 600, window_complete: complete, findings: vec![], summary: format!("{verdict:?}") }
}

fn facts() -> ReleaseFacts {
    ReleaseFacts {
        release_id: "r1".into(),
        service: "checkout".into(),
        target: "haproxy/checkout".into(),
        declared_targets: vec!["haproxy/checkout".into()],
        candidate_revision: "v2".into(),
        last_known_good: Some("v1".into()),
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
        assert!(d.trace.iter().any(|h| h.rule == "invariant.irreversible"));
    }
}

#[test]
fn invariant_rate_limit_holds() {
    let p = policy();
    let now = 10_000_000;
    let recent = History { automated_rollbacks_ms: vec![now - 1000; p.rate_limit.max_rollbacks as usize] };
    let d = decide_with(&p, &judge(Verdict::Fail, false), &ModelInput::NotConfigured, &facts(), &recent, None);
    assert!(matches!(d.decision, Decision::RequireApproval { .. }), "{d:?}");
    let old = History { automated_rollbacks_ms: vec![now - 24 * 3_600_000; 10] };
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
    file::ServicePolicy { autonomy: Some(a) }
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
