use super::*;
use crate::signals::simulator::{FaultKind, FaultSpec, SimConfig, Simulator};
use crate::signals::{BaselineKind, MetricSeries, MetricSpec};

fn run(cfg: SimConfig) -> (Option<u64>, JudgeResult) {
    let sim = Simulator::new(cfg.clone());
    let jc = JudgeConfig::default();
    for now in (10..=cfg.duration_s).step_by(10) {
        let r = judge(&sim.observe_at(now), &jc);
        if r.verdict == Verdict::Fail {
            return (Some(now), r);
        }
    }
    (None, judge(&sim.observe_at(cfg.duration_s), &jc))
}

fn fault(kind: FaultKind, onset_s: u64, strength: f64) -> SimConfig {
    SimConfig { fault: Some(FaultSpec { kind, onset_s, strength }), ..SimConfig::default() }
}

#[test]
fn healthy_release_passes_only_at_window_end() {
    let sim = Simulator::new(SimConfig::default());
    let jc = JudgeConfig::default();
    assert_eq!(judge(&sim.observe_at(900), &jc).verdict, Verdict::Inconclusive);
    let end = judge(&sim.observe_at(1800), &jc);
    assert_eq!(end.verdict, Verdict::Pass, "{end:#?}");
    assert!(end.findings.iter().all(|f| f.status == MetricStatus::Ok));
}

#[test]
fn error_spike_fails_within_two_minutes_naming_the_metric() {
    let (at, r) = run(fault(FaultKind::ErrorSpike, 600, 0.05));
    let at = at.expect("error spike must be caught");
    assert!((600..=720).contains(&at), "caught at {at}");
    let f = r.failing().next().unwrap();
    assert_eq!(f.metric, "http_error_ratio");
    // The finding carries the evidence that failed it: the windowed test past
    // its critical value, or the sequential one past its threshold.
    let windowed = f.z.unwrap() > f.critical.unwrap();
    let sequential = f.sequential.is_some_and(|s| s.crossed());
    assert!(f.effect.unwrap() > f.tolerance.unwrap() && (windowed || sequential), "{f:#?}");
    assert!(f.explanation.contains("FAILING"), "{}", f.explanation);
}

#[test]
fn latency_regression_fails() {
    let (at, r) = run(fault(FaultKind::LatencyRegression, 300, 0.6));
    assert!(at.is_some_and(|t| t <= 420), "caught at {at:?}");
    assert_eq!(r.failing().next().unwrap().metric, "latency_p99_ms");
}

#[test]
fn crash_loop_fails_on_throughput_or_errors() {
    let (at, _) = run(fault(FaultKind::CrashLoop, 300, 0.5));
    assert!(at.is_some_and(|t| t <= 420), "caught at {at:?}");
}

#[test]
fn improvement_is_not_a_failure() {
    let (at, r) = run(SimConfig { improvement: 0.5, ..SimConfig::default() });
    assert_eq!(at, None);
    assert_eq!(r.verdict, Verdict::Pass);
}

#[test]
fn canary_with_no_data_is_inconclusive_never_fail() {
    let n = 180;
    let spec = MetricSpec { name: "err".into(), unit: "ratio".into(), bad_direction: BadDirection::Up };
    let obs = Observation {
        service: "s".into(),
        step_s: 10,
        duration_s: 1800,
        now_s: 1800,
        traffic: None,
        baseline_kind: Default::default(),
        metrics: vec![MetricSeries { spec, baseline: vec![Some(0.01); n], canary: vec![None; n] }],
        logs: vec![],
        events: vec![],
        ml: Default::default(),
    };
    let r = judge(&obs, &JudgeConfig::default());
    assert_eq!(r.verdict, Verdict::Inconclusive);
    assert_eq!(r.findings[0].status, MetricStatus::NoData);
}

#[test]
fn config_bounds_name_the_field() {
    let bad = JudgeConfig { alpha: 0.5, ..JudgeConfig::default() };
    assert_eq!(bad.validate().unwrap_err().field, "alpha");
    assert!(JudgeConfig::default().validate().is_ok());
}

