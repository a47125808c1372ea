//! User-facing text pinned with insta: the judge's explanations and the config schema.

use backstop::judge::{JudgeConfig, Verdict, judge};
use backstop::signals::simulator::{FaultKind, FaultSpec, SimConfig, Simulator};

#[test]
fn judge_explanations_for_an_error_spike() {
    let sim = Simulator::new(SimConfig {
        fault: Some(FaultSpec { kind: FaultKind::ErrorSpike, onset_s: 600, strength: 0.05 }),
        ..SimConfig::default()
    });
    let cfg = JudgeConfig::default();
    let failed =
        (10..=1800).step_by(10).map(|t| judge(&sim.observe_at(t), &cfg)).find(|r| r.verdict == Verdict::Fail).unwrap();
    let lines: Vec<String> = std::iter::once(format!("t={}s {}", failed.now_s, failed.summary))
        .chain(failed.findings.iter().map(|f| f.explanation.clone()))
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn config_schema_is_pinned() {
    insta::assert_json_snapshot!(backstop::config::schema());
}

#[test]
fn ledger_problem_messages() {
    use backstop::ledger::Problem;
    let msgs: Vec<String> = [
        Problem::Edited { seq: 3 },
        Problem::Deleted { from_seq: 4, to_seq: 4 },
        Problem::Deleted { from_seq: 5, to_seq: 7 },
        Problem::Reordered { seq: 9 },
        Problem::Truncated { head_seq: 12, last_seq: 10 },
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    insta::assert_snapshot!(msgs.join("\n"));
}
