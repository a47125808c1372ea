//! When to ask the model: at decision points only, so cost stays bounded —
//! before a promotion, when the window ends inconclusive, when a metric turns
//! marginal, and when canary-only errors or events appear. Never when the
//! judge already fails the canary: the model could not loosen that anyway.

use std::collections::BTreeSet;

use crate::judge::{JudgeResult, MetricStatus, Verdict};
use crate::policy::{Decision, Proposal};
use crate::signals::Observation;

use super::evidence::{Telemetry, metric_label};

/// Why the model is consulted at this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Policy would promote now.
    BeforePromotion,
    /// The window ended and the judge cannot decide.
    Inconclusive,
    /// Metrics shifted beyond tolerance at this look, not yet confirmed (their labels).
    Marginal(Vec<String>),
    /// New error patterns or event kinds on the canary only, as the evidence
    /// ids of their first lines (never their text: that is untrusted).
    CanaryOnlySignals(Vec<String>),
    /// Both versions are affected (a shared guard breach or a baseline that
    /// moved on its own), as the judge findings' evidence ids.
    Incident(Vec<String>),
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::BeforePromotion => write!(f, "the judge passes the canary and policy would promote it now"),
            Trigger::Inconclusive => write!(f, "the analysis window ended and the judge is inconclusive"),
            Trigger::Marginal(m) => {
                write!(f, "marginal: {} shifted beyond tolerance but not yet confirmed", m.join(", "))
            }
            Trigger::CanaryOnlySignals(ids) => {
                write!(f, "canary-only errors or events appeared; see evidence {}", ids.join(", "))
            }
            Trigger::Incident(ids) => write!(
                f,
                "both versions are affected, an incident-like condition (the release is held); see evidence {}",
                ids.join(", ")
            ),
        }
    }
}

/// What earlier consultations already covered, so a condition asks once.
#[derive(Debug, Clone, Default)]
pub struct TriggerState {
    marginal: BTreeSet<String>,
    incidents: BTreeSet<String>,
    canary_only: BTreeSet<String>,
}