/// Three metrics against the same hour one day earlier, 60 one-minute steps,
/// with small deterministic noise; `jumping` metrics rise by 0.2 (20 times
/// the noise's largest step) for three steps from step 20.
fn jumping(kind: BaselineKind, jumping: &[&str]) -> Observation {
    let n = 60;
    let noise = |i: usize, k: usize| 0.5 + 0.01 * (((i * 7919 + k * 104_729) % 13) as f64 / 13.0 - 0.5);
    let metrics = ["kpi_a", "kpi_b", "kpi_c"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let spec =
                MetricSpec { name: name.to_string(), unit: "normalised".into(), bad_direction: BadDirection::Both };
            let rises = jumping.contains(name);
            let canary = (0..n).map(|i| Some(noise(i, k) + if rises && (20..23).contains(&i) { 0.2 } else { 0.0 }));
            MetricSeries { spec, baseline: (0..n).map(|i| Some(noise(i + 61, k))).collect(), canary: canary.collect() }
        })
        .collect();
    Observation {
        service: "s".into(),
        step_s: 60,
        duration_s: 3600,
        now_s: 1800,
        traffic: None,
        baseline_kind: kind,
        metrics,
        logs: vec![],
        events: vec![],
        ml: Default::default(),
    }
}

#[test]
fn two_metrics_jumping_past_their_history_at_once_fail_the_release() {
    let r = judge(&jumping(BaselineKind::Seasonal, &["kpi_a", "kpi_b"]), &JudgeConfig::default());
    assert_eq!(r.verdict, Verdict::Fail, "{r:#?}");
    let joint = |name: &str| r.findings.iter().find(|f| f.metric == name).and_then(|f| f.joint_jump.clone());
    let a = joint("kpi_a").expect("kpi_a jumped with kpi_b");
    assert_eq!((a.at_s, a.with.as_str()), (1200, "kpi_b"));
    assert!(a.size > 0.15 && a.size / a.reference > jumps::JUMP_FACTOR, "{a:?}");
    assert_eq!(joint("kpi_b").map(|b| b.with), Some("kpi_a".to_string()));
    assert_eq!(joint("kpi_c"), None, "kpi_c did not move");
    let failing: Vec<&str> = r.failing().map(|f| f.metric.as_str()).collect();
    assert!(failing.contains(&"kpi_a") && failing.contains(&"kpi_b"), "{failing:?}");
    assert!(r.findings.iter().all(|f| f.lone_jump.is_none()), "a joint jump is not also a lone one");
}

#[test]
fn one_metric_jumping_alone_fails_against_the_same_hour_a_period_earlier_but_not_the_hour_before() {
    let r = judge(&jumping(BaselineKind::Seasonal, &["kpi_a"]), &JudgeConfig::default());
    let a = r.findings.iter().find(|f| f.metric == "kpi_a").unwrap();
    let lone = a.lone_jump.clone().expect("kpi_a jumped alone past the same hour a period earlier");
    assert_eq!(lone.at_s, 1200);
    assert!(lone.size > 0.15 && lone.size / lone.reference > jumps::JUMP_FACTOR, "{lone:?}");
    assert_eq!((a.status, r.verdict), (MetricStatus::Failing, Verdict::Fail), "{r:#?}");
    assert!(a.explanation.contains("one period earlier never made"), "{}", a.explanation);
    assert!(r.findings.iter().filter(|f| f.metric != "kpi_a").all(|f| f.lone_jump.is_none()));
    for kind in [BaselineKind::Preceding, BaselineKind::Concurrent] {
        let r = judge(&jumping(kind, &["kpi_a"]), &JudgeConfig::default());
        assert!(r.findings.iter().all(|f| f.lone_jump.is_none()), "{kind:?}: {r:#?}");
    }
}

#[test]
fn one_metric_jumping_alone_or_against_a_concurrent_baseline_is_not_a_joint_jump() {
    for obs in [jumping(BaselineKind::Seasonal, &["kpi_a"]), jumping(BaselineKind::Concurrent, &["kpi_a", "kpi_b"])] {
        let r = judge(&obs, &JudgeConfig::default());
        assert!(r.findings.iter().all(|f| f.joint_jump.is_none()), "{:?}: {r:#?}", obs.baseline_kind);
    }
}

/// `jumping`, with every metric's earlier window held at 0.5 (a metric that never moved).
fn flat_before(kind: BaselineKind, jumping_metrics: &[&str]) -> Observation {
    let obs = jumping(kind, jumping_metrics);
    let metrics = obs.metrics.into_iter().map(|m| MetricSeries { baseline: vec![Some(0.5); 60], ..m }).collect();
    Observation { metrics, ..obs }
}

