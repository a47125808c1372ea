//! The decision function. Each branch records the rule that fired, so a
//! human can follow how a decision was reached.

use super::memory::QuarantineAction;
use super::{
    Autonomy, Decision, IrreversibleAction, ModelInput, ModelRecommendation, PolicyFile, PolicyInput, PolicyOutcome,
    Proposal, RollbackPlan, RuleHit, RuleId, RunMode,
};
use crate::judge::{MetricStatus, Verdict};

struct Trace(Vec<RuleHit>);

impl Trace {
    fn hit(&mut self, rule: RuleId, detail: impl Into<String>) {
        self.0.push(RuleHit { rule, detail: detail.into() });
    }
}

/// Decide what to do. Pure and deterministic: no I/O, no clock but `input.now_ms`.
pub fn evaluate(policy: &PolicyFile, input: &PolicyInput) -> PolicyOutcome {
    let mut t = Trace(Vec::new());
    t.hit(RuleId::JudgeVerdict, format!("{}: {}", input.judge.verdict, input.judge.summary));
    if input.mode == RunMode::Advise {
        t.hit(RuleId::ModeAdvise, "advisory run: the decision is a recommendation and nothing executes");
    }
    let decided = decide(policy, input, &mut t);
    let decision = remembered(policy, input, &mut t, decided);
    t.hit(RuleId::Decision, decision.label());
    PolicyOutcome { decision, trace: t.0 }
}

/// A quarantined candidate (rolled back before, for this service, and not
/// cleared) is never promoted without a person. Holding: it is held from
/// its first tick, and a promotion becomes a request for an approver.
/// Refusing: a promotion is denied outright. Rollbacks and holds stand.
fn remembered(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace, decision: Decision) -> Decision {
    let Some(q) = &input.release.quarantine else { return decision };
    let r = input.release;
    let clear = format!("`backstop revisions clear {} {}`", r.service, r.candidate_revision);
    let promoting = matches!(
        decision,
        Decision::Promote | Decision::RequireApproval { proposed: Proposal::Promote, .. } | Decision::Continue
    );
    if !promoting {
        return decision;
    }
    match policy.quarantine.action {
        QuarantineAction::Refuse if decision != Decision::Continue => {
            t.hit(RuleId::QuarantineRefuses, q.describe());
            Decision::Deny {
                reason: format!(
                    "quarantined: {}; policy refuses to promote it until an approver clears it ({clear})",
                    q.describe()
                ),
            }
        }
        _ => {
            t.hit(RuleId::QuarantineHolds, q.describe());
            let reason = format!(
                "quarantined: {}; it is not promoted without a person (an approver promotes it, or clears it with \
                 {clear})",
                q.describe()
            );
            match decision {
                Decision::Continue => Decision::Hold { reason },
                Decision::RequireApproval { reason: also, .. } => {
                    Decision::RequireApproval { reason: format!("{reason}; and {also}"), proposed: Proposal::Promote }
                }
                _ => Decision::RequireApproval { reason, proposed: Proposal::Promote },
            }
        }
    }
}

fn decide(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace) -> Decision {
    if let Some(reason) = input.signal_failure {
        // Invariant: a failing backend never causes a rollback by itself.
        t.hit(RuleId::SignalFailureHolds, reason);
        return Decision::Hold { reason: format!("signal source failing, holding for a human: {reason}") };
    }
    match input.judge.verdict {
        Verdict::Fail => {
            for f in input.judge.failing().filter(|f| f.guard.is_some()) {
                t.hit(RuleId::GuardCanaryBreach, f.explanation.clone());
            }
            if let ModelInput::Verdict { recommendation: ModelRecommendation::Promote, .. } = input.model {
                t.hit(RuleId::ModelCannotLoosen, "model recommends promote; the judge failed the canary");
            }
            let reason = input.judge.summary.clone();
            rollback(policy, input, t, reason)
        }
        _ if input.judge.incidents().next().is_some() => incident(input, t),
        _ if input.judge.drifted().next().is_some() => drifted(policy, input, t),
        Verdict::Pass => promote(policy, input, t),
        Verdict::Inconclusive => inconclusive(policy, input, t),
    }
}

