//! The orchestrator: the one place that runs the loop — observe, judge,
//! decide, record, act, verify — and the only code that calls an executor.
//!
//! The loop is a short async shell: each tick's judgement and decision are
//! values ([`step::what_now`] turns them into the next move), and every
//! effect — a ledger write, an action — happens here. A release continues
//! where its ledger left it: after a crash, open intents on its target are
//! reconciled against the target's real state before anything else
//! ([`recover`]), and with several agents only the holder of the target's
//! lease acts (fenced by the lease's token).

mod act;
mod admit;
mod deadline;
pub mod fleet;
pub mod human;
mod memory;
mod recover;
pub mod recorded;
pub mod seat;
mod standby;
pub mod step;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::assessor::{Assessor, Consultation, Deliberation, Timing, Usage};
use crate::clock::Clock;
use crate::digest::digest;
use crate::executor::{ActionKind, ActionPlan, Guarded, Planner};
use crate::judge::{JudgeResult, Verdict, judge_with};
use crate::ledger::{
    ActionResult, Actor, Append, ApprovalOps, LeaseOp, LeaseRole, Ledger, LedgerError, Record, ReleaseFinished,
    ReleasePaused, ReleaseStarted, TickRecord,
};
use crate::policy::approval::Closure;
use crate::policy::{
    Decision, History, ModelInput, PolicyFile, PolicyInput, PolicyOutcome, ReleaseFacts, RunMode, evaluate,
};
use crate::signals::{Observation, SignalSource};
use crate::telemetry;

use deadline::{Deadlined, JUDGE_DEADLINE, overrun_result};
use human::{Asking, Controls, OperatorState};
use step::{Next, Situation, what_now};
pub use step::{RampProgress, RampRaise, RampStep, RampTrace};

/// How long a release with an open request waits before looking in the
/// ledger for answers relayed by other agents and closures written by them.
const RELAY_POLL: Duration = Duration::from_millis(500);

/// What ended a wait between ticks.
enum Woke {
    /// Time for the next tick (or a stop signal).
    Tick,
    /// An answer to take.
    Answer(Box<human::HumanAnswer>),
    /// An operator held, resumed or aborted the release.
    Operator,
    /// Anything else worth a look (a rollback request, the relay poll).
    Other,
}

/// An operator's abort, as the release's end.
fn aborted() -> ReleaseStatus {
    ReleaseStatus::Aborted { reason: "aborted by an operator (see the ledger's operator record)".into() }
}

/// What may act on the target. An advisory run holds only a [`Planner`], so
/// it has nothing that could execute.
pub enum Actuation {
    /// Dry run / advise: plans are shown, never executed.
    Advisory(Arc<dyn Planner>),
    /// Acting run: the executor for the one declared target.
    Live(Guarded),
}

impl Actuation {
    /// What plans actions, in either mode.
    fn planner(&self) -> &dyn crate::executor::Planner {
        match self {
            Actuation::Advisory(p) => p.as_ref(),
            Actuation::Live(e) => e,
        }
    }

    fn mode(&self) -> RunMode {
        match self {
            Actuation::Advisory(_) => RunMode::Advise,
            Actuation::Live(_) => RunMode::Act,
        }
    }
}

pub use crate::release::ReleaseStatus;

/// One tick, as shown to a live display.
pub struct TickReport<'a> {
    /// Tick number from 1.
    pub tick: u64,
    /// Release clock, seconds.
    pub now_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// The judge's result.
    pub judge: &'a JudgeResult,
    /// Policy's decision and trace.
    pub outcome: &'a PolicyOutcome,
    /// Ledger sequence number of the tick record.
    pub seq: i64,
    /// Real time the tick took (observe, judge, decide, record).
    pub took: Duration,
    /// Real time it had: the pace between ticks (zero when replaying flat out).
    pub budget: Duration,
    /// The model's consultation at this tick, when it was asked.
    pub consultation: Option<&'a Consultation>,
    /// The series as last observed (kept by the agent for its charts; shared, not copied).
    pub observation: Option<&'a Arc<Observation>>,
}

/// Receives progress (a terminal display, plain log lines, or nothing).
pub trait Observer: Send {
    /// After each tick is recorded.
    fn on_tick(&mut self, _tick: &TickReport<'_>) {}
    /// Before an action runs (the intent is recorded).
    fn on_intent(&mut self, _plan: &ActionPlan) {}
    /// After an action ran (and was verified, or not).
    fn on_outcome(&mut self, _plan: &ActionPlan, _result: &ActionResult) {}
    /// A request for a human was recorded (`Some`), or closed (`None`).
    fn on_approval(&mut self, _request: Option<&crate::ledger::ApprovalRequested>) {}
    /// Another agent holds the release, or this one waits its turn to claim it.
    fn on_standby(&mut self, _waiting: &seat::Waiting) {}
}

/// A no-op observer.
pub struct Quiet;
impl Observer for Quiet {}

/// How this run came to its end.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Conclusion {
    /// This run decided.
    ThisRun,
    /// The release had already finished before this run started; nothing was judged again.
    AlreadyFinished,
    /// Another agent held the target's lease and finished the release.
    OtherAgent,
    /// An action recorded before a crash was reconciled against the target on restart.
    Recovered,
}