#[test]
fn a_metric_whose_earlier_window_never_moved_jumps_by_any_move_past_tolerance() {
    let cfg = JudgeConfig::default();
    // Two metrics leave a flat hour together: a joint jump, said as such.
    let r = judge(&flat_before(BaselineKind::Preceding, &["kpi_a", "kpi_b"]), &cfg);
    let a = r.findings.iter().find(|f| f.metric == "kpi_a").unwrap();
    let joint = a.joint_jump.clone().expect("kpi_a left its flat hour with kpi_b");
    assert_eq!((joint.at_s, joint.reference, joint.with.as_str()), (1200, 0.0, "kpi_b"));
    assert_eq!((a.status, r.verdict), (MetricStatus::Failing, Verdict::Fail), "{r:#?}");
    assert!(
        a.explanation.contains("the earlier window never moved") && !a.explanation.contains("inf"),
        "{}",
        a.explanation
    );
    // The canary's jitter (±0.005) is within tolerance of 0.5: no metric jumps.
    let r = judge(&flat_before(BaselineKind::Preceding, &[]), &cfg);
    assert!(r.findings.iter().all(|f| f.joint_jump.is_none() && f.status != MetricStatus::Failing), "{r:#?}");
    // Alone: against the hour before no jump fails one metric; against the day before it does.
    let r = judge(&flat_before(BaselineKind::Preceding, &["kpi_a"]), &cfg);
    assert!(r.findings.iter().all(|f| f.joint_jump.is_none() && f.lone_jump.is_none()), "{r:#?}");
    let r = judge(&flat_before(BaselineKind::Seasonal, &["kpi_a"]), &cfg);
    let a = r.findings.iter().find(|f| f.metric == "kpi_a").unwrap();
    assert_eq!(a.lone_jump.as_ref().map(|l| (l.at_s, l.reference)), Some((1200, 0.0)), "{r:#?}");
    assert_eq!(a.status, MetricStatus::Failing);
}

/// Small deterministic noise (±0.001) for step `i`.
fn small_noise(i: usize) -> f64 {
    0.002 * (((i * 7919) % 13) as f64 / 13.0 - 0.5)
}

/// One metric `kpi_a` (`normalised`, harmful `dir`), 60 one-minute steps
/// of `baseline(i)` and `canary(i)`, against an earlier window of `kind`.
fn kpi_a(
    kind: BaselineKind,
    dir: BadDirection,
    baseline: impl Fn(usize) -> f64,
    canary: impl Fn(usize) -> f64,
) -> Observation {
    let spec = MetricSpec { name: "kpi_a".into(), unit: "normalised".into(), bad_direction: dir };
    let (baseline, canary) = ((0..60).map(|i| Some(baseline(i))).collect(), (0..60).map(|i| Some(canary(i))).collect());
    Observation { metrics: vec![MetricSeries { spec, baseline, canary }], ..jumping(kind, &[]) }
}

/// One metric against the hour before it: the reference rises slowly
/// (0.001 a step) under small deterministic noise; the canary goes on to
/// stand 0.18 above the reference's end, step by step (`drift`) or in one
/// step at step 20.
fn leaving_its_hour(drift: bool) -> Observation {
    let rise = |i: usize| {
        if drift {
            0.18 * (i.min(40) as f64 / 40.0)
        } else if i >= 20 {
            0.18
        } else {
            0.0
        }
    };
    kpi_a(
        BaselineKind::Preceding,
        BadDirection::Up,
        |i| 0.5 + 0.001 * i as f64 + small_noise(i),
        |i| 0.56 + rise(i) + small_noise(i + 60),
    )
}

#[test]
fn a_level_that_wanders_out_of_its_hour_makes_no_excursions_but_a_jump_does() {
    let excursions = |drift: bool| {
        let r = judge(&Observation { now_s: 3600, ..leaving_its_hour(drift) }, &JudgeConfig::default());
        r.findings[0].excursions
    };
    let (jumped, drifted) = (excursions(false), excursions(true));
    assert!(jumped.0 >= JudgeConfig::default().excursions_to_fail, "the jump's episode counts: {jumped:?}");
    assert_eq!(drifted.0, 0, "the same height reached step by step counts no excursion");
}

