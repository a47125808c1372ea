//! A model behind the simulated service: every request is a prediction.
//! Each side's predictions land in a score histogram and an input feature's
//! histogram; a share of them is labelled and the labels arrive
//! `label_delay_s` later, so the judge sees quality only as feedback comes in.
//! A rollback stops canary predictions, and with them canary labels.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::signals::{
    BadDirection, DistributionSeries, DistributionSpec, DriftKind, Event, LabelSeries, LabelSpec, MetricSeries,
    MetricSpec, ModelSignals, Outcomes, Side, Task,
};

/// The model a simulated release serves, and what changes in the canary's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSim {
    /// Share of predictions whose true class is positive.
    pub positive_rate: f64,
    /// The baseline model's accuracy (0.5..1).
    pub accuracy: f64,
    /// Share of predictions that ever get a label.
    pub label_share: f64,
    /// Seconds from a prediction to its label.
    pub label_delay_s: u64,
    /// When the canary's differences start, seconds since release.
    pub change_at_s: u64,
    /// How far the canary's scores move, in score units (0..1 scale; 0.1 is a PSI of about 0.5).
    pub prediction_shift: f64,
    /// How far the canary's view of the input feature moves, in the feature's standard deviations.
    pub feature_shift: f64,
    /// Points of accuracy the canary loses (0.05 = five points).
    pub accuracy_drop: f64,
    /// The canary stops receiving one feature: a `schema_change` event and nulls in its requests.
    pub schema_change: bool,
}

impl Default for ModelSim {
    fn default() -> Self {
        Self {
            positive_rate: 0.3,
            accuracy: 0.92,
            label_share: 0.5,
            label_delay_s: 300,
            change_at_s: 0,
            prediction_shift: 0.0,
            feature_shift: 0.0,
            accuracy_drop: 0.0,
            schema_change: false,
        }
    }
}

/// Score buckets (`le`) of the prediction histogram.
const SCORE_LE: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/// Feature buckets, in standard deviations.
const FEATURE_LE: [f64; 9] = [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0];
/// Share of requests with a null feature, normally and once a feature is missing.
const NULLS: (f64, f64) = (0.002, 0.35);

/// The share of a model's requests with a null feature: a data-quality `ratio` metric.
pub fn null_metric() -> MetricSpec {
    MetricSpec { name: "feature_null_ratio".into(), unit: "ratio".into(), bad_direction: BadDirection::Up }
}

/// What was generated so far, per step.
#[derive(Debug, Clone, Default)]
pub(super) struct MlState {
    scores: Vec<[Counts2; 2]>,
    features: Vec<[Counts2; 2]>,
    nulls: Vec<[Option<f64>; 2]>,
    /// Labelled outcomes by the step they arrive in (may run past the window).
    arrivals: Vec<[Outcomes; 2]>,
}

type Counts2 = Option<Vec<f64>>;

/// Bucket probabilities of a normal(mean, sd) over buckets with upper bounds `le`.
fn bucket_probs(le: &[f64], mean: f64, sd: f64) -> Vec<f64> {
    let d = Normal::new(mean, sd).unwrap_or_else(|_| Normal::standard());
    let mut last = 0.0;
    let mut out: Vec<f64> = le
        .iter()
        .map(|b| {
            let c = d.cdf(*b);
            let p = c - last;
            last = c;
            p
        })
        .collect();
    out.push(1.0 - last);
    out
}

/// `n` draws over buckets with probabilities `p`: a chain of binomials.
fn multinomial(rng: &mut ChaCha8Rng, n: u64, p: &[f64]) -> Vec<f64> {
    let (mut left, mut mass) = (n, 1.0);
    p.iter()
        .map(|&q| {
            let k = if mass <= 0.0 || left == 0 {
                0
            } else {
                Binomial::new(left, (q / mass).clamp(0.0, 1.0)).map_or(0, |b| b.sample(rng))
            };
            left -= k;
            mass -= q;
            k as f64
        })
        .collect()
}

fn binomial(rng: &mut ChaCha8Rng, n: u64, p: f64) -> u64 {
    Binomial::new(n, p.clamp(0.0, 1.0)).map_or(0, |b| b.sample(rng))
}

