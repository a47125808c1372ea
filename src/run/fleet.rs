//! Running a fleet release (`[[fleets]]`): the shell around
//! [`fleet_next`]. Where the fleet stands is read from the ledger before
//! every move — which member releases started and how they ended, which
//! reverts ran — so a process killed anywhere picks up where the ledger
//! says, and every member keeps its own exactly-once guarantees.

use std::time::Duration;

use tracing::{info, warn};

use super::{Prepared, Runtime, join_in_order};
use crate::ledger::{LedgerError, Record};
use crate::orchestrator::fleet::{FleetEnd, FleetNext, Member, MemberState, fleet_next};
use crate::orchestrator::{Observer, ReleaseRun, RunOutcome};
use crate::policy::ReleaseFacts;
use crate::release::FleetPlan;

/// The id of the release that rolls back member `release_id`'s promotion.
pub fn revert_id(release_id: &str) -> String {
    format!("{release_id}/revert")
}

/// Whether `release_id` is a revert's ([`revert_id`]).
pub fn is_revert_id(release_id: &str) -> bool {
    release_id.ends_with("/revert")
}

/// One member as the fleet ended (or was left by a stop signal).
#[derive(Debug, Clone)]
pub struct MemberView {
    /// The member's configured name.
    pub name: String,
    /// Its target.
    pub target: String,
    /// Its wave (1-based).
    pub wave: usize,
    /// Its release.
    pub release: MemberState,
    /// The revert of its promotion, if the fleet stopped after it promoted.
    pub revert: MemberState,
}

/// How a fleet run ended.
#[derive(Debug, Clone)]
pub struct FleetOutcome {
    /// The fleet's name.
    pub name: String,
    /// `None`: stopped by a signal before the fleet was over (run again to continue).
    pub end: Option<FleetEnd>,
    /// Every member, wave by wave.
    pub members: Vec<MemberView>,
    /// The member releases this process ran to their end, by member index.
    pub ran: Vec<(usize, RunOutcome)>,
}

/// Where a fleet release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, schemars::JsonSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FleetPhase {
    /// A wave's members are being judged.
    Running,
    /// A wave promoted; the next waits for its bake to pass.
    Baking,
    /// A wave failed; earlier waves' promotions are being reverted (or held).
    Reverting,
    /// Every wave promoted and baked.
    Promoted,
    /// A wave failed; later waves never start.
    Stopped,
    /// The process stopped before the fleet was over; run it again to continue.
    Interrupted,
}

impl FleetPhase {
    /// The word people read.
    pub fn label(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for FleetPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A fleet as the ledger shows it now, typed (the gate and Slack read it).
#[derive(Debug, Clone)]
pub struct FleetNow {
    /// Its members and how it ended, if it did.
    pub outcome: FleetOutcome,
    /// Where it stands.
    pub phase: FleetPhase,
    /// The wave running or baking, or the one that failed (from 1).
    pub wave: Option<usize>,
    /// The revision its members release.
    pub revision: String,
    /// Their service.
    pub service: String,
}

impl FleetNow {
    /// As people see it.
    pub fn summary(&self) -> FleetSummary {
        FleetSummary { outcome: self.phase, wave: self.wave, ..self.outcome.summary() }
    }
}

/// A fleet as people see it (`watch --format json`, `GET /v1/fleets`).
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct FleetSummary {
    /// Its name.
    pub name: String,
    /// Where it stands.
    pub outcome: FleetPhase,
    /// The wave running or baking (from 1), or the one that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave: Option<usize>,
    /// Why it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Every member, wave by wave.
    pub members: Vec<MemberSummary>,
}

/// One member of a fleet.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct MemberSummary {
    /// Its release name.
    pub name: String,
    /// Its target.
    pub target: String,
    /// Its wave, from 1.
    pub wave: usize,
    /// `not_started`, `unfinished`, or the status it ended with.
    pub status: &'static str,
    /// The revert of its promotion after a failed wave: `not_started`, `unfinished` or its status.
    pub revert: &'static str,
}

fn state_label(s: &MemberState) -> &'static str {
    match s {
        MemberState::NotStarted => "not_started",
        MemberState::Unfinished => "unfinished",
        MemberState::Ended { status, .. } => status.label(),
    }
}

