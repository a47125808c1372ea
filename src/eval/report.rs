//! Scoring (FORMAT.md) and the human table.

use serde::Serialize;

use super::{EvalReport, ReplayDecision, ScenarioResult};

/// Scores over a set of scenarios.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Scenarios judged.
    pub scenarios: usize,
    /// With `truth.bad = true`.
    pub bad: usize,
    /// With `truth.bad = false`.
    pub good: usize,
    /// Without truth.
    pub unlabelled: usize,
    /// Decisions made.
    pub rollbacks: usize,
    /// Promotions.
    pub promotions: usize,
    /// Stopped for a human (approval or a model hold); nothing executed.
    pub escalations: usize,
    /// No decision by the end.
    pub inconclusive: usize,
    /// Bad scenarios rolled back before their fault began (counted in recall
    /// by FORMAT.md's scoring; a sign of a trigger-happy judge).
    pub early_rollbacks: usize,
    /// Bad scenarios rolled back / bad scenarios.
    pub recall: Option<f64>,
    /// Good scenarios rolled back / good scenarios.
    pub false_rollback_rate: Option<f64>,
    /// Harmonic mean of precision (rollbacks that were due) and recall:
    /// `2·caught / (2·caught + false rollbacks + bad not rolled back)`, one
    /// number for a trade of recall against false rollbacks.
    pub f1: Option<f64>,
    /// Good scenarios promoted / good scenarios.
    pub good_promoted_rate: Option<f64>,
    /// Good scenarios escalated to a human / good scenarios (alert fatigue).
    pub escalation_rate_good: Option<f64>,
    /// Bad scenarios escalated to a human / bad scenarios.
    pub escalation_rate_bad: Option<f64>,
    /// Median of `decided_at_s - onset_s` over bad scenarios rolled back.
    pub detection_delay_median_s: Option<f64>,
    /// 90th percentile of the same.
    pub detection_delay_p90_s: Option<f64>,
}