impl MlState {
    /// Generate step `i` (release time `t`) from the requests each side served.
    pub(super) fn step(&mut self, m: &ModelSim, rng: &mut ChaCha8Rng, t: u64, step_s: u32, requests: [u64; 2]) {
        let i = self.scores.len();
        let delay_steps = (m.label_delay_s / u64::from(step_s.max(1))) as usize;
        let (mut scores, mut features, mut nulls) = ([None, None], [None, None], [None, None]);
        for (side, n) in requests.into_iter().enumerate() {
            let changed = side == 1 && t >= m.change_at_s;
            if n == 0 {
                continue;
            }
            let (shift, fshift, drop) =
                if changed { (m.prediction_shift, m.feature_shift, m.accuracy_drop) } else { (0.0, 0.0, 0.0) };
            let pos = binomial(rng, n, m.positive_rate);
            let neg = n - pos;
            let hp = multinomial(rng, pos, &bucket_probs(&SCORE_LE, 0.72 + shift, 0.14));
            let hn = multinomial(rng, neg, &bucket_probs(&SCORE_LE, 0.24 + shift, 0.12));
            scores[side] = Some(hp.iter().zip(&hn).map(|(a, b)| a + b).collect());
            features[side] = Some(multinomial(rng, n, &bucket_probs(&FEATURE_LE, fshift, 1.0)));
            let null_p = if changed && m.schema_change { NULLS.1 } else { NULLS.0 };
            nulls[side] = Some(binomial(rng, n, null_p) as f64 / n as f64);
            let acc = (m.accuracy - drop).clamp(0.0, 1.0);
            let (lp, ln) = (binomial(rng, pos, m.label_share), binomial(rng, neg, m.label_share));
            let (tp, tn) = (binomial(rng, lp, acc), binomial(rng, ln, acc));
            // Labels trickle in over three steps around the declared delay.
            let at = i + delay_steps + rng.random_range(0..3usize);
            if self.arrivals.len() <= at {
                self.arrivals.resize(at + 1, [Outcomes::zero(Task::Binary); 2]);
            }
            let got = Outcomes::Binary { tp, fp: ln - tn, tn, fn_: lp - tp };
            self.arrivals[at][side] = self.arrivals[at][side].plus(got);
        }
        self.scores.push(scores);
        self.features.push(features);
        self.nulls.push(nulls);
    }

    /// The `schema_change` event of step `t`, when the canary's input loses a feature then.
    pub(super) fn schema_event(m: &ModelSim, t: u64, step_s: u32) -> Option<Event> {
        (m.schema_change && t <= m.change_at_s && m.change_at_s < t + u64::from(step_s)).then(|| Event {
            t_s: m.change_at_s,
            target: Side::Canary,
            kind: crate::signals::EventKind::SchemaChange,
            message: "request schema changed: feature `merchant_category` missing".into(),
        })
    }

    /// The first `n` steps as signals, plus the null-rate metric.
    pub(super) fn observe(&self, m: &ModelSim, n: usize) -> (ModelSignals, MetricSeries) {
        let side = |v: &[[Counts2; 2]], s: usize| v[..n].iter().map(|x| x[s].clone()).collect::<Vec<_>>();
        let dist = |name: &str, kind, le: &[f64], v: &[[Counts2; 2]]| DistributionSeries {
            spec: DistributionSpec { name: name.into(), kind, le: le.to_vec() },
            baseline: side(v, 0),
            canary: side(v, 1),
        };
        let arrived = |s: usize| -> Vec<Option<Outcomes>> {
            (0..n).map(|i| Some(self.arrivals.get(i).map_or(Outcomes::zero(Task::Binary), |a| a[s]))).collect()
        };
        let signals = ModelSignals {
            distributions: vec![
                dist("prediction_score", DriftKind::Prediction, &SCORE_LE, &self.scores),
                dist("feature.amount", DriftKind::Feature, &FEATURE_LE, &self.features),
            ],
            labels: vec![LabelSeries {
                spec: LabelSpec { name: "label.fraud".into(), task: Task::Binary, delay_s: m.label_delay_s },
                baseline: arrived(0),
                canary: arrived(1),
            }],
        };
        let nulls = MetricSeries {
            spec: null_metric(),
            baseline: self.nulls[..n].iter().map(|x| x[0]).collect(),
            canary: self.nulls[..n].iter().map(|x| x[1]).collect(),
        };
        (signals, nulls)
    }
}