/// The hour before the release jumped 0.18 at its step 40 and stayed
/// there; the canary carries on at that level, and with `again` jumps a
/// further 0.18 at its step 20.
fn shifted_before_the_release(again: bool) -> Observation {
    let obs = kpi_a(
        BaselineKind::Preceding,
        BadDirection::Up,
        |i| 0.5 + if i >= 40 { 0.18 } else { 0.0 } + small_noise(i),
        |i| 0.68 + if again && i >= 20 { 0.18 } else { 0.0 } + small_noise(i + 60),
    );
    Observation { now_s: 3600, ..obs }
}

#[test]
fn a_shift_from_before_the_release_is_no_excursion_of_the_canary_but_a_new_jump_is() {
    let excursions =
        |again: bool| judge(&shifted_before_the_release(again), &JudgeConfig::default()).findings[0].excursions;
    let (carried, jumped) = (excursions(false), excursions(true));
    assert_eq!(carried.0, 0, "the episode began in the hour before, and nothing jumped since: {carried:?}");
    assert!(jumped.0 >= JudgeConfig::default().excursions_to_fail, "a jump after the release counts: {jumped:?}");
}

/// A metric at 0 with sparse blips (a ten-thousandth to a few thousandths
/// of its range, as real KPIs scaled to their range show), against the same
/// hour one day earlier: the two days blip at different steps. With
/// `incident`, the canary stands at 0.3 from step 20 to 27.
fn blipping(incident: bool) -> Observation {
    let blip = |i: usize, seed: usize| {
        let h = (i * 7919 + seed * 104_729) % 97;
        if h < 20 {
            0.0001 * (1 + h % 7) as f64
        } else if h == 20 {
            0.002
        } else {
            0.0
        }
    };
    let canary = |i: usize| if incident && (20..28).contains(&i) { 0.3 } else { blip(i, 2) };
    Observation { now_s: 3600, ..kpi_a(BaselineKind::Seasonal, BadDirection::Both, |i| blip(i, 1), canary) }
}

#[test]
fn blips_of_a_metric_at_zero_are_no_excursions_but_an_incident_is() {
    let cfg = JudgeConfig::default();
    let quiet = judge(&blipping(false), &cfg);
    let (up, down) = quiet.findings[0].excursions;
    assert!(up < cfg.excursions_to_fail && down < cfg.excursions_to_fail, "{:?}", quiet.findings[0]);
    assert_ne!(quiet.verdict, Verdict::Fail, "{quiet:#?}");
    let incident = judge(&blipping(true), &cfg);
    assert!(incident.findings[0].excursions.0 >= cfg.excursions_to_fail, "{:?}", incident.findings[0]);
    assert_eq!(incident.verdict, Verdict::Fail);
}

/// One latency metric against a concurrent baseline, 180 ten-second steps
/// of Gaussian noise (SD `sd` ms about 200 ms) on both sides; `canary_extra(i)`
/// is added to the canary's step `i`.
fn latency(seed: u64, sd: f64, canary_extra: impl Fn(usize) -> f64) -> Observation {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let noise = rand_distr::Normal::new(200.0, sd).unwrap();
    let (mut baseline, mut canary) = (Vec::new(), Vec::new());
    for i in 0..180 {
        baseline.push(Some(noise.sample(&mut rng)));
        canary.push(Some(noise.sample(&mut rng) + canary_extra(i)));
    }
    let spec = MetricSpec { name: "latency_p99_ms".into(), unit: "ms".into(), bad_direction: BadDirection::Up };
    Observation {
        service: "s".into(),
        step_s: 10,
        duration_s: 1800,
        now_s: 1800,
        traffic: None,
        baseline_kind: BaselineKind::Concurrent,
        metrics: vec![MetricSeries { spec, baseline, canary }],
        logs: vec![],
        events: vec![],
        ml: Default::default(),
    }
}

/// The first tick at which `obs`, cut at that tick, fails, and its result.
fn first_failure(obs: &Observation) -> Option<(u64, JudgeResult)> {
    let jc = JudgeConfig::default();
    (10..=obs.duration_s).step_by(10).find_map(|now| {
        let n = (now / u64::from(obs.step_s)) as usize;
        let mut seen = obs.clone();
        seen.now_s = now;
        for m in &mut seen.metrics {
            m.baseline.truncate(n);
            m.canary.truncate(n);
        }
        let r = judge(&seen, &jc);
        (r.verdict == Verdict::Fail).then_some((now, r))
    })
}

