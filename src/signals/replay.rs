//! Scenario replay: serves a recorded release as if it were live.

use std::sync::Arc;

use async_trait::async_trait;

use super::{BaselineKind, MetricSeries, Observation, ScenarioData, SignalError, SignalSource, Traffic};

/// Replays a scenario; at time `t` only samples whose interval ended by `t`
/// are visible. It holds [`ScenarioData`], which has no truth field, so the
/// label cannot leak to a judge through it.
#[derive(Debug, Clone)]
pub struct ReplaySource {
    data: Arc<ScenarioData>,
}

impl ReplaySource {
    /// Replay `data`.
    pub fn new(data: Arc<ScenarioData>) -> Self {
        Self { data }
    }

    /// The observation at `now_s`, synchronously (replay needs no I/O).
    pub fn observe_at(&self, now_s: u64) -> Observation {
        truncate(&self.data, now_s)
    }
}

/// Cut a full recording down to what had been observed by `now_s`.
pub(crate) fn truncate(d: &ScenarioData, now_s: u64) -> Observation {
    let total = (d.duration_s / u64::from(d.step_s)) as usize;
    let n = ((now_s / u64::from(d.step_s)) as usize).min(total);
    let cut = |v: &Vec<Option<f64>>| v[..n.min(v.len())].to_vec();
    // An earlier-window baseline lies wholly in the past: all of it is known at t = 0.
    let history = d.baseline_kind != BaselineKind::Concurrent;
    let cut_baseline = |v: &Vec<Option<f64>>| if history { v.clone() } else { cut(v) };
    Observation {
        service: d.service.clone(),
        step_s: d.step_s,
        duration_s: d.duration_s,
        now_s,
        baseline_kind: d.baseline_kind,
        traffic: d.traffic.as_ref().map(|t| Traffic {
            baseline: t.baseline[..n.min(t.baseline.len())].to_vec(),
            canary: t.canary[..n.min(t.canary.len())].to_vec(),
        }),
        metrics: d
            .metrics
            .iter()
            .map(|m| MetricSeries { spec: m.spec.clone(), baseline: cut_baseline(&m.baseline), canary: cut(&m.canary) })
            .collect(),
        logs: d.logs.iter().filter(|l| l.t_s <= now_s).cloned().collect(),
        events: d.events.iter().filter(|e| e.t_s <= now_s).cloned().collect(),
        ml: d.ml.first_steps(n, history),
    }
}

#[async_trait]
impl SignalSource for ReplaySource {
    fn name(&self) -> String {
        format!("scenario:{}", self.data.name)
    }

    async fn observe(&self, now_s: u64) -> Result<Observation, SignalError> {
        Ok(self.observe_at(now_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::{BadDirection, LogLine, MetricSpec, Side};
    use proptest::prelude::*;

    fn data(n: usize) -> ScenarioData {
        let series: Vec<Option<f64>> = (0..n).map(|i| Some(i as f64)).collect();
        ScenarioData {
            name: "p".into(),
            description: String::new(),
            service: "s".into(),
            step_s: 10,
            duration_s: (n as u64) * 10,
            traffic: Some(Traffic { baseline: vec![5; n], canary: vec![1; n] }),
            baseline_kind: Default::default(),
            metrics: vec![MetricSeries {
                spec: MetricSpec { name: "m".into(), unit: "ms".into(), bad_direction: BadDirection::Up },
                baseline: series.clone(),
                canary: series,
            }],
            logs: (0..n as u64)
                .map(|i| LogLine { t_s: i * 10 + 5, target: Side::Canary, level: "info".into(), message: "x".into() })
                .collect(),
            events: vec![],
            ml: Default::default(),
        }
    }

    proptest! {
        /// Replay never leaks a sample, log line or event from after `now`.
        #[test]
        fn never_leaks_future(n in 1usize..60, now in 0u64..800) {
            let src = ReplaySource::new(Arc::new(data(n)));
            let obs = src.observe_at(now);
            for m in &obs.metrics {
                for (i, v) in m.canary.iter().enumerate() {
                    // sample i covers [10i, 10i+10): it must have ended by now.
                    prop_assert!((i as u64 + 1) * 10 <= now, "sample {i} visible at {now}");
                    prop_assert_eq!(*v, Some(i as f64));
                }
                prop_assert_eq!(m.canary.len(), m.baseline.len());
            }
            let t = obs.traffic.unwrap();
            prop_assert_eq!(t.canary.len(), obs.metrics[0].canary.len());
            prop_assert!(obs.logs.iter().all(|l| l.t_s <= now));
        }
    }

    #[test]
    fn sample_appears_exactly_when_its_interval_ends() {
        let src = ReplaySource::new(Arc::new(data(5)));
        assert_eq!(src.observe_at(9).metrics[0].canary.len(), 0);
        assert_eq!(src.observe_at(10).metrics[0].canary.len(), 1);
        assert_eq!(src.observe_at(49).metrics[0].canary.len(), 4);
        assert_eq!(src.observe_at(5000).metrics[0].canary.len(), 5);
    }
}