/// What `run` returns.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Release id in the ledger.
    pub release_id: String,
    /// How it ended.
    pub status: ReleaseStatus,
    /// Who reached the end.
    pub conclusion: Conclusion,
    /// Ticks judged (in all runs of this release).
    pub ticks: u64,
    /// Release time of the final decision, seconds.
    pub decided_at_s: u64,
    /// Judge result at the final tick.
    pub final_judge: Option<JudgeResult>,
    /// Rules that produced the final decision.
    pub final_rules: Vec<crate::policy::RuleHit>,
    /// The signal source's error at the final tick, if it failed.
    pub signal_failure: Option<String>,
    /// The last observation, for reports and charts.
    pub last_observation: Option<Observation>,
    /// The latest consultation of the model, if one happened.
    pub consultation: Option<Consultation>,
    /// Model calls and tokens spent on this release.
    pub model_usage: Usage,
    /// A model is configured for this run.
    pub model_configured: bool,
    /// The ramp's raises and where it stood at the end (an advisory run's:
    /// those acting would have made); `None` where this run did not follow
    /// the release to its end (another agent ended it: `backstop audit` has them).
    pub ramp: Option<RampTrace>,
}

/// This process as an agent: its identity, lease length and clock.
#[derive(Clone)]
pub struct AgentContext {
    /// Instance id, unique among agents sharing a ledger.
    pub instance: String,
    /// How long a lease lasts without renewal, ms.
    pub lease_ms: i64,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// This agent's share of the work when several agents share the ledger
    /// (`backstop agent`); `None`: a lone run claims its target whenever free.
    pub seats: Option<Arc<seat::Seats>>,
}

impl AgentContext {
    /// This process as configured (`[agent]`), on `clock`.
    pub fn new(settings: &crate::config::AgentSettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            instance: settings.instance_id.clone().unwrap_or_else(Self::default_instance),
            lease_ms: (settings.lease_s * 1000.0) as i64,
            clock,
            seats: None,
        }
    }

    /// The actor this agent writes as.
    pub fn actor(&self) -> Actor {
        Actor::agent(&self.instance)
    }

    /// A fresh instance id: host, process and a random suffix, so two
    /// processes on one host never share one.
    pub fn default_instance() -> String {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
        let host = if host.is_empty() { "host".to_string() } else { host };
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
        format!("{host}-{}-{suffix}", std::process::id())
    }
}

/// One release to run.
#[derive(Clone)]
pub struct ReleaseRun<'a> {
    /// Facts for policy.
    pub facts: ReleaseFacts,
    /// What the target's lease is named by: the resource the executor
    /// changes where it is known (so agents whose configurations call one
    /// HAProxy backend by different target names still exclude each other),
    /// else the target. See [`crate::run::prepare::PreparedRelease::lease`].
    pub lease: String,
    /// Seconds of release time between ticks.
    pub tick_s: u64,
    /// Length of the analysis window, seconds.
    pub duration_s: u64,
    /// The stepwise traffic ramp this run drives, if any.
    pub ramp: Option<crate::release::RampConfig>,
    /// Real time to wait between ticks (an accelerated clock for demos, the tick itself live).
    pub pace: Duration,
    /// The policy.
    pub policy: &'a PolicyFile,
    /// The ledger.
    pub ledger: &'a Ledger,
    /// Flips to `true` to stop between ticks (SIGINT/SIGTERM).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The model, when one is configured; consulted at decision points only.
    pub model: Option<Arc<Assessor>>,
    /// Who runs it, and their clock.
    pub agent: AgentContext,
    /// Operator holds and approval answers, when a service runs the release;
    /// without them a request for a human ends the run (`watch` exits 11 or 12).
    pub controls: Option<&'a Controls>,
    /// Time 0 of the canary's samples (ms since the epoch) when this run reads
    /// them from elsewhere than the release's first start (`run::resume`);
    /// recorded in its `release_started`, so a later restart reads from there too.
    pub canary_from_ms: Option<i64>,
}

