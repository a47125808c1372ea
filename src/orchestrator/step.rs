//! "What now" after a tick: a pure function of policy's decision, the
//! window, this agent's lease, an operator's hold and any open request for
//! a human, so the loop around it stays a shell.
//!
//! Asking never delays: a request for a human is opened and the release
//! goes on being judged. The judge's own rollback (or promotion) still runs
//! as if nobody had been asked, closing the request as superseded; only a
//! window that ends with the request still open ends awaiting it (or, where
//! someone can answer — an agent's API or Slack — keeps waiting for them).
//!
//! A stepwise ramp adds one move, [`Next::Raise`], and one refusal: the
//! canary's share is raised only while everything is quiet (policy says go
//! on, the judge suspects nothing, the source answered, nobody holds or is
//! asked, this agent holds the lease), and a promotion waits for the last
//! step to have been judged its time.

use super::ReleaseStatus;
use crate::executor::ActionKind;
use crate::ledger::{LeaseRole, Record};
use crate::policy::{Decision, Proposal, RunMode};

/// The loop's next move.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Keep judging.
    Continue,
    /// Another agent holds the target: keep judging, never act, and end when it ends the release.
    Follow,
    /// End the release with this status; nothing to run.
    Finish(Box<ReleaseStatus>),
    /// Run (or, advising, plan) the decision's action; an open request closes as superseded.
    Act,
    /// Ask a human for `proposed` and keep judging (a request open for
    /// another action is withdrawn first).
    Ask {
        /// Why a human is needed.
        reason: String,
        /// What approval would do.
        proposed: Proposal,
    },
    /// Policy no longer asks: withdraw the open request and keep judging.
    Withdraw,
    /// Raise the canary's share of traffic to this percent (the ramp's next
    /// step) and keep judging.
    Raise(u8),
}

/// Where a release's ramp stands, as read from the ledger: the weight its
/// last raise that took effect set, and the release seconds judged (ticks
/// with an observation) since.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RampProgress {
    /// Percent of traffic on the canary after the last raise (none yet: `None`).
    pub weight: Option<u8>,
    /// Seconds judged at that weight.
    pub judged_s: u64,
}

impl RampProgress {
    /// A raise to `weight` took effect: the step's judged time starts over.
    pub fn raised(&mut self, weight: u8) {
        *self = RampProgress { weight: Some(weight), judged_s: 0 };
    }
}

/// A raise of the ramp that took effect: to `weight` percent of traffic at
/// release second `at_s` (the latest tick's). In an advisory run, which
/// raises nothing, the raises acting would have made ([`rehearsed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct RampRaise {
    /// Percent of traffic on the canary after the raise.
    pub weight: u8,
    /// Release seconds when it was made.
    pub at_s: u64,
}

/// A ramp as a release walks it: where it stands, and the raises that took
/// effect, in order (advising: where acting would have it, and its raises).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RampTrace {
    /// Where the ramp stands.
    pub progress: RampProgress,
    /// The raises, in order.
    pub raises: Vec<RampRaise>,
}

impl RampTrace {
    /// A raise to `weight` took effect at release second `at_s`.
    pub fn raised(&mut self, weight: u8, at_s: u64) {
        self.progress.raised(weight);
        self.raises.push(RampRaise { weight, at_s });
    }
}

/// The ramp after a release's `records` (in ledger order): the weight of
/// the last raise that took effect (advising: rehearsed), the release time
/// judged since, and the raises. Several agents' tick records interleave
/// (followers judge too), so only time beyond the furthest tick so far
/// counts, and a tick without an observation moves time on without judging it.
pub fn ramp_history<'a>(records: impl IntoIterator<Item = &'a Record>) -> RampTrace {
    let mut trace = RampTrace::default();
    let mut raises = std::collections::HashMap::new();
    let mut judged_to = 0;
    for rec in records {
        match rec {
            Record::Tick(t) => {
                if t.now_s > judged_to && t.inputs_digest != super::NO_OBSERVATION {
                    trace.progress.judged_s += t.now_s - judged_to;
                }
                judged_to = judged_to.max(t.now_s);
                if let Some(weight) = t.rehearsed_raise {
                    trace.raised(weight, judged_to);
                }
            }
            Record::Intent(i) => {
                if let ActionKind::Raise { weight } = i.plan.kind {
                    raises.insert(i.plan.id.as_str(), weight);
                }
            }
            Record::Outcome(o) if o.result.took_effect() => {
                if let Some(weight) = raises.get(o.plan_id.as_str()) {
                    trace.raised(*weight, judged_to);
                }
            }
            _ => {}
        }
    }
    trace
}

