//! Argo Rollouts' analysis semantics with its defaults: one measurement per
//! minute per metric; a measurement fails outside the threshold range (see
//! the module rule), errors when there is no data; a metric fails when failed
//! measurements exceed `failure_limit`, errors after more than 4 consecutive
//! errors; Failed or Error aborts the rollout. All measurements passing
//! completes the analysis and the rollout is promoted.

use super::{measure, points_per_minute};
use crate::eval::{EvalJudge, ReplayDecision};
use crate::signals::ScenarioData;

const CONSECUTIVE_ERROR_LIMIT: usize = 4;

/// Argo Rollouts as `eval` runs it.
pub struct ArgoJudge {
    /// Failed measurements tolerated (Argo's default is 0).
    pub failure_limit: usize,
}

impl EvalJudge for ArgoJudge {
    fn name(&self) -> &'static str {
        match self.failure_limit {
            0 => crate::eval::JudgeName::Argo.as_str(),
            3 => crate::eval::JudgeName::ArgoFl3.as_str(),
            _ => "argo-custom",
        }
    }

    fn decide(&self, data: &ScenarioData) -> (ReplayDecision, Option<u64>) {
        let step = data.step_s as usize;
        let m = points_per_minute(data.step_s);
        let total = data.duration_s as usize / step;
        let metrics = data.metrics.len();
        let (mut failed, mut errors) = (vec![0; metrics], vec![0; metrics]);
        let mut end = m;
        while end <= total {
            for (i, r) in measure(data, end).into_iter().enumerate() {
                match r {
                    Some(true) => errors[i] = 0,
                    Some(false) => {
                        errors[i] = 0;
                        failed[i] += 1;
                    }
                    None => errors[i] += 1,
                }
            }
            let at = Some((end * step) as u64);
            if failed.iter().any(|&f| f > self.failure_limit) || errors.iter().any(|&e| e > CONSECUTIVE_ERROR_LIMIT) {
                return (ReplayDecision::Rollback, at);
            }
            end += m;
        }
        (ReplayDecision::Promote, Some(data.duration_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::peers::tiny;

    // Baseline is all 10, so the threshold is "≤ 10"; one point per measurement.
    #[test]
    fn first_failed_measurement_aborts_by_default() {
        let d = tiny(vec![Some(10.0), Some(9.0), Some(11.0), Some(10.0), Some(10.0)]);
        assert_eq!(ArgoJudge { failure_limit: 0 }.decide(&d), (ReplayDecision::Rollback, Some(180)));
    }

    #[test]
    fn failure_limit_three_aborts_on_the_fourth_failure() {
        let d = tiny(vec![Some(11.0), Some(11.0), Some(10.0), Some(11.0), Some(11.0), Some(10.0)]);
        assert_eq!(ArgoJudge { failure_limit: 3 }.decide(&d), (ReplayDecision::Rollback, Some(300)));
        let d = tiny(vec![Some(11.0), Some(11.0), Some(10.0), Some(11.0), Some(10.0), Some(10.0)]);
        assert_eq!(ArgoJudge { failure_limit: 3 }.decide(&d), (ReplayDecision::Promote, Some(360)));
    }

    #[test]
    fn the_fifth_consecutive_error_aborts_and_a_value_resets_the_count() {
        let d = tiny(vec![None, None, None, None, None, Some(10.0)]);
        assert_eq!(ArgoJudge { failure_limit: 0 }.decide(&d), (ReplayDecision::Rollback, Some(300)));
        let d = tiny(vec![None, None, None, None, Some(10.0), None, Some(10.0)]);
        assert_eq!(ArgoJudge { failure_limit: 0 }.decide(&d), (ReplayDecision::Promote, Some(420)));
    }
}