/// Both versions are affected (a shared guard breach, or the concurrent
/// baseline moved on its own): rolling back would not help and promoting
/// would ship into an incident. Hold; a model asking for a rollback only
/// reaches a human.
fn incident(input: &PolicyInput, t: &mut Trace) -> Decision {
    let mut names = Vec::new();
    for f in input.judge.incidents() {
        let rule =
            if f.status == MetricStatus::SharedBreach { RuleId::GuardSharedBreach } else { RuleId::BaselineShifted };
        t.hit(rule, f.explanation.clone());
        names.push(f.metric.as_str());
    }
    let reason = format!(
        "incident-like condition on {}: both versions are affected (a shared guard breach or a baseline that \
         moved on its own), so neither rolling back nor promoting helps; a human must look",
        names.join(", ")
    );
    if let ModelInput::Verdict { recommendation: ModelRecommendation::Rollback, .. } = input.model {
        t.hit(RuleId::ModelRollbackNeedsHuman, "model recommends rollback during a shared incident");
        return Decision::RequireApproval {
            reason,
            proposed: proposal_rollback(input, "model recommendation during a shared incident"),
        };
    }
    Decision::Hold { reason }
}

/// A distribution drifted (or the input schema changed) while labelled
/// quality holds or is not yet known: an alert for a human, never a rollback
/// by itself (`[judge.ml] drift = "rollback"` makes the judge fail it instead).
/// The window keeps running, so labels that fall later still roll back.
fn drifted(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace) -> Decision {
    let mut names = Vec::new();
    for f in input.judge.drifted() {
        t.hit(RuleId::DriftHolds, f.explanation.clone());
        names.push(f.metric.as_str());
    }
    let reason = format!(
        "drift on {} with labelled quality not falling: held for a human (data drift is an alert, not a rollback, \
         unless policy says so)",
        names.join(", ")
    );
    // A model may only make this stricter (a rollback through its own rules); never a promotion.
    model_stricter(policy, input, t, Decision::Hold { reason })
}

fn model_stricter(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace, otherwise: Decision) -> Decision {
    match input.model {
        ModelInput::Verdict { recommendation: ModelRecommendation::Rollback, evidence_verified } => {
            if policy.allow_model_rollback && *evidence_verified {
                t.hit(
                    RuleId::ModelRollbackCorroborated,
                    "model rollback allowed by policy with verified canary-only evidence",
                );
                rollback(policy, input, t, "model found verified canary-only evidence of harm".into())
            } else {
                t.hit(RuleId::ModelRollbackNeedsHuman, "model recommends rollback; policy requires a human");
                Decision::RequireApproval {
                    reason: "the model recommends a rollback the judge did not call for".into(),
                    proposed: proposal_rollback(input, "model recommendation"),
                }
            }
        }
        ModelInput::Verdict { recommendation: ModelRecommendation::Hold, .. } => {
            t.hit(RuleId::ModelHold, "model asks to hold");
            Decision::Hold { reason: "the model asks to hold for a human".into() }
        }
        _ => otherwise,
    }
}

fn inconclusive(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace) -> Decision {
    let j = input.judge;
    let lacking: Vec<&str> = j.lacking_data().map(|f| f.metric.as_str()).collect();
    let pending: Vec<&str> = j.labels_pending().map(|f| f.metric.as_str()).collect();
    let base = if j.window_complete && lacking.is_empty() && !pending.is_empty() {
        return labels_pending(policy, input, t, &pending);
    } else if j.window_complete {
        t.hit(RuleId::WindowCompleteInconclusive, format!("not enough evidence on {}", lacking.join(", ")));
        Decision::Hold {
            reason: format!(
                "analysis window ended without enough evidence ({}); a human must decide",
                lacking.join(", ")
            ),
        }
    } else if j.findings.iter().any(|f| f.status == MetricStatus::NoData && f.samples == 0)
        && j.now_s > policy.judge.warmup_s + policy.judge.windows_s.iter().copied().min().unwrap_or(60)
    {
        // Invariant: missing data holds and tells a human; it never rolls back.
        t.hit(RuleId::MissingDataHolds, format!("no data on {}", lacking.join(", ")));
        Decision::Hold { reason: format!("no data from {}; holding for a human", lacking.join(", ")) }
    } else {
        t.hit(RuleId::JudgeRunning, "no decision yet");
        Decision::Continue
    };
    model_stricter(policy, input, t, base)
}

/// The window ended with every other signal passing but too few delayed
/// labels: `[judge.ml] labels_pending` says hold for a human or promote and
/// keep watching the labels (the trace names what was still pending).
fn labels_pending(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace, pending: &[&str]) -> Decision {
    let names = pending.join(", ");
    match policy.judge.ml.labels_pending {
        crate::judge::ml::PendingAction::Hold => {
            t.hit(RuleId::LabelsPendingHold, format!("window ended waiting for labels on {names}"));
            model_stricter(
                policy,
                input,
                t,
                Decision::Hold {
                    reason: format!(
                        "the window ended before enough delayed labels arrived on {names}; policy holds for a human"
                    ),
                },
            )
        }
        crate::judge::ml::PendingAction::Promote => {
            t.hit(
                RuleId::LabelsPendingPromoteWithWatch,
                format!(
                    "every other signal passed; labelled quality of {names} still pending: watch it after promotion"
                ),
            );
            promote(policy, input, t)
        }
    }
}