/// What the ramp allows at this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RampStep {
    /// No ramp (or advising: an advisory run raises nothing).
    Off,
    /// The next step is due: its predecessor was judged long enough (the
    /// first step is due at once).
    Due(u8),
    /// The current step has not yet been judged its time.
    Judging,
    /// The last step is reached and judged its time: a promotion may follow.
    Done,
}

impl RampStep {
    /// Where a ramp of `raises` (the steps below 100, rising) with
    /// `min_judged_s` a step stands after `progress`.
    pub fn of(raises: impl IntoIterator<Item = u8>, min_judged_s: u64, progress: RampProgress) -> RampStep {
        let judged = progress.weight.is_none() || progress.judged_s >= min_judged_s;
        let next = raises.into_iter().find(|w| progress.weight.is_none_or(|at| *w > at));
        match (next, judged) {
            (Some(w), true) => RampStep::Due(w),
            (Some(_), false) | (None, false) => RampStep::Judging,
            (None, true) => RampStep::Done,
        }
    }
}

/// Why a promotion waits: the window passed before the ramp's last step was judged its time.
pub fn ramp_unfinished(progress: RampProgress) -> String {
    let at = progress.weight.map_or("no step".to_string(), |w| format!("{w}% of traffic"));
    format!(
        "the analysis window passed with the ramp at {at}, its last step not yet judged its time (raises wait while          anything is suspect, a source fails or a person holds); held for a human, who may promote or roll back"
    )
}

/// Everything "what now" looks at.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// Policy's decision at this tick.
    pub decision: &'a Decision,
    /// The analysis window has passed.
    pub window_done: bool,
    /// This agent's lease on the target (none when advising).
    pub role: Option<&'a LeaseRole>,
    /// Acting or advising.
    pub mode: RunMode,
    /// An operator holds the release: judged, never acted on, nobody asked.
    pub held: bool,
    /// The open request for a human: why, and what it proposes.
    pub asking: Option<(&'a str, &'a Proposal)>,
    /// Someone can still answer after the window (an agent's API or Slack);
    /// `watch`, `advise` and `eval` end awaiting approval instead.
    pub answerable: bool,
    /// Ticks in a row, this one included, whose source gave no observation.
    pub failing_ticks: u32,
    /// Why this tick's source failed, if it did.
    pub failure: Option<&'a str>,
    /// Policy's `source.consecutive_failure_limit`: that many, and the release ends held.
    pub failure_limit: u32,
    /// No finding at this tick speaks against the canary (none failing,
    /// suspect, drifted, or an incident).
    pub judge_clear: bool,
    /// The ramp, where there is one.
    pub ramp: RampStep,
    /// The ramp's progress (for the reason a promotion waits).
    pub progress: RampProgress,
}

/// Why a release whose source failed `n` ticks in a row, the last time
/// because of `cause`, is held.
pub fn source_gave_up(n: u32, cause: &str) -> String {
    format!(
        "the signal source failed {n} ticks in a row (policy source.consecutive_failure_limit): {cause}; \
         held for a human, nothing was changed"
    )
}

/// Why a release whose window ended without a decision is held.
pub const WINDOW_ENDED_UNDECIDED: &str = "the analysis window ended without a decision; held for a human";

/// The next move in situation `s`: policy's move, then the ramp's say in it.
pub fn what_now(s: Situation<'_>) -> Next {
    ramped(s, decided(s))
}