impl FleetOutcome {
    /// The fleet as people see it.
    pub fn summary(&self) -> FleetSummary {
        let (outcome, wave, why) = match &self.end {
            Some(FleetEnd::Promoted) => (FleetPhase::Promoted, None, None),
            Some(FleetEnd::Stopped { failed_wave, why }) => {
                (FleetPhase::Stopped, Some(failed_wave + 1), Some(why.clone()))
            }
            None => (FleetPhase::Interrupted, None, None),
        };
        FleetSummary { name: self.name.clone(), outcome, wave, why, members: self.member_summaries() }
    }

    fn member_summaries(&self) -> Vec<MemberSummary> {
        let summary = |m: &MemberView| MemberSummary {
            name: m.name.clone(),
            target: m.target.clone(),
            wave: m.wave,
            status: state_label(&m.release),
            revert: state_label(&m.revert),
        };
        self.members.iter().map(summary).collect()
    }
}

/// A fleet to run: its plan, and its members prepared in wave order
/// (`plan.waves` flattened).
pub struct Fleet<'a> {
    /// The plan.
    pub plan: &'a FleetPlan,
    /// Members, in the order of `plan.waves` flattened.
    pub members: Vec<Prepared>,
}

impl Fleet<'_> {
    /// Waves as indexes into `members`.
    fn waves(&self) -> Vec<Vec<usize>> {
        member_waves(self.plan)
    }

    fn names(&self) -> Vec<String> {
        self.members.iter().map(|p| p.name.clone()).collect()
    }
}

/// `plan`'s waves as indexes into its members in wave order (`plan.waves` flattened).
fn member_waves(plan: &FleetPlan) -> Vec<Vec<usize>> {
    let mut next = 0;
    plan.waves
        .iter()
        .map(|w| {
            next += w.len();
            (next - w.len()..next).collect()
        })
        .collect()
}

/// Members as people see them: name, target and wave of each, with its states.
fn member_views(names: &[String], targets: &[String], waves: &[Vec<usize>], members: Vec<Member>) -> Vec<MemberView> {
    let view = |(i, m): (usize, Member)| MemberView {
        name: names[i].clone(),
        target: targets[i].clone(),
        wave: waves.iter().position(|w| w.contains(&i)).unwrap_or(0) + 1,
        release: m.release,
        revert: m.revert,
    };
    members.into_iter().enumerate().map(view).collect()
}

/// Where a release stands in the ledger, and the facts it last started with.
async fn state_of(rt: &Runtime, release_id: &str) -> Result<(MemberState, Option<ReleaseFacts>), LedgerError> {
    let mut state = MemberState::NotStarted;
    let mut facts = None;
    for (stored, rec) in rt.ledger.release_records(release_id).await? {
        match rec {
            Record::ReleaseStarted(s) => {
                facts = Some(s.facts);
                state = MemberState::Unfinished;
            }
            Record::ReleaseFinished(f) if f.status.is_final() => {
                state = MemberState::Ended { status: Box::new(f.status), at_ms: stored.at_ms };
            }
            _ => {}
        }
    }
    Ok((state, facts))
}

/// What `watch` runs: releases on their own, and fleets with their members' configurations.
pub type Selection = (Vec<crate::release::ReleaseConfig>, Vec<(FleetPlan, Vec<crate::release::ReleaseConfig>)>);

