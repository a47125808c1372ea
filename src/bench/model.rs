//! `backstop bench --model-on PATH`: the configured model on a corpus of
//! releases, replayed as `eval --judge backstop+model` does (simulated time,
//! each answer waited for up to the deadline), against the judge alone on the
//! same releases. What it reports is what an SRE pointing backstop at a model
//! needs to know: how long a consultation takes here, how big it is, how often
//! the answer is usable, and that no decision became looser.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::assessor::{Assessor, Consultation, Rejection};
use crate::eval::{AssessorJudge, BackstopJudge, EvalJudge, JudgeName, ReplayDecision};
use crate::policy::{ModelInput, PolicyFile};
use crate::signals::Scenario;

/// Published prices of a hosted model, US dollars per million tokens.
#[derive(Debug, Clone, Copy)]
pub struct Price {
    /// Name shown.
    pub model: &'static str,
    /// Input (prompt) tokens.
    pub input_per_m: f64,
    /// Output (completion) tokens.
    pub output_per_m: f64,
}

/// OpenAI's published price for gpt-4o-mini (openai.com/api/pricing).
pub const GPT_4O_MINI: Price = Price { model: "gpt-4o-mini", input_per_m: 0.15, output_per_m: 0.60 };

/// One release replayed both ways.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Scenario name.
    pub scenario: String,
    /// Labelled faulty (`None` without truth).
    pub bad: Option<bool>,
    /// The judge alone.
    pub alone: ReplayDecision,
    /// The judge with the model.
    pub with: ReplayDecision,
}

/// Everything measured.
#[derive(Debug, Clone, Default)]
pub struct ModelBench {
    /// Both replays of every release.
    pub pairs: Vec<Pair>,
    /// Every consultation taken, with its release.
    pub consultations: Vec<(String, Consultation)>,
}

/// Replay `scenarios` with the judge alone and with `assessor`, one release
/// at a time (so a consultation's time is its own, not a queue's).
pub fn run(scenarios: &[&Scenario], policy: &PolicyFile, assessor: Arc<Assessor>) -> ModelBench {
    let alone = BackstopJudge { policy: policy.clone(), name: JudgeName::Backstop };
    let record = Arc::new(Mutex::new(Vec::new()));
    let with = AssessorJudge { policy: policy.clone(), assessor, record: Some(record.clone()) };
    let pairs = scenarios
        .iter()
        .map(|s| Pair {
            scenario: s.data.name.clone(),
            bad: s.truth.as_ref().map(|t| t.bad),
            alone: alone.replay(&s.data).decision,
            with: with.replay(&s.data).decision,
        })
        .collect();
    let consultations = record.lock().map(|c| c.clone()).unwrap_or_default();
    ModelBench { pairs, consultations }
}

fn strictness(d: ReplayDecision) -> u8 {
    match d {
        ReplayDecision::Promote => 0,
        ReplayDecision::Inconclusive => 1,
        ReplayDecision::Escalate => 2,
        ReplayDecision::Rollback => 3,
    }
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// What became of one consultation, by name.
fn outcome(c: &Consultation) -> &'static str {
    match (&c.input, &c.rejection, &c.error) {
        (ModelInput::Verdict { .. }, _, _) => "accepted",
        (_, Some(Rejection::Schema { .. }), _) => "rejected: not the schema",
        (_, Some(Rejection::UnknownEvidence { .. }), _) => "rejected: cites evidence never shown",
        (_, Some(Rejection::Contradicted { .. }), _) => "rejected: contradicted by its evidence",
        (_, Some(Rejection::Unsupported { .. }), _) => "rejected: unsupported claim",
        (_, Some(Rejection::Stale { .. }), _) => "rejected: late and stale",
        (_, None, Some(e)) if e.contains("deadline") => "no answer: deadline",
        (_, None, Some(e)) if e.contains("no verdict within") => "no answer: out of turns",
        (_, None, Some(_)) => "no answer: other",
        _ => "no answer: other",
    }
}

fn differ(pairs: &[Pair]) -> String {
    let d: Vec<String> = pairs
        .iter()
        .filter(|p| p.alone != p.with)
        .map(|p| format!("{}: {:?} → {:?}", p.scenario, p.alone, p.with))
        .collect();
    if d.is_empty() { "none".into() } else { d.join("; ") }
}