/// The ramp's say: a quiet tick whose step is due raises, and a promotion
/// before the last step was judged its time ends held. Nothing else changes.
fn ramped(s: Situation<'_>, next: Next) -> Next {
    let holder = matches!(s.role, Some(LeaseRole::Holder { .. }));
    let quiet = s.mode == RunMode::Act && holder && calm(&s);
    let promoting = *s.decision == Decision::Promote;
    match (next, s.ramp) {
        (Next::Continue, RampStep::Due(w)) if quiet => Next::Raise(w),
        (Next::Act, RampStep::Due(_) | RampStep::Judging) if promoting => {
            Next::Finish(Box::new(ReleaseStatus::Held { reason: ramp_unfinished(s.progress) }))
        }
        (next, RampStep::Off | RampStep::Due(_) | RampStep::Judging | RampStep::Done) => next,
    }
}

/// Nothing at this tick stands in a raise's way but who may act: policy
/// says go on, the judge suspects nothing, the source answered, nobody
/// holds or is asked, and the window is still open.
fn calm(s: &Situation<'_>) -> bool {
    !s.window_done
        && !s.held
        && s.asking.is_none()
        && s.failing_ticks == 0
        && s.judge_clear
        && *s.decision == Decision::Continue
}

/// The raise acting would make at this tick of an advisory run, which
/// raises nothing: the ramp's due step on a calm tick, by the rule of
/// [`what_now`] without the lease (an advisory run holds none). The report
/// shows these, so an approver sees the ramp the agent would walk.
pub fn rehearsed(s: Situation<'_>) -> Option<u8> {
    match s.ramp {
        RampStep::Due(w) if s.mode == RunMode::Advise && calm(&s) => Some(w),
        RampStep::Off | RampStep::Due(_) | RampStep::Judging | RampStep::Done => None,
    }
}