/// The loop's state between ticks.
struct LoopState {
    tick: u64,
    now_s: u64,
    model: Deliberation,
    last_obs: Option<Arc<Observation>>,
    judge: Deadlined,
    /// Open intents on the target were reconciled while holding the current lease.
    recovered: bool,
    role: Option<LeaseRole>,
    /// A request for a human, open while the release goes on being judged.
    asking: Option<Asking>,
    /// Ticks in a row whose source gave no observation.
    failing_ticks: u32,
    /// The judge's verdict at the last tick (a person's promotion is refused on `fail`).
    last_verdict: Option<crate::judge::Verdict>,
    /// The candidate's quarantine as last read from the ledger.
    quarantine: Option<crate::policy::memory::Quarantine>,
    /// The failing findings of the last tick, one line each (a condemnation's evidence).
    failing: Vec<String>,
    /// Where the ramp stands and its raises (unused without one; advising,
    /// where acting would have it and the raises it would have made).
    ramp: RampTrace,
    /// Release seconds the last tick moved the clock on.
    advanced_s: u64,
    /// Counted among this agent's held releases while it holds the lease.
    seat: Option<seat::Seat>,
}

/// One judged and recorded tick.
struct Judged {
    judged: JudgeResult,
    outcome: PolicyOutcome,
    consultation: Option<Consultation>,
    failure: Option<String>,
    /// Advising: the raise acting would have made at this tick (recorded with it).
    rehearsed: Option<u8>,
    seq: i64,
}

fn failed_observation_result(now_s: u64, reason: &str) -> JudgeResult {
    JudgeResult::without_findings(Verdict::Inconclusive, now_s, format!("no observation: {reason}"))
}

/// Where a release stands in the ledger before this run.
struct Prior {
    finished: Option<ReleaseFinished>,
    tick: u64,
    now_s: u64,
    /// An action of this release known to have taken effect (its status),
    /// even if the run stopped before recording the release's end.
    effected: Option<ReleaseStatus>,
    /// That action's plan.
    effected_plan: Option<ActionPlan>,
    /// Where the ramp stood, and its raises.
    ramp: RampTrace,
}