/// The table, as BENCHMARKS.md shows it.
pub fn render(b: &ModelBench, model: &str, price: Price) -> String {
    let healthy = b.pairs.iter().filter(|p| p.bad == Some(false)).count();
    let mut rows = vec![("releases replayed".to_string(), format!("{} ({healthy} labelled healthy)", b.pairs.len()))];
    rows.extend(consultation_rows(&b.consultations));
    rows.extend(decision_rows(&b.pairs));
    // Tokens of every turn, averaged over the releases replayed.
    let (p_in, p_out) = tokens(&b.consultations);
    let per_release = |t: u64| t as f64 / b.pairs.len().max(1) as f64;
    let cost = (per_release(p_in) * price.input_per_m + per_release(p_out) * price.output_per_m) / 1e6 * 1000.0;
    rows.push((
        format!("the same tokens on {} per 1,000 releases", price.model),
        format!("${cost:.2} (at ${}/M input, ${}/M output)", price.input_per_m, price.output_per_m),
    ));
    let mut out = format!("| {model} | measured |\n| --- | --- |\n");
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 }
}

/// Prompt and completion tokens of every turn of every consultation.
fn tokens(consultations: &[(String, Consultation)]) -> (u64, u64) {
    consultations.iter().fold((0, 0), |(i, o), (_, c)| (i + c.usage.prompt_tokens, o + c.usage.completion_tokens))
}

/// Rows about the consultations themselves: how many, how long, how big, how they ended.
fn consultation_rows(consultations: &[(String, Consultation)]) -> Vec<(String, String)> {
    let n = consultations.len();
    let mut ms: Vec<u64> = consultations.iter().map(|(_, c)| c.elapsed_ms).collect();
    ms.sort_unstable();
    let mut prompt: Vec<u64> = consultations.iter().filter_map(|(_, c)| c.prompt.map(|p| p.tokens)).collect();
    prompt.sort_unstable();
    let (p_in, p_out) = tokens(consultations);
    let calls: u64 = consultations.iter().map(|(_, c)| u64::from(c.usage.calls)).sum();
    let answered = consultations.iter().filter(|(_, c)| c.error.is_none()).count();
    let parsed = consultations.iter().filter(|(_, c)| c.verdict.is_some()).count();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, c) in consultations {
        *outcomes.entry(outcome(c)).or_default() += 1;
    }
    let mut rows = vec![
        ("consultations (requests)".to_string(), format!("{n} ({calls})")),
        (
            "consultation latency p50 / p95".into(),
            format!("{:.1} s / {:.1} s", quantile(&ms, 0.5) as f64 / 1e3, quantile(&ms, 0.95) as f64 / 1e3),
        ),
        (
            "first prompt p50 / max (counted as recorded)".into(),
            format!("{} / {} tokens", quantile(&prompt, 0.5), prompt.last().copied().unwrap_or(0)),
        ),
        (
            "tokens per consultation (prompt / completion, all turns)".into(),
            format!("{:.0} / {:.0}", p_in as f64 / n.max(1) as f64, p_out as f64 / n.max(1) as f64),
        ),
        (
            "answers that parse as the schema".into(),
            format!("{parsed} of {answered} answered ({:.0} %)", pct(parsed, answered)),
        ),
    ];
    rows.extend(outcomes.iter().map(|(k, v)| (format!("consultations {k}"), v.to_string())));
    rows
}

/// Rows about the release decisions: the judge alone against the judge with the model.
fn decision_rows(pairs: &[Pair]) -> Vec<(String, String)> {
    let releases = pairs.len();
    let same = pairs.iter().filter(|p| p.alone == p.with).count();
    let stricter = pairs.iter().filter(|p| strictness(p.with) > strictness(p.alone)).count();
    let looser = pairs.iter().filter(|p| strictness(p.with) < strictness(p.alone)).count();
    let healthy_escalated = pairs
        .iter()
        .filter(|p| p.bad == Some(false) && strictness(p.with) > strictness(p.alone) && strictness(p.with) >= 2)
        .count();
    let healthy = pairs.iter().filter(|p| p.bad == Some(false)).count();
    vec![
        (
            "release decision same as the judge alone".to_string(),
            format!("{same} of {releases} ({:.0} %)", pct(same, releases)),
        ),
        ("decisions the model made stricter / looser".into(), format!("{stricter} / {looser}")),
        ("healthy releases escalated by the model".into(), format!("{healthy_escalated} of {healthy}")),
        ("decisions that differ (judge alone → with the model)".into(), differ(pairs)),
    ]
}