/// Policy's move in situation `s`, before the ramp's say.
fn decided(s: Situation<'_>) -> Next {
    let follower = s.mode == RunMode::Act && matches!(s.role, Some(LeaseRole::Follower { .. }));
    if follower {
        return match s.decision {
            Decision::Continue => Next::Continue,
            Decision::Hold { .. } if !s.window_done => Next::Continue,
            _ => Next::Follow,
        };
    }
    // A dead backend fails fast: no decision can come from it, so the
    // release ends held (the loop reports the cause) rather than wait out the window.
    if s.failing_ticks >= s.failure_limit {
        let reason = source_gave_up(s.failing_ticks, s.failure.unwrap_or("no observation"));
        return Next::Finish(Box::new(ReleaseStatus::Held { reason }));
    }
    let awaiting = |reason: &str, proposed: &Proposal| {
        Next::Finish(Box::new(ReleaseStatus::AwaitingApproval { reason: reason.into(), proposed: proposed.clone() }))
    };
    match s.decision {
        // The window is over and nothing was decided (a judgement that
        // could not finish, say): the release ends held, never loops.
        Decision::Continue if s.window_done && !s.held => match s.asking {
            Some(_) if s.answerable => Next::Continue,
            Some((why, proposed)) => awaiting(why, proposed),
            None => Next::Finish(Box::new(ReleaseStatus::Held { reason: WINDOW_ENDED_UNDECIDED.into() })),
        },
        Decision::Continue if s.asking.is_some() => Next::Withdraw,
        Decision::Continue => Next::Continue,
        Decision::Hold { .. } if !s.window_done => Next::Continue,
        Decision::Hold { reason } => match s.asking {
            Some(_) if s.answerable => Next::Continue,
            Some((why, proposed)) => awaiting(why, proposed),
            None => Next::Finish(Box::new(ReleaseStatus::Held { reason: reason.clone() })),
        },
        Decision::RequireApproval { .. } if s.held => Next::Continue,
        Decision::RequireApproval { reason, proposed } => {
            let same = s.asking.is_some_and(|(_, p)| p.same_action(proposed));
            match (s.window_done && !s.answerable, same) {
                (true, true) => s.asking.map_or(Next::Continue, |(why, p)| awaiting(why, p)),
                (true, false) => awaiting(reason, proposed),
                (false, true) => Next::Continue,
                (false, false) => Next::Ask { reason: reason.clone(), proposed: proposed.clone() },
            }
        }
        Decision::Deny { reason } => Next::Finish(Box::new(ReleaseStatus::Denied { reason: reason.clone() })),
        Decision::Promote | Decision::Rollback { .. } if s.held => Next::Continue,
        Decision::Promote | Decision::Rollback { .. } => Next::Act,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::RollbackPlan;

    fn plan() -> RollbackPlan {
        RollbackPlan { target: "t".into(), from_revision: "v2".into(), to_revision: "v1".into(), reason: "r".into() }
    }

    fn rollback() -> Decision {
        Decision::Rollback { plan: plan() }
    }

    fn ask() -> Decision {
        Decision::RequireApproval { reason: "model".into(), proposed: Proposal::Rollback { plan: plan() } }
    }

    fn at<'a>(decision: &'a Decision, window_done: bool) -> Situation<'a> {
        Situation {
            decision,
            window_done,
            role: None,
            mode: RunMode::Act,
            held: false,
            asking: None,
            answerable: false,
            failing_ticks: 0,
            failure: None,
            failure_limit: 6,
            judge_clear: true,
            ramp: RampStep::Off,
            progress: RampProgress::default(),
        }
    }

    const HOLDER: LeaseRole = LeaseRole::Holder { token: 1 };

    /// A ramp of 5, 25, 50 (then promotion), 300 s a step, at `progress`.
    fn ramp(weight: Option<u8>, judged_s: u64) -> (RampStep, RampProgress) {
        let progress = RampProgress { weight, judged_s };
        (RampStep::of([5, 25, 50], 300, progress), progress)
    }

    fn ramping<'a>(decision: &'a Decision, (step, progress): (RampStep, RampProgress)) -> Situation<'a> {
        Situation { role: Some(&HOLDER), ramp: step, progress, ..at(decision, false) }
    }

    #[test]
    fn where_a_ramp_stands_follows_the_raises_that_took_effect_and_the_time_judged_since() {
        assert_eq!(ramp(None, 0).0, RampStep::Due(5), "the first step is due at once");
        assert_eq!(ramp(Some(5), 299).0, RampStep::Judging);
        assert_eq!(ramp(Some(5), 300).0, RampStep::Due(25));
        assert_eq!(ramp(Some(50), 100).0, RampStep::Judging, "the last step is judged its time too");
        assert_eq!(ramp(Some(50), 300).0, RampStep::Done);
        // A step set by a person between two of the ramp's is followed from there.
        assert_eq!(RampStep::of([5, 25, 50], 300, RampProgress { weight: Some(30), judged_s: 300 }), RampStep::Due(50));
    }

    /// A tick record at `now_s`, observed or not.
    fn tick(now_s: u64, observed: bool) -> Record {
        use crate::judge::{JudgeResult, Verdict};
        let judge = JudgeResult {
            verdict: Verdict::Inconclusive,
            now_s,
            window_complete: false,
            findings: vec![],
            summary: String::new(),
            log_mining: None,
        };
        Record::Tick(Box::new(crate::ledger::TickRecord {
            tick: now_s / 10,
            now_s,
            mode: RunMode::Act,
            inputs_digest: if observed { "d".into() } else { super::super::NO_OBSERVATION.into() },
            judge,
            model: crate::policy::ModelInput::NotConfigured,
            consultation: None,
            prompt_version: None,
            tool_calls: vec![],
            decision: Decision::Continue,
            rules: vec![],
            lease: None,
            rehearsed_raise: None,
        }))
    }

    /// A raise to `weight` and its outcome, verified or failed.
    fn raised(weight: u8, took: bool) -> [Record; 2] {
        use crate::executor::ActionPlan;
        use crate::ledger::{ActionResult, IntentRecord, OutcomeRecord};
        let plan = ActionPlan::new(ActionKind::Raise { weight }, "t", "v2", 0, vec![]);
        let result = if took {
            ActionResult::Verified { output: String::new(), observed: String::new() }
        } else {
            ActionResult::Failed { error: "refused".into() }
        };
        let outcome = OutcomeRecord { plan_id: plan.id.clone(), result };
        [Record::Intent(IntentRecord { plan, fence: Some(1) }), Record::Outcome(outcome)]
    }

    #[test]
    fn the_ramp_history_counts_judged_time_once_across_interleaved_agents_and_only_raises_that_took() {
        // Two agents tick the same release 5 s apart; one tick had no observation.
        let mut records = vec![tick(10, true), tick(5, true), tick(20, true), tick(15, true)];
        records.extend(raised(5, true));
        records.extend([tick(30, false), tick(25, true), tick(40, true), tick(35, true)]);
        assert_eq!(ramp_history(&records).progress, RampProgress { weight: Some(5), judged_s: 10 });
        records.extend(raised(25, false));
        records.push(tick(50, true));
        assert_eq!(
            ramp_history(&records).progress,
            RampProgress { weight: Some(5), judged_s: 20 },
            "a failed raise moves nothing"
        );
        assert_eq!(
            ramp_history(&records).raises,
            vec![RampRaise { weight: 5, at_s: 20 }],
            "the raise that took, at the latest tick before it"
        );
    }

    #[test]
    fn an_advisory_runs_rehearsals_are_read_back_from_its_tick_records() {
        let rehearsing = |now_s, weight| {
            let mut t = tick(now_s, true);
            if let Record::Tick(r) = &mut t {
                (r.mode, r.rehearsed_raise) = (RunMode::Advise, weight);
            }
            t
        };
        let records = [rehearsing(10, Some(5)), rehearsing(20, None), rehearsing(30, Some(25)), rehearsing(40, None)];
        let trace = ramp_history(&records);
        assert_eq!(trace.raises, vec![RampRaise { weight: 5, at_s: 10 }, RampRaise { weight: 25, at_s: 30 }]);
        assert_eq!(trace.progress, RampProgress { weight: Some(25), judged_s: 10 }, "judged since the last");
    }

    #[test]
    fn an_advisory_run_rehearses_the_raises_acting_would_make_and_makes_none() {
        let go_on = Decision::Continue;
        let advising = |(step, progress)| Situation {
            mode: RunMode::Advise,
            role: None,
            ramp: step,
            progress,
            ..at(&go_on, false)
        };
        let due = advising(ramp(Some(5), 300));
        assert_eq!(what_now(due), Next::Continue, "advising raises nothing");
        assert_eq!(rehearsed(due), Some(25));
        assert_eq!(rehearsed(advising(ramp(None, 0))), Some(5), "the first step at once");
        assert_eq!(rehearsed(advising(ramp(Some(5), 10))), None, "not judged its time yet");
        assert_eq!(rehearsed(advising(ramp(Some(50), 300))), None, "the last step below 100 reached");
        let hold = Decision::Hold { reason: "thin".into() };
        let (why, proposed) = ("model", Proposal::Rollback { plan: plan() });
        let not_calm = [
            ("the judge suspects a metric", Situation { judge_clear: false, ..due }),
            ("the source failed this tick", Situation { failing_ticks: 1, failure: Some("refused"), ..due }),
            ("an operator holds", Situation { held: true, ..due }),
            ("a person is asked", Situation { asking: Some((why, &proposed)), ..due }),
            ("policy holds", Situation { decision: &hold, ..due }),
            ("the window is over", Situation { window_done: true, ..due }),
        ];
        for (why, s) in not_calm {
            assert_eq!(rehearsed(s), None, "{why}");
        }
        let acting = ramping(&go_on, ramp(Some(5), 300));
        assert_eq!((what_now(acting), rehearsed(acting)), (Next::Raise(25), None), "acting raises for real");
    }

    #[test]
    fn a_due_step_is_raised_only_on_a_quiet_tick() {
        let go_on = Decision::Continue;
        assert_eq!(what_now(ramping(&go_on, ramp(Some(5), 300))), Next::Raise(25));
        assert_eq!(what_now(ramping(&go_on, ramp(Some(5), 10))), Next::Continue, "not judged its time yet");
        let hold = Decision::Hold { reason: "thin".into() };
        let (why, proposed) = ("model", Proposal::Rollback { plan: plan() });
        let follower = LeaseRole::Follower { holder: "b".into(), token: 2 };
        let due = ramping(&go_on, ramp(Some(5), 300));
        let not_quiet = [
            ("the judge suspects a metric", Situation { judge_clear: false, ..due }),
            ("the source failed this tick", Situation { failing_ticks: 1, failure: Some("refused"), ..due }),
            ("an operator holds", Situation { held: true, ..due }),
            ("a person is asked", Situation { asking: Some((why, &proposed)), ..due }),
            ("another agent holds the lease", Situation { role: Some(&follower), ..due }),
            ("no lease", Situation { role: None, ..due }),
            ("advising", Situation { mode: RunMode::Advise, ..due }),
            ("policy holds", Situation { decision: &hold, ..due }),
        ];
        for (why, s) in not_quiet {
            assert!(!matches!(what_now(s), Next::Raise(_)), "{why}: {:?}", what_now(s));
        }
    }

    #[test]
    fn a_rollback_comes_from_any_step_and_a_promotion_only_after_the_last_was_judged() {
        let r = rollback();
        for progress in [ramp(None, 0), ramp(Some(5), 10), ramp(Some(25), 400), ramp(Some(50), 300)] {
            assert_eq!(what_now(ramping(&r, progress)), Next::Act, "{progress:?}");
        }
        let p = Decision::Promote;
        let done = Situation { window_done: true, ..ramping(&p, ramp(Some(50), 300)) };
        assert_eq!(what_now(done), Next::Act);
        for progress in [ramp(Some(25), 900), ramp(Some(50), 200)] {
            let early = Situation { window_done: true, ..ramping(&p, progress) };
            let ended = what_now(early);
            assert!(
                matches!(&ended, Next::Finish(s) if matches!(&**s, ReleaseStatus::Held { reason } if reason.contains("ramp"))),
                "{ended:?}"
            );
        }
    }

    #[test]
    fn a_source_failing_the_limit_of_ticks_in_a_row_ends_the_release_held() {
        let hold = Decision::Hold { reason: "no data".into() };
        assert_eq!(what_now(Situation { failing_ticks: 5, ..at(&hold, false) }), Next::Continue);
        let ended = what_now(Situation { failing_ticks: 6, failure: Some("refused"), ..at(&hold, false) });
        assert_eq!(ended, Next::Finish(Box::new(ReleaseStatus::Held { reason: source_gave_up(6, "refused") })));
        assert!(source_gave_up(6, "refused").contains("refused"), "the cause is named");
        // Asking, held by an operator, or answerable: a dead source still ends the release.
        let a = ask();
        let asking = Some(("model", &Proposal::Rollback { plan: plan() }));
        let open = Situation { failing_ticks: 6, asking, held: true, answerable: true, ..at(&a, false) };
        assert!(matches!(what_now(open), Next::Finish(s) if matches!(*s, ReleaseStatus::Held { .. })));
        // A follower leaves the ending to the lease holder.
        let follower = LeaseRole::Follower { holder: "b".into(), token: 1 };
        let f = Situation { failing_ticks: 9, role: Some(&follower), ..at(&hold, false) };
        assert_eq!(what_now(f), Next::Continue);
    }

    #[test]
    fn only_the_holder_acts() {
        let holder = LeaseRole::Holder { token: 3 };
        let observer = LeaseRole::Follower { holder: "other".into(), token: 3 };
        let d = rollback();
        assert_eq!(what_now(Situation { role: Some(&holder), ..at(&d, false) }), Next::Act);
        assert_eq!(what_now(Situation { role: Some(&observer), ..at(&d, false) }), Next::Follow);
        let p = Decision::Promote;
        assert_eq!(what_now(Situation { role: Some(&observer), ..at(&p, true) }), Next::Follow);
        let a = ask();
        assert_eq!(what_now(Situation { role: Some(&observer), ..at(&a, false) }), Next::Follow, "followers never ask");
    }

    #[test]
    fn a_hold_ends_the_release_only_when_the_window_has_passed() {
        let hold = Decision::Hold { reason: "no data".into() };
        let advise = |done| Situation { mode: RunMode::Advise, ..at(&hold, done) };
        assert_eq!(what_now(advise(false)), Next::Continue);
        assert!(matches!(what_now(advise(true)), Next::Finish(s) if matches!(*s, ReleaseStatus::Held { .. })));
    }

    #[test]
    fn advising_plans_without_a_lease() {
        let d = rollback();
        assert_eq!(what_now(Situation { mode: RunMode::Advise, ..at(&d, false) }), Next::Act);
        let c = Decision::Continue;
        assert_eq!(what_now(Situation { mode: RunMode::Advise, ..at(&c, false) }), Next::Continue);
    }

    /// The audit's I4 ended in a loop at the window's end: every judgement
    /// overran, so policy kept saying `continue`. The window always ends.
    #[test]
    fn a_window_that_ends_undecided_ends_held() {
        let c = Decision::Continue;
        let end = what_now(at(&c, true));
        assert!(matches!(&end, Next::Finish(s) if matches!(**s, ReleaseStatus::Held { .. })), "{end:?}");
    }

    /// The one guarantee of the model path: asking a human never stops the
    /// judge's own action. Asked mid-window, the release keeps going; the
    /// judge's rollback then acts (the loop closes the request as superseded).
    #[test]
    fn asking_never_delays_the_judges_own_rollback() {
        let a = ask();
        assert!(matches!(what_now(at(&a, false)), Next::Ask { .. }));
        let (why, proposed) = ("model", Proposal::Rollback { plan: plan() });
        let asking = Some((why, &proposed));
        assert_eq!(what_now(Situation { asking, ..at(&a, false) }), Next::Continue, "asked once, then judged on");
        let r = rollback();
        assert_eq!(what_now(Situation { asking, ..at(&r, false) }), Next::Act);
        let p = Decision::Promote;
        assert_eq!(what_now(Situation { asking, ..at(&p, true) }), Next::Act);
    }

    #[test]
    fn a_window_that_ends_asking_ends_awaiting_unless_someone_can_still_answer() {
        let (why, proposed) = ("model", Proposal::Rollback { plan: plan() });
        let asking = Some((why, &proposed));
        for d in [ask(), Decision::Hold { reason: "thin".into() }] {
            let ended = what_now(Situation { asking, ..at(&d, true) });
            assert!(
                matches!(&ended, Next::Finish(s) if matches!(**s, ReleaseStatus::AwaitingApproval { .. })),
                "{ended:?}"
            );
            assert_eq!(what_now(Situation { asking, answerable: true, ..at(&d, true) }), Next::Continue);
        }
        let a = ask();
        let first = what_now(at(&a, true));
        assert!(matches!(&first, Next::Finish(s) if matches!(**s, ReleaseStatus::AwaitingApproval { .. })));
        assert!(matches!(what_now(Situation { answerable: true, ..at(&a, true) }), Next::Ask { .. }));
    }

    #[test]
    fn a_recovered_canary_withdraws_the_request_and_another_proposal_replaces_it() {
        let (why, proposed) = ("model", Proposal::Rollback { plan: plan() });
        let asking = Some((why, &proposed));
        let c = Decision::Continue;
        assert_eq!(what_now(Situation { asking, ..at(&c, false) }), Next::Withdraw);
        let other = Decision::RequireApproval { reason: "rate".into(), proposed: Proposal::Promote };
        assert!(matches!(what_now(Situation { asking, ..at(&other, false) }), Next::Ask { .. }));
    }

    #[test]
    fn a_held_release_never_acts_nor_asks() {
        for d in [rollback(), Decision::Promote, ask()] {
            assert_eq!(what_now(Situation { held: true, ..at(&d, false) }), Next::Continue, "{d:?}");
            assert_eq!(what_now(Situation { held: true, ..at(&d, true) }), Next::Continue, "{d:?}");
        }
    }
}