impl TriggerState {
    /// The reason to consult now, if any; remembers it so it is asked once.
    pub fn check(
        &mut self,
        judged: &JudgeResult,
        provisional: &Decision,
        obs: Option<&Observation>,
    ) -> Option<Trigger> {
        if judged.verdict == Verdict::Fail || matches!(provisional, Decision::Rollback { .. } | Decision::Deny { .. }) {
            return None;
        }
        // Every promotion point asks again, whatever an earlier verdict said, so
        // a hold given early never sticks to the end of the window.
        if judged.verdict == Verdict::Pass
            || matches!(provisional, Decision::Promote | Decision::RequireApproval { proposed: Proposal::Promote, .. })
        {
            return Some(Trigger::BeforePromotion);
        }
        let incidents: BTreeSet<String> =
            judged.incidents().map(|f| format!("judge:{}", metric_label(&f.metric))).collect();
        let new_incidents: Vec<String> = incidents.difference(&self.incidents).cloned().collect();
        self.incidents.extend(incidents);
        if !new_incidents.is_empty() {
            return Some(Trigger::Incident(new_incidents));
        }
        if judged.window_complete && judged.verdict == Verdict::Inconclusive {
            return Some(Trigger::Inconclusive);
        }
        let marginal: BTreeSet<String> = judged
            .findings
            .iter()
            .filter(|f| f.status == MetricStatus::Suspect)
            .map(|f| metric_label(&f.metric).into_owned())
            .collect();
        let new_marginal: Vec<String> = marginal.difference(&self.marginal).cloned().collect();
        self.marginal = marginal;
        if !new_marginal.is_empty() {
            return Some(Trigger::Marginal(new_marginal));
        }
        let signals = obs.map(|o| Telemetry::new(o).canary_only()).unwrap_or_default();
        let new_ids: Vec<String> =
            signals.iter().filter(|(key, _)| !self.canary_only.contains(*key)).map(|(_, id)| id.clone()).collect();
        self.canary_only.extend(signals.into_keys());
        (!new_ids.is_empty()).then_some(Trigger::CanaryOnlySignals(new_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Finding;
    use crate::signals::{BadDirection, LogLine, MetricSpec, Side};

    fn judged(verdict: Verdict, complete: bool, suspect: &[&str]) -> JudgeResult {
        let spec = |n: &str| MetricSpec { name: n.into(), unit: "x".into(), bad_direction: BadDirection::Up };
        let findings = ["errors", "latency"]
            .iter()
            .map(|n| {
                let status = if suspect.contains(n) { MetricStatus::Suspect } else { MetricStatus::Ok };
                Finding { status, ..Finding::empty(&spec(n)) }
            })
            .collect();
        JudgeResult {
            verdict,
            now_s: 60,
            window_complete: complete,
            findings,
            summary: String::new(),
            log_mining: None,
        }
    }

    fn obs(logs: Vec<(Side, &str)>) -> Observation {
        Observation {
            service: "s".into(),
            step_s: 10,
            duration_s: 600,
            now_s: 60,
            traffic: None,
            baseline_kind: Default::default(),
            metrics: vec![],
            logs: logs
                .into_iter()
                .map(|(target, m)| LogLine { t_s: 5, target, level: "error".into(), message: m.into() })
                .collect(),
            events: vec![],
            ml: Default::default(),
        }
    }

    #[test]
    fn asks_at_decision_points_once_each_and_never_on_a_failing_judge() {
        let mut t = TriggerState::default();
        let quiet = obs(vec![(Side::Baseline, "disk slow"), (Side::Canary, "disk slow")]);
        let running = judged(Verdict::Inconclusive, false, &[]);
        assert_eq!(t.check(&running, &Decision::Continue, Some(&quiet)), None, "nothing new: no call");
        let marginal = judged(Verdict::Inconclusive, false, &["errors"]);
        assert_eq!(
            t.check(&marginal, &Decision::Continue, Some(&quiet)),
            Some(Trigger::Marginal(vec!["errors".into()]))
        );
        assert_eq!(t.check(&marginal, &Decision::Continue, Some(&quiet)), None, "the same marginal metric asks once");
        let noisy = obs(vec![(Side::Canary, "payment timeout after 30ms"); 3]);
        assert!(matches!(t.check(&marginal, &Decision::Continue, Some(&noisy)), Some(Trigger::CanaryOnlySignals(_))));
        assert_eq!(t.check(&marginal, &Decision::Continue, Some(&noisy)), None);
        let fail = judged(Verdict::Fail, false, &[]);
        assert_eq!(t.check(&fail, &Decision::Continue, Some(&noisy)), None, "the model cannot loosen a failing judge");
        let pass = judged(Verdict::Pass, true, &[]);
        assert_eq!(t.check(&pass, &Decision::Promote, Some(&quiet)), Some(Trigger::BeforePromotion));
        let ended = judged(Verdict::Inconclusive, true, &[]);
        assert_eq!(t.check(&ended, &Decision::Hold { reason: "x".into() }, Some(&quiet)), Some(Trigger::Inconclusive));
        // An earlier model hold makes policy hold; a passing judge still asks again before promotion.
        let held = Decision::Hold { reason: "the model asks to hold".into() };
        assert_eq!(t.check(&pass, &held, Some(&quiet)), Some(Trigger::BeforePromotion));
    }

    #[test]
    fn the_canary_s_own_deploy_event_and_a_single_log_line_are_not_canary_only_evidence() {
        let mut t = TriggerState::default();
        let running = judged(Verdict::Inconclusive, false, &[]);
        let mut o = obs(vec![(Side::Canary, "one odd line")]);
        o.events.push(crate::signals::Event {
            t_s: 0,
            target: Side::Canary,
            kind: crate::signals::EventKind::Deploy,
            message: "v42 rolled out".into(),
        });
        assert_eq!(t.check(&running, &Decision::Continue, Some(&o)), None);
    }

    proptest::proptest! {
        /// Whatever a log line or event says, the trigger names evidence ids only:
        /// no byte of the untrusted text reaches the trusted part of the prompt.
        #[test]
        fn a_trigger_never_carries_untrusted_text(msg in "ZQX[ -~\u{80}-\u{10ffff}]{0,40}", kind in "ZQK[a-z<>/ ]{0,12}") {
            let mut t = TriggerState::default();
            let running = judged(Verdict::Inconclusive, false, &[]);
            let mut o = obs(vec![(Side::Canary, msg.as_str()); 3]);
            for _ in 0..3 {
                o.events.push(crate::signals::Event { t_s: 1, target: Side::Canary, kind: crate::signals::EventKind::named(&kind), message: msg.clone() });
            }
            let trigger = t.check(&running, &Decision::Continue, Some(&o));
            proptest::prop_assert!(matches!(trigger, Some(Trigger::CanaryOnlySignals(_))), "{trigger:?}");
            let text = trigger.map(|t| t.to_string()).unwrap_or_default();
            let lower = text.to_lowercase();
            proptest::prop_assert!(!lower.contains("zqx") && !lower.contains("zqk"), "{text}");
        }
    }
}