fn promote(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace) -> Decision {
    match input.model {
        ModelInput::Verdict { recommendation: ModelRecommendation::Promote, .. } => {
            t.hit(RuleId::ModelConcurs, "model concurs with promotion");
        }
        ModelInput::Verdict { .. } => {
            return model_stricter(
                policy,
                input,
                t,
                Decision::Hold { reason: "the model does not concur with promotion".into() },
            );
        }
        ModelInput::Unavailable { reason } if policy.require_model_for_promotion => {
            t.hit(RuleId::ModelRequiredUnavailable, reason.clone());
            return Decision::Hold {
                reason: format!("policy requires the model's concurrence and it is unavailable: {reason}"),
            };
        }
        ModelInput::NotConfigured if policy.require_model_for_promotion => {
            t.hit(RuleId::ModelRequiredMissing, "no model configured");
            return Decision::Hold { reason: "policy requires the model's concurrence and none is configured".into() };
        }
        _ => {}
    }
    if let Some(f) = policy.active_freeze(&input.release.service, input.now_ms) {
        t.hit(RuleId::FreezeActive, f.name.clone());
        return Decision::RequireApproval {
            reason: format!("freeze window `{}` is active", f.name),
            proposed: Proposal::Promote,
        };
    }
    match policy.autonomy_for(&input.release.service) {
        Autonomy::Auto => {
            t.hit(RuleId::AutonomyAuto, "promotion within policy");
            Decision::Promote
        }
        a => {
            t.hit(RuleId::AutonomyHuman, format!("{a:?}"));
            Decision::RequireApproval {
                reason: format!("service autonomy is {a:?}: a human promotes").to_lowercase(),
                proposed: Proposal::Promote,
            }
        }
    }
}

fn proposal_rollback(input: &PolicyInput, reason: &str) -> Proposal {
    let r = input.release;
    Proposal::Rollback {
        plan: RollbackPlan {
            target: r.target.clone(),
            from_revision: r.candidate_revision.clone(),
            to_revision: r.last_known_good.clone().unwrap_or_else(|| "(none recorded)".into()),
            reason: reason.into(),
        },
    }
}

fn rollback(policy: &PolicyFile, input: &PolicyInput, t: &mut Trace, reason: String) -> Decision {
    let r = input.release;
    if !r.declared_targets.iter().any(|d| d == &r.target) {
        t.hit(RuleId::DeclaredTarget, format!("target `{}` is not declared in configuration", r.target));
        return Decision::Deny { reason: format!("target `{}` is not declared in configuration", r.target) };
    }
    let Some(lkg) = &r.last_known_good else {
        t.hit(RuleId::LastKnownGood, "no last-known-good revision recorded");
        return Decision::Deny { reason: "no last-known-good revision is recorded for this target".into() };
    };
    let plan = RollbackPlan {
        target: r.target.clone(),
        from_revision: r.candidate_revision.clone(),
        to_revision: lkg.clone(),
        reason,
    };
    if r.irreversible {
        t.hit(RuleId::Irreversible, "release is marked irreversible");
        let why = "release is marked irreversible: never rolled back automatically".to_string();
        return match policy.irreversible {
            IrreversibleAction::RequireApproval => {
                Decision::RequireApproval { reason: why, proposed: Proposal::Rollback { plan } }
            }
            IrreversibleAction::Hold => Decision::Hold { reason: why },
        };
    }
    match policy.autonomy_for(&r.service) {
        Autonomy::Auto => {}
        a => {
            t.hit(RuleId::AutonomyHuman, format!("{a:?}"));
            return Decision::RequireApproval {
                reason: format!("service autonomy is {a:?}: a human approves the rollback").to_lowercase(),
                proposed: Proposal::Rollback { plan },
            };
        }
    }
    let window_ms = i64::from(policy.rate_limit.window_minutes) * 60_000;
    let recent = input.history.recent(input.now_ms, window_ms);
    if recent.len() >= policy.rate_limit.max_rollbacks as usize {
        let n = recent.len();
        t.hit(RuleId::RateLimit, format!("{n} automated rollbacks in {} min", policy.rate_limit.window_minutes));
        return Decision::RequireApproval {
            reason: format!(
                "rate limit: {n} automated rollbacks of `{}` in the last {} minutes ({}); a person decides the next",
                r.target,
                policy.rate_limit.window_minutes,
                super::History::named(&recent)
            ),
            proposed: Proposal::Rollback { plan },
        };
    }
    t.hit(RuleId::RollbackWithinPolicy, format!("to {}", plan.to_revision));
    Decision::Rollback { plan }
}