fn ratio(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Score results as FORMAT.md defines.
pub fn summarise(results: &[ScenarioResult]) -> Summary {
    let count = |f: &dyn Fn(&ScenarioResult) -> bool| results.iter().filter(|r| f(r)).count();
    let bad = count(&|r| r.truth_bad == Some(true));
    let good = count(&|r| r.truth_bad == Some(false));
    let caught = count(&|r| r.truth_bad == Some(true) && r.decision == ReplayDecision::Rollback);
    let false_rb = count(&|r| r.truth_bad == Some(false) && r.decision == ReplayDecision::Rollback);
    let good_promoted = count(&|r| r.truth_bad == Some(false) && r.decision == ReplayDecision::Promote);
    let mut delays: Vec<f64> = results
        .iter()
        .filter(|r| r.truth_bad == Some(true) && r.decision == ReplayDecision::Rollback)
        .filter_map(|r| Some(r.decided_at_s? as f64 - r.onset_s? as f64))
        .collect();
    delays.sort_by(f64::total_cmp);
    let median = if delays.is_empty() {
        None
    } else if delays.len() % 2 == 1 {
        Some(delays[delays.len() / 2])
    } else {
        Some((delays[delays.len() / 2 - 1] + delays[delays.len() / 2]) / 2.0)
    };
    Summary {
        scenarios: results.len(),
        bad,
        good,
        unlabelled: results.len() - bad - good,
        rollbacks: count(&|r| r.decision == ReplayDecision::Rollback),
        promotions: count(&|r| r.decision == ReplayDecision::Promote),
        escalations: count(&|r| r.decision == ReplayDecision::Escalate),
        inconclusive: count(&|r| r.decision == ReplayDecision::Inconclusive),
        early_rollbacks: count(&|r| {
            r.truth_bad == Some(true)
                && r.decision == ReplayDecision::Rollback
                && matches!((r.decided_at_s, r.onset_s), (Some(at), Some(on)) if at < on)
        }),
        recall: ratio(caught, bad),
        false_rollback_rate: ratio(false_rb, good),
        f1: ratio(2 * caught, 2 * caught + false_rb + (bad - caught)),
        good_promoted_rate: ratio(good_promoted, good),
        escalation_rate_good: ratio(
            count(&|r| r.truth_bad == Some(false) && r.decision == ReplayDecision::Escalate),
            good,
        ),
        escalation_rate_bad: ratio(
            count(&|r| r.truth_bad == Some(true) && r.decision == ReplayDecision::Escalate),
            bad,
        ),
        detection_delay_median_s: median,
        detection_delay_p90_s: percentile(&delays, 0.9),
    }
}

fn opt(v: Option<f64>, pct: bool) -> String {
    match v {
        None => "-".into(),
        Some(x) if pct => format!("{:.1}%", x * 100.0),
        Some(x) => format!("{x:.0}"),
    }
}

const WIDTHS: [usize; 12] = [15, 40, 5, 5, 5, 8, 8, 6, 6, 6, 9, 9];

/// One table line: first two columns left-aligned, the rest right-aligned.
fn line(cells: [String; 12]) -> String {
    let mut out = String::new();
    for (k, (cell, w)) in cells.iter().zip(WIDTHS).enumerate() {
        let sep = if k == 0 { "" } else { " " };
        if k < 2 {
            out.push_str(&format!("{sep}{cell:<w$}"));
        } else {
            out.push_str(&format!("{sep}{cell:>w$}"));
        }
    }
    out.push('\n');
    out
}

/// A plain-text table: one row per judge and corpus.
pub fn render_table(report: &EvalReport) -> String {
    let head =
        ["judge", "corpus", "n", "bad", "good", "recall", "false_rb", "f1", "early", "incon", "delay_med", "delay_p90"];
    let mut out = line(head.map(String::from));
    for (name, jr) in &report.judges {
        let mut rows: Vec<(String, &Summary)> = jr.corpora.iter().map(|(k, v)| (k.clone(), v)).collect();
        if rows.len() > 1 {
            rows.push(("(all)".into(), &jr.summary));
        }
        for (corpus, s) in rows {
            let corpus = if corpus.len() > 40 { format!("…{}", &corpus[corpus.len() - 39..]) } else { corpus };
            out.push_str(&line([
                name.clone(),
                corpus,
                s.scenarios.to_string(),
                s.bad.to_string(),
                s.good.to_string(),
                opt(s.recall, true),
                opt(s.false_rollback_rate, true),
                s.f1.map_or("-".into(), |f| format!("{f:.3}")),
                s.early_rollbacks.to_string(),
                s.inconclusive.to_string(),
                opt(s.detection_delay_median_s, false),
                opt(s.detection_delay_p90_s, false),
            ]));
        }
    }
    out
}

/// Below the table: per judge and corpus, the faulty scenarios not rolled
/// back and the healthy ones rolled back, by name, one per line.
pub fn render_misses(report: &EvalReport) -> String {
    let mut out = String::new();
    for (name, jr) in &report.judges {
        for (corpus, m) in &jr.misses {
            for (what, list) in [("missed", &m.missed), ("false rollbacks", &m.false_rollbacks)] {
                out.push_str(&format!("\n{name} on {corpus}, {what} ({}):\n", list.len()));
                for s in list {
                    out.push_str(&format!("  {s}\n"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(decision: ReplayDecision, at: Option<u64>, bad: Option<bool>, onset: Option<u64>) -> ScenarioResult {
        ScenarioResult {
            scenario: "s".into(),
            decision,
            decided_at_s: at,
            truth_bad: bad,
            onset_s: onset,
            guard_hits: vec![],
            why: vec![],
        }
    }

    #[test]
    fn an_escalation_is_neither_a_rollback_nor_a_promotion() {
        let rs = vec![
            r(ReplayDecision::Escalate, Some(300), Some(false), None),
            r(ReplayDecision::Promote, Some(1800), Some(false), None),
            r(ReplayDecision::Escalate, Some(700), Some(true), Some(600)),
            r(ReplayDecision::Rollback, Some(660), Some(true), Some(600)),
        ];
        let s = summarise(&rs);
        assert_eq!((s.escalations, s.rollbacks, s.promotions), (2, 1, 1));
        assert_eq!((s.escalation_rate_good, s.escalation_rate_bad), (Some(0.5), Some(0.5)));
        assert_eq!((s.false_rollback_rate, s.recall), (Some(0.0), Some(0.5)));
        assert_eq!(serde_json::to_value(ReplayDecision::Escalate).unwrap(), "escalate");
    }

    #[test]
    fn scores_as_format_md_defines() {
        let rs = vec![
            r(ReplayDecision::Rollback, Some(640), Some(true), Some(600)),
            r(ReplayDecision::Rollback, Some(700), Some(true), Some(600)),
            r(ReplayDecision::Promote, Some(1800), Some(true), Some(600)),
            r(ReplayDecision::Rollback, Some(100), Some(false), None),
            r(ReplayDecision::Promote, Some(1800), Some(false), None),
            r(ReplayDecision::Inconclusive, None, Some(false), None),
            r(ReplayDecision::Inconclusive, None, Some(false), None),
            r(ReplayDecision::Rollback, Some(50), None, None),
        ];
        let s = summarise(&rs);
        assert_eq!((s.bad, s.good, s.unlabelled), (3, 4, 1));
        assert!((s.recall.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.false_rollback_rate.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(s.detection_delay_median_s, Some(70.0));
        assert_eq!(s.detection_delay_p90_s, Some(100.0));
        assert_eq!(s.inconclusive, 2);
        assert_eq!(s.early_rollbacks, 0);
        // 2 caught, 1 false rollback, 1 missed: 4 / (4 + 1 + 1).
        assert!((s.f1.unwrap() - 4.0 / 6.0).abs() < 1e-12);
        let early = summarise(&[r(ReplayDecision::Rollback, Some(100), Some(true), Some(600))]);
        assert_eq!(early.early_rollbacks, 1);
        assert_eq!(early.recall, Some(1.0), "FORMAT.md counts it in recall");
    }

    #[test]
    fn no_truth_means_no_scores() {
        let s = summarise(&[r(ReplayDecision::Rollback, Some(10), None, None)]);
        assert_eq!(s.recall, None);
        assert_eq!(s.false_rollback_rate, None);
        assert_eq!(s.f1, None);
        assert_eq!(s.rollbacks, 1);
    }
}
