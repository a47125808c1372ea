//! Flagger's canary loop with its documented behaviour: a check per minute;
//! the first tick only starts the canary; a check fails when any metric is
//! outside its threshold range or has no data, and failed checks are never
//! reset; at the start of a tick, failed checks ≥ `threshold` roll back; after
//! 5 passing checks (step weight 10 up to max weight 50) the canary is promoted.

use super::{measure, points_per_minute};
use crate::eval::{EvalJudge, ReplayDecision};
use crate::signals::ScenarioData;

const CHECKS_TO_PROMOTE: usize = 5;

/// Flagger as `eval` runs it.
pub struct FlaggerJudge {
    /// Failed checks that roll back (Flagger's default is 1).
    pub threshold: usize,
}

impl EvalJudge for FlaggerJudge {
    fn name(&self) -> &'static str {
        match self.threshold {
            1 => crate::eval::JudgeName::Flagger.as_str(),
            5 => crate::eval::JudgeName::FlaggerT5.as_str(),
            _ => "flagger-custom",
        }
    }

    fn decide(&self, data: &ScenarioData) -> (ReplayDecision, Option<u64>) {
        let step = data.step_s as usize;
        let m = points_per_minute(data.step_s);
        let total = data.duration_s as usize / step;
        let (mut failed_checks, mut passed) = (0, 0);
        // Tick 1 (at one interval) only starts the canary; checks begin at tick 2.
        let mut end = 2 * m;
        while end <= total {
            let at = Some((end * step) as u64);
            if failed_checks >= self.threshold {
                return (ReplayDecision::Rollback, at);
            }
            if measure(data, end).iter().all(|r| *r == Some(true)) {
                passed += 1;
                if passed >= CHECKS_TO_PROMOTE {
                    return (ReplayDecision::Promote, at);
                }
            } else {
                failed_checks += 1;
            }
            end += m;
        }
        if failed_checks >= self.threshold {
            return (ReplayDecision::Rollback, Some(data.duration_s));
        }
        (ReplayDecision::Inconclusive, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::peers::tiny;

    // Baseline is all 10, so the threshold is "≤ 10"; one point per check.
    #[test]
    fn promotes_after_five_passing_checks_skipping_the_first_tick() {
        let d = tiny(vec![Some(99.0), Some(10.0), Some(10.0), Some(10.0), Some(10.0), Some(10.0), Some(10.0)]);
        assert_eq!(FlaggerJudge { threshold: 1 }.decide(&d), (ReplayDecision::Promote, Some(360)));
    }

    #[test]
    fn rolls_back_at_the_tick_after_the_threshold_is_reached() {
        let d = tiny(vec![Some(10.0), Some(10.0), Some(11.0), Some(10.0), Some(10.0)]);
        assert_eq!(FlaggerJudge { threshold: 1 }.decide(&d), (ReplayDecision::Rollback, Some(240)));
    }

    #[test]
    fn no_data_is_a_failed_check_and_failures_never_reset() {
        let d =
            tiny(vec![Some(10.0), None, Some(10.0), Some(11.0), Some(10.0), None, Some(10.0), Some(11.0), Some(10.0)]);
        // Checks at 120..540 s: failed at 120, 240, 360 and 480 s (no data or above 10),
        // passed at the other four. Threshold 5 is never reached and four passes do not
        // promote; threshold 4 is reached at 480 s and rolls back at the next tick.
        assert_eq!(FlaggerJudge { threshold: 5 }.decide(&d), (ReplayDecision::Inconclusive, None));
        assert_eq!(FlaggerJudge { threshold: 4 }.decide(&d), (ReplayDecision::Rollback, Some(540)));
    }
}