impl Runtime {
    /// The releases and fleets named (all when `names` is empty): a name is
    /// a fleet's or a release's that is in no fleet (a member runs only in
    /// its fleet's wave).
    pub fn select_with_fleets(&self, names: &[String]) -> Result<Selection, super::RuntimeError> {
        let all = &self.settings.releases;
        if all.is_empty() {
            return Err(super::RuntimeError::NoReleases);
        }
        let plans = self.settings.fleet_plans().unwrap_or_default();
        let fleet_of = |i: usize| plans.iter().find(|p| p.waves.iter().flatten().any(|&m| m == i));
        let members = |p: &FleetPlan| p.waves.iter().flatten().map(|&i| all[i].clone()).collect::<Vec<_>>();
        if names.is_empty() {
            let alone = all.iter().enumerate().filter(|(i, _)| fleet_of(*i).is_none()).map(|(_, r)| r.clone());
            let fleets = plans.iter().map(|p| (p.clone(), members(p))).collect();
            return Ok((alone.collect(), fleets));
        }
        let (mut alone, mut fleets) = (Vec::new(), Vec::new());
        for n in names {
            if let Some(p) = plans.iter().find(|p| &p.name == n) {
                fleets.push((p.clone(), members(p)));
                continue;
            }
            if let Some((i, _)) = all.iter().enumerate().find(|(_, r)| &r.name == n)
                && let Some(p) = fleet_of(i)
            {
                return Err(super::RuntimeError::InFleet { name: n.clone(), fleet: p.name.clone() });
            }
            alone.extend(self.select(std::slice::from_ref(n))?);
        }
        Ok((alone, fleets))
    }

    /// Run `fleet` to its end: wave by wave, each member an ordinary
    /// release; after a failed wave, each promoted member's revert. `pace`
    /// as in [`Runtime::run`]; bakes wait in real time.
    pub async fn run_fleet(
        &self,
        fleet: &Fleet<'_>,
        pace: Option<Duration>,
        observer: &mut dyn FnMut(&str, u64) -> Box<dyn Observer>,
    ) -> Result<FleetOutcome, LedgerError> {
        self.drive_fleet(fleet, &mut InProcess { runtime: self, pace, observer }).await
    }

    /// The fleet's moves, each read from the ledger first; `waves` runs a wave's members.
    pub(crate) async fn drive_fleet(
        &self,
        fleet: &Fleet<'_>,
        waves: &mut impl WaveRunner,
    ) -> Result<FleetOutcome, LedgerError> {
        let names = fleet.names();
        let wave_members = fleet.waves();
        let mut ran: Vec<(usize, RunOutcome)> = Vec::new();
        let mut last: Option<(FleetNext, Vec<Member>)> = None;
        loop {
            let (members, facts) = self.fleet_state(fleet).await?;
            let now_ms = self.agent.clock.now_ms();
            let next = fleet_next(&wave_members, &fleet.plan.bake_ms, &members, &names, now_ms);
            let stopping = *self.stop.borrow();
            if stopping || last.as_ref().is_some_and(|(n, m)| *n == next && *m == members && !is_bake(&next)) {
                // Stopped by a signal, or a move that changed nothing (a
                // member another agent holds): the ledger keeps the place.
                if !stopping {
                    warn!(fleet = %fleet.plan.name, ?next, "The fleet cannot move on in this run; run it again.");
                }
                return Ok(self.fleet_outcome(fleet, None, members, ran));
            }
            match &next {
                FleetNext::Run { wave } => {
                    info!(fleet = %fleet.plan.name, wave = wave + 1, "Wave running.");
                    for (m, outcome) in waves.run_wave(fleet, &wave_members[*wave]).await? {
                        ran.retain(|(i, _)| *i != m);
                        ran.push((m, outcome));
                    }
                }
                FleetNext::Bake { wave, until_ms } => {
                    info!(fleet = %fleet.plan.name, wave = wave + 1, until_ms, "Wave promoted; baking.");
                    let wait = Duration::from_millis((until_ms - now_ms).max(0) as u64);
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }
                FleetNext::Revert { members: to_revert, why } => {
                    warn!(fleet = %fleet.plan.name, %why, "A wave failed; reverting the promoted targets as policy says.");
                    let runs = to_revert.iter().map(|&m| self.revert_member(fleet, m, facts[m].clone(), why));
                    for r in join_in_order(runs).await {
                        r?;
                    }
                }
                FleetNext::Done(end) => {
                    info!(fleet = %fleet.plan.name, ?end, "Fleet release ended.");
                    return Ok(self.fleet_outcome(fleet, Some(end.clone()), members, ran));
                }
            }
            last = Some((next, members));
        }
    }

