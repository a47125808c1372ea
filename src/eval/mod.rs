//! `backstop eval`: replay scenarios through judges and score them exactly as
//! `shared/scenarios/FORMAT.md` describes.

mod assessor;
pub mod peers;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::judge::GuardNote;
pub use crate::judge::replay::{Replay, ReplayDecision, replay_with};
use crate::policy::PolicyFile;
use crate::signals::{Scenario, ScenarioData, ScenarioError, load_scenarios};
pub use assessor::AssessorJudge;
pub use report::{Summary, render_misses, render_table, summarise};

/// A judge `eval` can run.
pub trait EvalJudge: Sync {
    /// Name in the report.
    fn name(&self) -> &'static str;
    /// Replay one scenario and say what it decided and when.
    fn decide(&self, data: &ScenarioData) -> (ReplayDecision, Option<u64>);
    /// The same, with the guard hits seen on the way (judges without guards see none).
    fn replay(&self, data: &ScenarioData) -> Replay {
        let (decision, decided_at_s) = self.decide(data);
        Replay::bare(decision, decided_at_s)
    }
}

/// One scenario's line in the report (FORMAT.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub scenario: String,
    /// Decision.
    pub decision: ReplayDecision,
    /// Replay time of the decision; `null` for inconclusive.
    pub decided_at_s: Option<u64>,
    /// From `truth.bad`; `null` without truth.
    pub truth_bad: Option<bool>,
    /// From `truth.onset_s`; `null` without truth.
    pub onset_s: Option<u64>,
    /// Guards that fired during the replay (backstop's judges only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guard_hits: Vec<GuardNote>,
    /// Why a rollback or escalation happened (backstop's judges only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

/// Our judge: replays tick by tick (one tick per sample step) and stops at
/// the first `Fail`; promotes when the window ends with `Pass`.
pub struct BackstopJudge {
    /// The policy file: judge tunables and per-service guards.
    pub policy: PolicyFile,
    /// `backstop`, or `backstop-paired` (the paired test whatever the baseline, as before judge v2).
    pub name: JudgeName,
}

impl EvalJudge for BackstopJudge {
    fn name(&self) -> &'static str {
        self.name.as_str()
    }

    fn decide(&self, data: &ScenarioData) -> (ReplayDecision, Option<u64>) {
        let r = self.replay(data);
        (r.decision, r.decided_at_s)
    }

    /// Tick by tick: the first `Fail` rolls back; a window that ends with an
    /// incident-like condition (shared guard breach, baseline shift) is the
    /// agent holding for a human — `escalate`.
    fn replay(&self, data: &ScenarioData) -> Replay {
        replay_with(data, &self.policy.judge_for(&data.service))
    }
}

/// A judge `eval` can run, by the name `--judge` takes and reports carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, strum::IntoStaticStr, strum::EnumIter)]
pub enum JudgeName {
    /// backstop's judge.
    #[value(name = "backstop")]
    #[strum(serialize = "backstop")]
    Backstop,
    /// backstop's judge with the paired test whatever the baseline (judge v1).
    #[value(name = "backstop-paired")]
    #[strum(serialize = "backstop-paired")]
    BackstopPaired,
    /// backstop's judge with the configured model, through policy (needs `[model]`).
    #[value(name = "backstop+model")]
    #[strum(serialize = "backstop+model")]
    BackstopModel,
    /// Kayenta's Mann-Whitney classifier.
    #[value(name = "kayenta")]
    #[strum(serialize = "kayenta")]
    Kayenta,
    /// Argo Rollouts' analysis, failure limit 0.
    #[value(name = "argo")]
    #[strum(serialize = "argo")]
    Argo,
    /// Argo Rollouts' analysis, failure limit 3.
    #[value(name = "argo-fl3")]
    #[strum(serialize = "argo-fl3")]
    ArgoFl3,
    /// Flagger's analysis, threshold 1.
    #[value(name = "flagger")]
    #[strum(serialize = "flagger")]
    Flagger,
    /// Flagger's analysis, threshold 5.
    #[value(name = "flagger-t5")]
    #[strum(serialize = "flagger-t5")]
    FlaggerT5,
}