impl ReleaseRun<'_> {
    /// Run the release until a terminal decision, recording everything.
    pub async fn run(
        &self,
        source: &dyn SignalSource,
        actuation: &Actuation,
        observer: &mut dyn Observer,
    ) -> Result<RunOutcome, LedgerError> {
        let f = &self.facts;
        let span = info_span!(telemetry::SPAN_RELEASE, release = %f.release_id, service = %f.service);
        self.run_inner(source, actuation, observer).instrument(span).await
    }

    async fn run_inner(
        &self,
        source: &dyn SignalSource,
        actuation: &Actuation,
        observer: &mut dyn Observer,
    ) -> Result<RunOutcome, LedgerError> {
        let prior = self.prior().await?;
        if let Some(done) = prior.finished.clone().filter(|d| d.status.is_final()) {
            return Ok(self.recorded(done, Conclusion::AlreadyFinished));
        }
        if let Some(status) = prior.effected.clone() {
            return self.close_effected(&prior, status).await;
        }
        let continued = (prior.tick > 0).then_some(prior.now_s);
        let facts = match self.recall().await? {
            Ok(facts) => facts,
            Err(why) => {
                return self.deny_at_start(self.started(source, actuation.mode(), continued)?, why.to_string()).await;
            }
        };
        ReleaseRun { facts, ..self.clone() }.begin(&prior, source, actuation, observer).await
    }

    /// Start (or continue) the release with the facts it runs with, and judge it to its end.
    async fn begin(
        &self,
        prior: &Prior,
        source: &dyn SignalSource,
        actuation: &Actuation,
        observer: &mut dyn Observer,
    ) -> Result<RunOutcome, LedgerError> {
        let continued = (prior.tick > 0).then_some(prior.now_s);
        let started = self.started(source, actuation.mode(), continued)?;
        if let Some(refused) = self.admit(started, actuation.mode(), continued.is_some()).await? {
            return Ok(refused);
        }
        let mut st = LoopState::at(self, prior.tick, prior.now_s);
        st.ramp = prior.ramp.clone();
        st.model = Deliberation::new(self.model.clone(), self.model_timing());
        self.ticks(source, actuation, observer, &mut st).await
    }

    async fn ticks(
        &self,
        source: &dyn SignalSource,
        actuation: &Actuation,
        observer: &mut dyn Observer,
        st: &mut LoopState,
    ) -> Result<RunOutcome, LedgerError> {
        let mut stop = self.stop.clone();
        loop {
            if stop.as_ref().is_some_and(|s| *s.borrow()) {
                return self.finish(st, ReleaseStatus::Interrupted, None).await;
            }
            if self.operator_state() == OperatorState::Aborted {
                return self.finish(st, aborted(), None).await;
            }
            if let Actuation::Live(executor) = actuation
                && !matches!(st.role, Some(LeaseRole::Holder { .. }))
                && let Some(done) = self.stand_by(executor, st, observer).await?
            {
                return Ok(done);
            }
            let was = st.now_s;
            st.now_s = (st.now_s + self.tick_s.max(1)).min(self.duration_s);
            st.advanced_s = st.now_s - was;
            st.tick += 1;
            let t = self.observed_tick(source, actuation, st, observer).await?;
            if let Some(done) = self.settled(actuation, st).await? {
                return done;
            }
            if let Some(status) = self.carry_out(&t, actuation, st, observer).await? {
                return self.finish(st, status, Some(t)).await;
            }
            self.maybe_shed(&t, st).await?;
            if let Some(status) = self.between_ticks(&mut stop, (source, actuation), st, observer).await? {
                return self.finish(st, status, Some(t)).await;
            }
        }
    }

    /// Carry out what "what now" says of tick `t`. `Some`: the release ends.
    async fn carry_out(
        &self,
        t: &Judged,
        actuation: &Actuation,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let decision = &t.outcome.decision;
        let situation = self.situation((decision, &t.judged, t.failure.as_deref()), actuation, st);
        let next = what_now(situation);
        // As the tick's record says (the same rule, read before it was written).
        if let Some(weight) = t.rehearsed {
            st.ramp.raised(weight, st.now_s);
        }
        match next {
            Next::Continue | Next::Follow => Ok(None),
            Next::Raise(weight) => self.raise(weight, actuation, st, observer).await,
            Next::Withdraw => {
                let why = format!("the canary no longer calls for it: judged again, policy says {}", decision.label());
                self.withdraw(st, why, observer).await.map(|()| None)
            }
            Next::Ask { reason, proposed } => {
                self.ask((reason, proposed), t, actuation, st, observer).await.map(|()| None)
            }
            Next::Finish(status) => Ok(Some(*status)),
            Next::Act => {
                // The judge acts as if nobody had been asked; an open request closes as superseded.
                let closes = st.asking.take().and_then(|a| a.request).map(|_| human::judge_closure(decision));
                if closes.is_some() {
                    observer.on_approval(None);
                }
                self.act(decision, actuation, st, observer, closes).await
            }
        }
    }

    /// Wait for the next tick, taking meanwhile people's rollback requests,
    /// answers to an open request and an operator's abort (`Some`: the
    /// release ends with this status).
    async fn between_ticks(
        &self,
        stop: &mut Option<tokio::sync::watch::Receiver<bool>>,
        ctx: (&dyn SignalSource, &Actuation),
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Option<ReleaseStatus>, LedgerError> {
        let until = tokio::time::Instant::now() + self.pace_for(st.role.as_ref());
        let mut operator = self.controls.map(|c| c.operator.clone());
        loop {
            if let Some(status) = self.asked_by_person(ctx.1, st, observer).await? {
                return Ok(Some(status));
            }
            if let Some(status) = self.tend_request(ctx, st, observer).await? {
                return Ok(Some(status));
            }
            let asking = st.asking.as_ref().is_some_and(|a| a.request.is_some());
            let poll = if asking { RELAY_POLL } else { Duration::from_secs(3600) };
            let woke = self.wait_a_while((until, poll), stop, operator.as_mut()).await;
            match woke {
                Woke::Tick => return Ok(None),
                Woke::Answer(a) => {
                    if let Some(status) = self.answered(*a, ctx, st, observer).await? {
                        return Ok(Some(status));
                    }
                }
                Woke::Operator if self.operator_state() == OperatorState::Aborted => return Ok(Some(aborted())),
                // A hold closed the open request in its own transaction (read back at the next look).
                Woke::Operator | Woke::Other => {}
            }
        }
    }

    /// Sleep until `until`, a stop, a wake (a rollback request), an answer,
    /// an operator's change, or `poll` — whichever comes first.
    async fn wait_a_while(
        &self,
        (until, poll): (tokio::time::Instant, Duration),
        stop: &mut Option<tokio::sync::watch::Receiver<bool>>,
        operator: Option<&mut tokio::sync::watch::Receiver<OperatorState>>,
    ) -> Woke {
        let wake = async {
            match self.controls {
                Some(c) => c.wake.notified().await,
                None => std::future::pending().await,
            }
        };
        // Receiving is cancel-safe: an answer not taken here stays queued.
        let answer = async {
            match self.controls {
                Some(c) => match c.answers.lock().await.recv().await {
                    Some(a) => a,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let changed = async {
            match operator {
                Some(o) => {
                    if o.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        let stopping = async {
            match stop.as_mut() {
                Some(s) => {
                    let _ = s.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(until) => Woke::Tick,
            // Woken early by a stop signal; the check at the top of the loop ends the run.
            _ = stopping => Woke::Tick,
            _ = tokio::time::sleep(poll) => Woke::Other,
            _ = wake => Woke::Other,
            a = answer => Woke::Answer(Box::new(a)),
            _ = changed => Woke::Operator,
        }
    }

    /// After a tick: has the release been settled — by another agent (this one
    /// only follows), or, now that this agent has just become the holder, by
    /// an earlier holder or a crash recovery?
    async fn settled(
        &self,
        actuation: &Actuation,
        st: &mut LoopState,
    ) -> Result<Option<Result<RunOutcome, LedgerError>>, LedgerError> {
        match (&st.role, actuation) {
            (Some(LeaseRole::Holder { .. }), Actuation::Live(executor)) if !st.recovered => {
                Ok(self.on_acquire(executor, st).await.transpose())
            }
            (Some(LeaseRole::Follower { .. }), _) => {
                st.recovered = false;
                let done = self.ledger.finished(&self.facts.release_id).await?.filter(|d| d.status.is_final());
                Ok(done.map(|d| Ok(self.recorded(d, Conclusion::OtherAgent))))
            }
            _ => Ok(None),
        }
    }

    /// This agent has just taken the target's lease: before judging or acting,
    /// read what earlier holders did with the release — finished it, or ran
    /// its action and stopped before recording the end — and reconcile any
    /// intent on the target left without an outcome.
    async fn on_acquire(&self, executor: &Guarded, st: &mut LoopState) -> Result<Option<RunOutcome>, LedgerError> {
        let prior = self.prior().await?;
        if let Some(done) = prior.finished.clone().filter(|d| d.status.is_final()) {
            st.recovered = true;
            self.release_lease(st).await?;
            return Ok(Some(self.recorded(done, Conclusion::OtherAgent)));
        }
        if let Some(status) = prior.effected.clone() {
            st.recovered = true;
            return self.close_effected(&prior, status).await.map(Some);
        }
        // The ramp and the clock as the ledger has them: an agent taking over
        // never raises to a step an earlier holder already passed, and writes
        // the tick after the last one recorded (one record per tick, whoever writes it).
        st.ramp = prior.ramp.clone();
        (st.tick, st.now_s) = (prior.tick, prior.now_s);
        match self.recover_if_holder(executor, st).await? {
            Some(status) => self.finish(st, status, None).await.map(recovered).map(Some),
            None => Ok(None),
        }
    }

    async fn release_lease(&self, st: &LoopState) -> Result<(), LedgerError> {
        if !matches!(st.role, Some(LeaseRole::Holder { .. })) {
            return Ok(());
        }
        let append = self.append(None, Some(self.release_op()));
        self.ledger.submit(append).await?;
        Ok(())
    }

    /// Time between ticks. A follower waits at least a slice of the lease,
    /// so a replay at full speed does not spin while another agent acts.
    /// Ticks at least a tick apart in real time let a late answer from the
    /// model be taken at a later tick; faster ones simulate release time.
    fn model_timing(&self) -> Timing {
        if self.tick_s > 0 && self.pace >= Duration::from_secs(self.tick_s) {
            Timing::RealTime { tick_s: self.tick_s }
        } else {
            Timing::Simulated
        }
    }

    /// What the step rules see of a tick whose policy said `decision` after
    /// the judge's `judged` (and the source's `failure`, if it failed).
    fn situation<'a>(
        &self,
        (decision, judged, failure): (&'a Decision, &JudgeResult, Option<&'a str>),
        actuation: &Actuation,
        st: &'a LoopState,
    ) -> Situation<'a> {
        Situation {
            decision,
            window_done: st.now_s >= self.duration_s,
            role: st.role.as_ref(),
            mode: actuation.mode(),
            // Held or aborted (an abort may arrive during the tick): no action starts, nobody is asked.
            held: self.operator_state() != OperatorState::Running,
            asking: st.asking.as_ref().map(|a| (a.reason.as_str(), &a.proposed)),
            answerable: self.answerable(actuation),
            failing_ticks: st.failing_ticks,
            failure,
            failure_limit: self.policy.source.consecutive_failure_limit,
            judge_clear: judged.findings.iter().all(|f| f.status.is_clear()),
            ramp: self.ramp_step(actuation, st.ramp.progress),
            progress: st.ramp.progress,
        }
    }

    /// The raise acting would make at this tick of an advisory run
    /// ([`step::rehearsed`]); `None` when acting.
    fn rehearse(
        &self,
        seen: (&Decision, &JudgeResult, Option<&str>),
        actuation: &Actuation,
        st: &LoopState,
    ) -> Option<u8> {
        let situation = self.situation(seen, actuation, st);
        step::rehearsed(Situation { ramp: self.ramp_at(st.ramp.progress), ..situation })
    }

    /// What the ramp allows at `progress` (nothing when advising: an
    /// advisory run changes no traffic).
    fn ramp_step(&self, actuation: &Actuation, progress: RampProgress) -> RampStep {
        match actuation {
            Actuation::Live(_) => self.ramp_at(progress),
            Actuation::Advisory(_) => RampStep::Off,
        }
    }

    /// Where the ramp stands at `progress`, whatever the mode (advising:
    /// where acting would have it, for [`step::rehearsed`]).
    fn ramp_at(&self, progress: RampProgress) -> RampStep {
        self.ramp.as_ref().map_or(RampStep::Off, |r| RampStep::of(r.raises(), r.min_judged_s, progress))
    }

    fn pace_for(&self, role: Option<&LeaseRole>) -> Duration {
        match role {
            Some(LeaseRole::Follower { .. }) => {
                self.pace.max(Duration::from_millis((self.agent.lease_ms / 4).max(20) as u64))
            }
            _ => self.pace,
        }
    }

    async fn prior(&self) -> Result<Prior, LedgerError> {
        let mut prior = Prior {
            finished: None,
            tick: 0,
            now_s: 0,
            effected: None,
            effected_plan: None,
            ramp: RampTrace::default(),
        };
        let mut plans = std::collections::HashMap::new();
        let records: Vec<Record> =
            self.ledger.release_records(&self.facts.release_id).await?.into_iter().map(|(_, r)| r).collect();
        prior.ramp = step::ramp_history(&records);
        for rec in records {
            match rec {
                Record::Tick(t) => (prior.tick, prior.now_s) = (t.tick, t.now_s),
                Record::ReleaseFinished(f) => prior.finished = Some(f),
                Record::Intent(i) => {
                    plans.insert(i.plan.id.clone(), i.plan);
                }
                Record::Outcome(o) if o.result.took_effect() => match plans.get(&o.plan_id) {
                    Some(ActionPlan { kind: ActionKind::Raise { .. }, .. }) | None => {}
                    Some(plan) => {
                        prior.effected = act::status_of(plan.kind, &o.plan_id, &o.result);
                        prior.effected_plan = Some(plan.clone());
                    }
                },
                _ => {}
            }
        }
        Ok(prior)
    }

    /// The release's action took effect but its end was never recorded (a
    /// crash right after the outcome, or a human resolving it): record the end
    /// now and judge nothing again.
    async fn close_effected(&self, prior: &Prior, status: ReleaseStatus) -> Result<RunOutcome, LedgerError> {
        // The run may have stopped before remembering what the action left running.
        if let Some(plan) = &prior.effected_plan {
            self.verified(plan).await?;
        }
        let end = ReleaseFinished {
            status,
            ticks: prior.tick,
            decided_at_s: prior.now_s,
            model_usage: prior.finished.as_ref().map(|f| f.model_usage).unwrap_or_default(),
        };
        let append = self.append(Some(Record::ReleaseFinished(end.clone())), Some(self.release_op()));
        self.ledger.submit(append).await?;
        Ok(self.recorded(end, Conclusion::Recovered))
    }

    fn started(&self, source: &dyn SignalSource, mode: RunMode, continued: Option<u64>) -> Result<Record, LedgerError> {
        let policy = serde_json::to_string(self.policy).map_err(LedgerError::from)?;
        Ok(Record::ReleaseStarted(ReleaseStarted {
            facts: self.facts.clone(),
            source: source.name().to_string(),
            mode,
            duration_s: self.duration_s,
            policy_digest: digest(policy.as_bytes()),
            continued_from_s: continued,
            canary_from_ms: self.canary_from_ms,
        }))
    }

    async fn record(&self, record: Record) -> Result<i64, LedgerError> {
        let at = self.agent.clock.now_ms();
        let receipt = self.ledger.append(&self.facts.release_id, &self.agent.actor(), at, record).await?;
        Ok(receipt.seq)
    }

    /// An append by this agent for this release, stamped now.
    fn append(&self, record: Option<Record>, lease: Option<LeaseOp>) -> Append {
        Append {
            release_id: self.facts.release_id.clone(),
            actor: self.agent.actor(),
            at_ms: self.agent.clock.now_ms(),
            record,
            lease,
            approvals: ApprovalOps::default(),
            admit: None,
        }
    }

    /// Give the target's lease back (lapses it now if this agent holds it).
    fn release_op(&self) -> LeaseOp {
        LeaseOp::Release { target: self.lease.clone(), holder: self.agent.instance.clone() }
    }

    fn claim(&self) -> LeaseOp {
        LeaseOp::Claim { target: self.lease.clone(), holder: self.agent.instance.clone(), ttl_ms: self.agent.lease_ms }
    }

    async fn claim_lease(&self) -> Result<Option<LeaseRole>, LedgerError> {
        let append = self.append(None, Some(self.claim()));
        Ok(self.ledger.submit(append).await?.role)
    }

    async fn tick(
        &self,
        source: &dyn SignalSource,
        actuation: &Actuation,
        st: &mut LoopState,
    ) -> Result<Judged, LedgerError> {
        let mode = actuation.mode();
        let span = info_span!(telemetry::SPAN_TICK, tick = st.tick, now_s = st.now_s);
        let (obs, failure) = observe(source, st, &span).await;
        let judged = match &obs {
            Some(o) => self.judge_within_deadline(o, st).instrument(span.clone()).await,
            None => failed_observation_result(st.now_s, failure.as_deref().unwrap_or("unknown")),
        };
        st.last_verdict = Some(judged.verdict);
        st.failing = memory::failing_lines(&judged);
        self.refresh_quarantine(st, &judged).await?;
        let facts = self.facts_now(st);
        let now_ms = self.agent.clock.now_ms();
        let decide = |model: &ModelInput, history: &History| {
            let input = PolicyInput {
                judge: &judged,
                model,
                release: &facts,
                history,
                mode,
                signal_failure: failure.as_deref(),
                now_ms,
            };
            evaluate(self.policy, &input)
        };
        let none = History::default();
        let (mut outcome, consulted) =
            st.model.decide(&self.facts, obs.as_deref(), &judged, |m| decide(m, &none)).instrument(span.clone()).await;
        // The rate limit only ever turns a rollback into a request for approval, so the
        // ledger's history is read (a query per tick per release otherwise) only then.
        if matches!(outcome.decision, Decision::Rollback { .. }) {
            let window_ms = i64::from(self.policy.rate_limit.window_minutes) * 60_000;
            let rollbacks = self.ledger.automated_rollbacks(&self.facts.target, now_ms - window_ms).await?;
            outcome = decide(st.model.input(), &History { automated_rollbacks: rollbacks });
        }
        let consultation = if consulted { st.model.last().cloned() } else { None };
        let rehearsed = self.rehearse((&outcome.decision, &judged, failure.as_deref()), actuation, st);
        let rec = tick_record(st, obs.as_deref(), (&judged, &outcome), consultation.clone(), mode, rehearsed)?;
        let lease = (mode == RunMode::Act).then(|| self.keep_op(st));
        let append = Append { at_ms: now_ms, ..self.append(Some(rec), lease) };
        let done = self.ledger.submit(append).await?;
        if done.role.is_some() {
            self.note_role(st, done.role);
        }
        let seq = done.receipt.map_or(0, |r| r.seq);
        // A decision is news at `info`; a tick that only goes on is `debug` (one per release per tick).
        let (decision, verdict) = (outcome.decision.label(), judged.verdict);
        match outcome.decision {
            Decision::Continue => debug!(parent: &span, decision, %verdict, seq, "Tick judged."),
            _ => info!(parent: &span, decision, %verdict, seq, reason = outcome.decision.reason(), "Tick decided."),
        }
        Ok(Judged { judged, outcome, consultation, failure, rehearsed, seq })
    }

    /// One tick, shown to the observer once recorded.
    async fn observed_tick(
        &self,
        source: &dyn SignalSource,
        actuation: &Actuation,
        st: &mut LoopState,
        observer: &mut dyn Observer,
    ) -> Result<Judged, LedgerError> {
        let started = tokio::time::Instant::now();
        let t = self.tick(source, actuation, st).await?;
        observer.on_tick(&TickReport {
            tick: st.tick,
            now_s: st.now_s,
            duration_s: self.duration_s,
            judge: &t.judged,
            outcome: &t.outcome,
            seq: t.seq,
            took: started.elapsed(),
            budget: self.pace,
            consultation: t.consultation.as_ref(),
            observation: st.last_obs.as_ref(),
        });
        Ok(t)
    }

    async fn judge_within_deadline(&self, obs: &Arc<Observation>, st: &mut LoopState) -> JudgeResult {
        let cfg = self.policy.judge_for(&self.facts.service).into_owned();
        match st.judge.judge(Arc::clone(obs), cfg, JUDGE_DEADLINE, judge_with).await {
            Ok(j) => j,
            Err(why) => {
                warn!(%why, "Judge overran; holding.");
                overrun_result(st.now_s, why)
            }
        }
    }

    fn note_role(&self, st: &mut LoopState, role: Option<LeaseRole>) {
        let was_holder = matches!(st.role, Some(LeaseRole::Holder { .. }));
        if let Some(LeaseRole::Holder { token }) = &role
            && !was_holder
        {
            info!(token, target = %self.facts.target, lease = %self.lease, "This agent now holds the target's lease.");
            st.recovered = false;
        }
        let holds = matches!(role, Some(LeaseRole::Holder { .. }));
        match (&st.seat, self.agent.seats.as_ref()) {
            (None, Some(seats)) if holds => st.seat = Some(seats.seat()),
            (Some(_), _) if !holds => st.seat = None,
            _ => {}
        }
        st.role = role;
    }

    async fn finish(
        &self,
        st: &LoopState,
        status: ReleaseStatus,
        last: Option<Judged>,
    ) -> Result<RunOutcome, LedgerError> {
        self.refuse_late_answers().await;
        let usage = st.model.usage();
        let end =
            ReleaseFinished { status: status.clone(), ticks: st.tick, decided_at_s: st.now_s, model_usage: usage };
        let holder = matches!(st.role, Some(LeaseRole::Holder { .. }));
        let lease = holder.then(|| self.release_op());
        // A request still open closes with the release, in its end record's transaction.
        let close_open = match &status {
            ReleaseStatus::AwaitingApproval { .. } => None,
            ReleaseStatus::Interrupted => Some(Closure::AgentStopped),
            ReleaseStatus::Aborted { .. } => Some(Closure::OperatorAbort),
            _ => Some(Closure::ReleaseEnded),
        };
        // An observer interrupted mid-release leaves no end record: the holder is still running it.
        if holder || st.role.is_none() || status.is_final() {
            if status == ReleaseStatus::Interrupted {
                self.record(Record::ReleasePaused(ReleasePaused { tick: st.tick, now_s: st.now_s })).await?;
            }
            let approvals = ApprovalOps { only_if_open: None, close_open };
            let append = Append { approvals, ..self.append(Some(Record::ReleaseFinished(end)), lease) };
            self.ledger.submit(append).await?;
        }
        let (judged, rules, failure) = match last {
            Some(t) => (Some(t.judged), t.outcome.trace, t.failure),
            None => (None, vec![], None),
        };
        Ok(RunOutcome {
            release_id: self.facts.release_id.clone(),
            status,
            conclusion: Conclusion::ThisRun,
            ticks: st.tick,
            decided_at_s: st.now_s,
            final_judge: judged,
            final_rules: rules,
            signal_failure: failure,
            last_observation: st.last_obs.as_deref().cloned(),
            consultation: st.model.last().cloned(),
            model_usage: usage,
            model_configured: st.model.configured(),
            ramp: Some(st.ramp.clone()),
        })
    }

    /// The outcome a ledger already holds (this release finished earlier, or another agent finished it).
    fn recorded(&self, done: ReleaseFinished, conclusion: Conclusion) -> RunOutcome {
        RunOutcome {
            release_id: self.facts.release_id.clone(),
            status: done.status,
            conclusion,
            ticks: done.ticks,
            decided_at_s: done.decided_at_s,
            final_judge: None,
            final_rules: vec![],
            signal_failure: None,
            last_observation: None,
            consultation: None,
            model_usage: done.model_usage,
            model_configured: self.model.is_some(),
            ramp: None,
        }
    }
}

/// A tick record's `inputs_digest` when the source gave no observation.
pub(crate) const NO_OBSERVATION: &str = "none";

fn recovered(mut o: RunOutcome) -> RunOutcome {
    o.conclusion = Conclusion::Recovered;
    o
}

fn tick_record(
    st: &LoopState,
    obs: Option<&Observation>,
    (judged, outcome): (&JudgeResult, &PolicyOutcome),
    consultation: Option<Consultation>,
    mode: RunMode,
    rehearsed_raise: Option<u8>,
) -> Result<Record, LedgerError> {
    let inputs_digest = match obs {
        Some(o) => digest(serde_json::to_string(o).map_err(LedgerError::from)?.as_bytes()),
        None => NO_OBSERVATION.into(),
    };
    Ok(Record::Tick(Box::new(TickRecord {
        tick: st.tick,
        now_s: st.now_s,
        mode,
        inputs_digest,
        judge: judged.clone(),
        model: st.model.input().clone(),
        prompt_version: consultation.as_ref().map(|c| c.prompt_version.clone()),
        tool_calls: consultation.as_ref().map(|c| c.tool_calls.clone()).unwrap_or_default(),
        consultation,
        decision: outcome.decision.clone(),
        rules: outcome.trace.clone(),
        lease: st.role.clone(),
        rehearsed_raise,
    })))
}

/// This tick's observation, or why the source gave none; the loop's
/// counters follow it (ticks failing in a row, ramp time judged).
async fn observe(
    source: &dyn SignalSource,
    st: &mut LoopState,
    span: &tracing::Span,
) -> (Option<Arc<Observation>>, Option<String>) {
    let (obs, failure) = match source.observe(st.now_s).instrument(span.clone()).await {
        Ok(o) => (Some(Arc::new(o)), None),
        Err(e) => {
            let text = crate::error::chain(&e);
            warn!(parent: span, error = %text, "Signal source failed; holding.");
            (None, Some(text))
        }
    };
    if let Some(o) = &obs {
        st.last_obs = Some(o.clone());
        st.ramp.progress.judged_s += st.advanced_s;
        st.failing_ticks = 0;
    } else {
        st.failing_ticks = st.failing_ticks.saturating_add(1);
    }
    (obs, failure)
}