    /// Every configured fleet as the ledger shows it now (acting ids: what `watch` and the agent run).
    pub async fn fleet_summaries(&self) -> Result<Vec<FleetSummary>, LedgerError> {
        Ok(self.fleets_now().await?.iter().map(FleetNow::summary).collect())
    }

    /// As [`Self::fleet_summaries`], typed. Reads the ledger (two queries per member).
    pub async fn fleets_now(&self) -> Result<Vec<FleetNow>, LedgerError> {
        let mut out = Vec::new();
        for plan in self.settings.fleet_plans().unwrap_or_default() {
            out.push(self.fleet_now(&plan).await?);
        }
        Ok(out)
    }

    /// Fleet `plan` as the ledger shows it now (two queries per member).
    pub async fn fleet_now(&self, plan: &FleetPlan) -> Result<FleetNow, LedgerError> {
        let cfgs: Vec<_> = plan.waves.iter().flatten().map(|&i| self.settings.releases[i].clone()).collect();
        let mut members = Vec::new();
        for cfg in &cfgs {
            let id = crate::release::release_id(cfg);
            let (release, _) = state_of(self, &id).await?;
            let (revert, _) = state_of(self, &revert_id(&id)).await?;
            members.push(Member { release, revert });
        }
        let names: Vec<String> = cfgs.iter().map(|c| c.name.clone()).collect();
        let targets: Vec<String> = cfgs.iter().map(|c| c.target.clone()).collect();
        let waves = member_waves(plan);
        let now = fleet_next(&waves, &plan.bake_ms, &members, &names, self.agent.clock.now_ms());
        let (end, phase, wave) = match now {
            FleetNext::Done(FleetEnd::Promoted) => (Some(FleetEnd::Promoted), FleetPhase::Promoted, None),
            FleetNext::Done(FleetEnd::Stopped { failed_wave, why }) => {
                (Some(FleetEnd::Stopped { failed_wave, why }), FleetPhase::Stopped, Some(failed_wave + 1))
            }
            FleetNext::Run { wave } => (None, FleetPhase::Running, Some(wave + 1)),
            FleetNext::Bake { wave, .. } => (None, FleetPhase::Baking, Some(wave + 1)),
            FleetNext::Revert { .. } => (None, FleetPhase::Reverting, None),
        };
        let views = member_views(&names, &targets, &waves, members);
        let outcome = FleetOutcome { name: plan.name.clone(), end, members: views, ran: vec![] };
        Ok(FleetNow { outcome, phase, wave, revision: plan.candidate_revision.clone(), service: plan.service.clone() })
    }

    /// Every member's state, and the facts each member last started with.
    async fn fleet_state(&self, fleet: &Fleet<'_>) -> Result<(Vec<Member>, Vec<Option<ReleaseFacts>>), LedgerError> {
        let (mut members, mut facts) = (Vec::new(), Vec::new());
        for p in &fleet.members {
            let id = &p.release.facts.release_id;
            let (release, started) = state_of(self, id).await?;
            let (revert, _) = state_of(self, &revert_id(id)).await?;
            members.push(Member { release, revert });
            facts.push(started);
        }
        Ok((members, facts))
    }