impl JudgeName {
    /// The name as reports carry it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Build a judge by name (`None` for `backstop+model`, which needs an assessor: [`AssessorJudge`]).
pub fn judge_by_name(name: JudgeName, policy: &PolicyFile) -> Option<Box<dyn EvalJudge>> {
    use peers::{ArgoJudge, FlaggerJudge, KayentaJudge};
    Some(match name {
        JudgeName::Backstop => Box::new(BackstopJudge { policy: policy.clone(), name }),
        JudgeName::BackstopPaired => {
            let mut policy = policy.clone();
            policy.judge.method = crate::judge::MethodChoice::Paired;
            Box::new(BackstopJudge { policy, name })
        }
        JudgeName::BackstopModel => return None,
        JudgeName::Kayenta => Box::new(KayentaJudge),
        JudgeName::Argo => Box::new(ArgoJudge { failure_limit: 0 }),
        JudgeName::ArgoFl3 => Box::new(ArgoJudge { failure_limit: 3 }),
        JudgeName::Flagger => Box::new(FlaggerJudge { threshold: 1 }),
        JudgeName::FlaggerT5 => Box::new(FlaggerJudge { threshold: 5 }),
    })
}

/// Scenarios loaded from the given paths, and the files that failed.
pub struct Corpus {
    /// Parsed scenarios, grouped by the path argument they came from.
    pub groups: Vec<(PathBuf, Vec<Scenario>)>,
    /// Files that broke the format.
    pub errors: Vec<ScenarioError>,
}

/// Load every path; broken files are collected, the rest still run.
pub fn load_corpus(paths: &[PathBuf]) -> Corpus {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let mut ok = Vec::new();
        for r in load_scenarios(p) {
            match r {
                Ok(s) => ok.push(s),
                Err(e) => errors.push(e),
            }
        }
        groups.push((p.clone(), ok));
    }
    Corpus { groups, errors }
}

/// Replay every scenario through `judge`, in parallel across cores, keeping input order.
pub fn run_judge(judge: &dyn EvalJudge, scenarios: &[&Scenario]) -> Vec<ScenarioResult> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).max(1);
    let chunk = scenarios.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = scenarios
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|s| score_one(judge, s)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn score_one(judge: &dyn EvalJudge, s: &Scenario) -> ScenarioResult {
    let Replay { decision, decided_at_s: at, guard_hits, why } = judge.replay(&s.data);
    ScenarioResult {
        scenario: s.data.name.clone(),
        decision,
        decided_at_s: if decision == ReplayDecision::Inconclusive { None } else { at },
        truth_bad: s.truth.as_ref().map(|t| t.bad),
        onset_s: s.truth.as_ref().and_then(|t| t.onset_s),
        guard_hits,
        why,
    }
}

/// One judge's block in the report.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeReport {
    /// Per-scenario results.
    pub results: Vec<ScenarioResult>,
    /// Scores over all scenarios.
    pub summary: Summary,
    /// Scores per path argument (corpus).
    pub corpora: BTreeMap<String, Summary>,
    /// The scenarios it got wrong, per path argument: for a reader to check
    /// (`eval --format table --misses`); the JSON results already say it.
    #[serde(skip)]
    pub misses: BTreeMap<String, Misses>,
}

/// One judge's wrong answers on one corpus, by scenario name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Misses {
    /// Faulty scenarios not rolled back (promoted, escalated or inconclusive).
    pub missed: Vec<String>,
    /// Healthy scenarios rolled back.
    pub false_rollbacks: Vec<String>,
}

impl Misses {
    fn of(results: &[ScenarioResult]) -> Misses {
        let names = |f: &dyn Fn(&ScenarioResult) -> bool| {
            let mut v: Vec<String> = results.iter().filter(|r| f(r)).map(|r| r.scenario.clone()).collect();
            v.sort();
            v
        };
        Misses {
            missed: names(&|r| r.truth_bad == Some(true) && r.decision != ReplayDecision::Rollback),
            false_rollbacks: names(&|r| r.truth_bad == Some(false) && r.decision == ReplayDecision::Rollback),
        }
    }
}

/// The whole `eval --format json` object.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Judge name → its report.
    pub judges: BTreeMap<String, JudgeReport>,
}

/// Run every judge over the corpus.
pub fn evaluate(corpus: &Corpus, judges: &[Box<dyn EvalJudge>]) -> EvalReport {
    let mut out = BTreeMap::new();
    for j in judges {
        let mut results = Vec::new();
        let mut corpora = BTreeMap::new();
        let mut misses = BTreeMap::new();
        for (path, scenarios) in &corpus.groups {
            let refs: Vec<&Scenario> = scenarios.iter().collect();
            let r = run_judge(j.as_ref(), &refs);
            corpora.insert(path.display().to_string(), summarise(&r));
            misses.insert(path.display().to_string(), Misses::of(&r));
            results.extend(r);
        }
        let summary = summarise(&results);
        out.insert(j.name().to_string(), JudgeReport { results, summary, corpora, misses });
    }
    EvalReport { judges: out }
}
