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
        let mut next = 0;
        self.plan
            .waves
            .iter()
            .map(|w| {
                let wave = (next..next + w.len()).collect();
                next += w.len();
                wave
            })
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.members.iter().map(|p| p.name.clone()).collect()
    }
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
        let (waves, names) = (fleet.waves(), fleet.names());
        let mut ran: Vec<(usize, RunOutcome)> = Vec::new();
        let mut last: Option<(FleetNext, Vec<Member>)> = None;
        loop {
            let (members, facts) = self.fleet_state(fleet).await?;
            let now_ms = self.agent.clock.now_ms();
            let next = fleet_next(&waves, &fleet.plan.bake_ms, &members, &names, now_ms);
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
                    let runs = waves[*wave].iter().map(|&m| {
                        let p = &fleet.members[m];
                        let mut obs = observer(&p.name, p.release.duration_s);
                        async move { (m, self.run(&p.release, pace, obs.as_mut(), None).await) }
                    });
                    for (m, r) in join_in_order(runs).await {
                        ran.retain(|(i, _)| *i != m);
                        ran.push((m, r?));
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
                    let runs = to_revert.iter().map(|&m| {
                        let obs = observer(&format!("{} (revert)", fleet.members[m].name), 0);
                        self.revert_member(fleet, m, facts[m].clone(), why, obs)
                    });
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
        mut obs: Box<dyn Observer>,
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
                pace: Duration::ZERO,
                policy: &self.policy,
                ledger: &self.ledger,
                stop: Some(self.stop.clone()),
                model: None,
                agent: self.agent.clone(),
                controls: None,
            };
            run.revert(&p.actuation(), why, obs.as_mut()).await
        }
    }

    fn fleet_outcome(
        &self,
        fleet: &Fleet<'_>,
        end: Option<FleetEnd>,
        members: Vec<Member>,
        ran: Vec<(usize, RunOutcome)>,
    ) -> FleetOutcome {
        let waves = fleet.waves();
        let views = members
            .into_iter()
            .enumerate()
            .map(|(i, m)| MemberView {
                name: fleet.members[i].name.clone(),
                target: fleet.members[i].release.facts.target.clone(),
                wave: waves.iter().position(|w| w.contains(&i)).unwrap_or(0) + 1,
                release: m.release,
                revert: m.revert,
            })
            .collect();
        FleetOutcome { name: fleet.plan.name.clone(), end, members: views, ran }
    }
}

fn is_bake(next: &FleetNext) -> bool {
    matches!(next, FleetNext::Bake { .. })
}