    /// Roll back member `m`'s promotion (or hold it), as its own release:
    /// the facts it ran with (its last-known-good as it used it) under the revert's id.
    fn revert_member<'s>(
        &'s self,
        fleet: &'s Fleet<'_>,
        m: usize,
        started: Option<ReleaseFacts>,
        why: &'s str,
    ) -> impl Future<Output = Result<RunOutcome, LedgerError>> + 's {
        let p = &fleet.members[m].release;
        let mut facts = started.unwrap_or_else(|| p.facts.clone());
        facts.release_id = revert_id(&p.facts.release_id);
        facts.declared_targets = p.facts.declared_targets.clone();
        async move {
            let run = ReleaseRun {
                facts,
                lease: p.lease.clone(),
                tick_s: p.tick_s,
                duration_s: 0,
                ramp: None,
                pace: Duration::ZERO,
                policy: &self.policy,
                ledger: &self.ledger,
                stop: Some(self.stop.clone()),
                model: None,
                agent: self.agent.clone(),
                controls: None,
                canary_from_ms: None,
            };
            run.revert(&p.actuation(), why, &mut crate::orchestrator::Quiet).await
        }
    }

    fn fleet_outcome(
        &self,
        fleet: &Fleet<'_>,
        end: Option<FleetEnd>,
        members: Vec<Member>,
        ran: Vec<(usize, RunOutcome)>,
    ) -> FleetOutcome {
        let targets: Vec<String> = fleet.members.iter().map(|p| p.release.facts.target.clone()).collect();
        let views = member_views(&fleet.names(), &targets, &fleet.waves(), members);
        FleetOutcome { name: fleet.plan.name.clone(), end, members: views, ran }
    }
}

/// Runs one wave's members to their ends: in this process (`watch`), or
/// as the agent's releases (`backstop agent`).
pub(crate) trait WaveRunner {
    /// Run the members `wave` (indexes into `fleet.members`) until each has
    /// ended or the process stops; the outcomes this runner saw.
    async fn run_wave(&mut self, fleet: &Fleet<'_>, wave: &[usize]) -> Result<Vec<(usize, RunOutcome)>, LedgerError>;
}

/// `watch`: a wave's members run concurrently on this task.
struct InProcess<'r, 'o> {
    runtime: &'r Runtime,
    pace: Option<Duration>,
    observer: &'o mut dyn FnMut(&str, u64) -> Box<dyn Observer>,
}

impl WaveRunner for InProcess<'_, '_> {
    async fn run_wave(&mut self, fleet: &Fleet<'_>, wave: &[usize]) -> Result<Vec<(usize, RunOutcome)>, LedgerError> {
        let runtime = self.runtime;
        let mut fresh = Vec::with_capacity(wave.len());
        for &m in wave {
            fresh.push(runtime.at_wave_start(&fleet.members[m]).await);
        }
        let runs: Vec<_> = wave
            .iter()
            .zip(&fresh)
            .map(|(&m, fresh)| {
                let p = fresh.as_ref().unwrap_or(&fleet.members[m]);
                let mut obs = (self.observer)(&p.name, p.release.duration_s);
                let pace = self.pace;
                async move { (m, runtime.run(&p.release, pace, obs.as_mut(), None).await) }
            })
            .collect();
        join_in_order(runs.into_iter()).await.into_iter().map(|(m, r)| r.map(|o| (m, o))).collect()
    }
}

impl Runtime {
    /// A fleet member prepared again as its wave starts, so its live
    /// sources read from the wave's start (or the member's recorded start),
    /// not from when the fleet was set up; `None`, with a warning, when that
    /// fails now (the member then runs as prepared at the start).
    async fn at_wave_start(&self, member: &Prepared) -> Option<Prepared> {
        let cfg = self.settings.releases.iter().find(|c| c.name == member.name)?;
        let now = self.agent.clock.now_ms();
        match self.prepare_to_run(cfg, crate::policy::RunMode::Act, now).await {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(release = %member.name, error = %crate::error::chain(&e),
                    "A fleet member could not be prepared again at its wave's start; it reads from the fleet's start.");
                None
            }
        }
    }
}

fn is_bake(next: &FleetNext) -> bool {
    matches!(next, FleetNext::Bake { .. })
}