#[test]
fn a_latency_shift_after_healthy_minutes_is_caught_by_accumulated_evidence() {
    // +30 % from step 100 (1000 s) in noise of SD 20 % a side: a minute's
    // window cannot tell it (z ≈ 2), the evidence since the change can.
    let obs = latency(7, 40.0, |i| if i >= 100 { 60.0 } else { 0.0 });
    let (at, r) = first_failure(&obs).expect("a sustained +30 % must be caught");
    assert!((1000..=1400).contains(&at), "caught at {at}");
    let f = r.failing().next().unwrap();
    let shift = f.shift.expect("the shift e-detector runs on a continuous metric");
    assert!(shift.crossed() && shift.shift > shift.tolerance, "{f:#?}");
    // Located at the change (warm-up is 6 steps), and said so.
    assert!((90..=100).contains(&shift.changed_after_steps), "{}", shift.changed_after_steps);
    assert!(f.explanation.contains("sequential evidence"), "{}", f.explanation);
}

#[test]
fn a_few_wild_canary_samples_are_not_a_shift() {
    // Healthy canaries in noise of SD 20 % a side, each with three lone
    // spikes of +2 s: the Gaussian evidence alone would be carried by them.
    for seed in 0..20 {
        let obs = latency(seed, 40.0, |i| if [40, 95, 150].contains(&i) { 2000.0 } else { 0.0 });
        assert!(first_failure(&obs).is_none(), "seed {seed}: {:#?}", first_failure(&obs).unwrap().1.findings);
        let end = judge(&obs, &JudgeConfig::default());
        assert_eq!(end.verdict, Verdict::Pass, "{end:#?}");
        assert!(end.findings[0].shift.is_some_and(|s| !s.crossed()));
    }
    // A fall holds no evidence of a rise (an e-value of 0), and the finding
    // still reads back from JSON, as the ledger stores it.
    let falls = judge(&latency(1, 10.0, |_| -100.0), &JudgeConfig::default());
    let f = &falls.findings[0];
    assert_eq!(f.shift.map(|s| s.log_e), Some(sequential::NO_RISE));
    let back: Finding = serde_json::from_str(&serde_json::to_string(f).unwrap()).unwrap();
    assert_eq!(&back, f);
}

#[test]
fn a_failure_by_accumulated_evidence_is_not_told_as_a_windows() {
    // The demo's latency regression (seed 7): the shift e-detector fails the
    // metric at the first look its window is flagged, so the sentence must give
    // the accumulated evidence, not "at 2 looks in a row".
    let cfg = SimConfig {
        seed: 7,
        blip_rate: 0.01,
        gap_rate: 0.01,
        noise: 1.2,
        ..fault(FaultKind::LatencyRegression, 480, 0.6)
    };
    let (at, r) = run(cfg);
    assert!(at.is_some_and(|t| t <= 540), "caught at {at:?}");
    let f = r.failing().next().unwrap();
    assert!(f.shift.is_some_and(|s| s.crossed()), "{f:#?}");
    assert!(!f.explanation.contains("looks in a row"), "{}", f.explanation);
    assert!(f.explanation.contains("sequential evidence"), "{}", f.explanation);
}

/// One metric against the hour before it, which climbs 0.002 a step under
/// small noise; the canary carries the climb on (`keeps_on`) or stops and
/// stands at the hour's end level plus a 0.2 step.
fn climbing(keeps_on: bool) -> Observation {
    let canary = move |i: usize| {
        if keeps_on { 0.5 + 0.002 * (60 + i) as f64 } else { 0.82 }
    };
    let obs = kpi_a(
        BaselineKind::Preceding,
        BadDirection::Up,
        |i| 0.5 + 0.002 * i as f64 + small_noise(i),
        move |i| canary(i) + small_noise(i + 60),
    );
    Observation { now_s: 3600, ..obs }
}

#[test]
fn a_level_that_keeps_its_hours_climb_is_no_fault_but_a_step_past_it_is() {
    let verdict = |keeps_on: bool| judge(&climbing(keeps_on), &JudgeConfig::default());
    let (kept, stepped) = (verdict(true), verdict(false));
    assert_ne!(kept.verdict, Verdict::Fail, "an hour that climbs is a weaker yardstick an hour later: {kept:#?}");
    assert_eq!(stepped.verdict, Verdict::Fail, "{stepped:#?}");
}
