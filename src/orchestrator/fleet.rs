//! A release across a fleet, in waves: [`fleet_next`] is the pure rule
//! (which wave runs, how long it bakes, what a failure does), and
//! [`ReleaseRun::revert`] rolls back one target an earlier wave promoted —
//! a release of its own, with its own lease, permit, intent and
//! verification, so a crash at any point is reconciled like any action.

use super::{LoopState, Observer, ReleaseRun, ReleaseStatus, RunOutcome, failed_observation_result};
use crate::assessor::Deliberation;
use crate::digest::digest;
use crate::ledger::{LeaseRole, LedgerError, Record, ReleaseStarted, TickRecord};
use crate::policy::waves::{RevertAsk, rule_revert};
use crate::policy::{Decision, History, ModelInput, PolicyOutcome, RunMode};

/// Where one release of the fleet stands in the ledger.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberState {
    /// No record: its wave has not started.
    NotStarted,
    /// Started and not ended (running, paused by a signal, or cut short by a crash).
    Unfinished,
    /// Ended for good, at `at_ms` (unix ms).
    Ended {
        /// How (boxed: a status with its reasons is large, and most members are not ended).
        status: Box<ReleaseStatus>,
        /// When its end was recorded.
        at_ms: i64,
    },
}

/// What an ended member means for the fleet. Every status is answered
/// here, without a wildcard: a new status does not compile until it is.
fn passed(status: &ReleaseStatus) -> Option<bool> {
    match status {
        ReleaseStatus::Promoted => Some(true),
        ReleaseStatus::Interrupted | ReleaseStatus::ActionUnresolved { .. } => None,
        ReleaseStatus::RolledBack
        | ReleaseStatus::ActionNotVerified { .. }
        | ReleaseStatus::ActionFailed { .. }
        | ReleaseStatus::Recommended { .. }
        | ReleaseStatus::AwaitingApproval { .. }
        | ReleaseStatus::Held { .. }
        | ReleaseStatus::Denied { .. }
        | ReleaseStatus::Aborted { .. } => Some(false),
    }
}

/// One member: its release, and the revert of its promotion if the fleet stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The member's own release.
    pub release: MemberState,
    /// The release that rolls its promotion back (`NotStarted` until one is needed).
    pub revert: MemberState,
}

impl Member {
    fn outcome(&self) -> Option<bool> {
        match &self.release {
            MemberState::Ended { status, .. } => passed(status),
            MemberState::NotStarted | MemberState::Unfinished => None,
        }
    }
}

/// The fleet's next move.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetNext {
    /// Run (or continue) every member of this wave (0-based) to its end.
    Run {
        /// The wave.
        wave: usize,
    },
    /// Wave `wave` promoted: wait until `until_ms` (unix ms) before the next.
    Bake {
        /// The wave.
        wave: usize,
        /// When the bake ends.
        until_ms: i64,
    },
    /// A wave failed: each of these promoted members gets a revert (policy
    /// decides, for each, roll back or hold); later waves never start.
    Revert {
        /// Members (indexes into the fleet's member list).
        members: Vec<usize>,
        /// Why, in one line.
        why: String,
    },
    /// The fleet is over.
    Done(FleetEnd),
}

/// How a fleet release ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetEnd {
    /// Every wave promoted and baked.
    Promoted,
    /// Wave `failed_wave` (0-based) failed; later waves never started.
    Stopped {
        /// The first wave with a member that did not promote.
        failed_wave: usize,
        /// Why, in one line.
        why: String,
    },
}

/// The next move for a fleet whose waves hold member indexes `waves`, with
/// members as the ledger shows them, each wave's bake (ms), at `now_ms`.
/// `names` name members in reasons.
pub fn fleet_next(
    waves: &[Vec<usize>],
    bake_ms: &[i64],
    members: &[Member],
    names: &[String],
    now_ms: i64,
) -> FleetNext {
    for (w, wave) in waves.iter().enumerate() {
        let failed: Vec<usize> = wave.iter().copied().filter(|&m| members[m].outcome() == Some(false)).collect();
        let open = wave.iter().any(|&m| members[m].outcome().is_none());
        if open {
            // A wave runs to its end: every canary of it is judged and ends on its own.
            return FleetNext::Run { wave: w };
        }
        if !failed.is_empty() {
            return stopped(waves, w, &failed, members, names);
        }
        let promoted_at = wave.iter().filter_map(|&m| ended_at(&members[m].release)).max().unwrap_or(now_ms);
        let until_ms = promoted_at + bake_ms.get(w).copied().unwrap_or(0);
        if now_ms < until_ms {
            return FleetNext::Bake { wave: w, until_ms };
        }
    }
    FleetNext::Done(FleetEnd::Promoted)
}

fn ended_at(s: &MemberState) -> Option<i64> {
    match s {
        MemberState::Ended { at_ms, .. } => Some(*at_ms),
        MemberState::NotStarted | MemberState::Unfinished => None,
    }
}

/// Wave `w` failed: revert every promoted member of it and of earlier waves
/// whose revert has not ended, then the fleet is over.
fn stopped(waves: &[Vec<usize>], w: usize, failed: &[usize], members: &[Member], names: &[String]) -> FleetNext {
    let who: Vec<String> = failed
        .iter()
        .map(|&m| match &members[m].release {
            MemberState::Ended { status, .. } => format!("{} {}", names[m], status.label()),
            MemberState::NotStarted | MemberState::Unfinished => names[m].clone(),
        })
        .collect();
    let why = format!("wave {} of the fleet failed ({})", w + 1, who.join(", "));
    let promoted = waves[..=w].iter().flatten().copied().filter(|&m| members[m].outcome() == Some(true));
    let pending: Vec<usize> = promoted.filter(|&m| !matches!(members[m].revert, MemberState::Ended { .. })).collect();
    if pending.is_empty() {
        return FleetNext::Done(FleetEnd::Stopped { failed_wave: w, why });
    }
    FleetNext::Revert { members: pending, why }
}

impl ReleaseRun<'_> {
    /// Roll back the promotion of a fleet member whose fleet stopped, as
    /// policy rules ([`rule_revert`]): `self.facts` are the revert's (its own
    /// release id, the member's target, candidate and last-known-good). It
    /// runs at most once: a revert that ended is only read back, one whose
    /// action took effect is closed, and an intent left by a crash is
    /// reconciled against the target before anything else.
    pub async fn revert(
        &self,
        actuation: &super::Actuation,
        why: &str,
        observer: &mut dyn Observer,
    ) -> Result<RunOutcome, LedgerError> {
        let prior = self.prior().await?;
        if let Some(done) = prior.finished.clone().filter(|d| d.status.is_final()) {
            return Ok(self.recorded(done, super::Conclusion::AlreadyFinished));
        }
        if let Some(status) = prior.effected.clone() {
            return self.close_effected(&prior, status).await;
        }
        let mut st = LoopState::at(self, prior.tick, prior.now_s);
        let super::Actuation::Live(executor) = actuation else {
            self.record(self.revert_started(prior.tick > 0)?).await?;
            let status = ReleaseStatus::Held { reason: format!("{why}; nothing acts on {}", self.facts.target) };
            return self.finish(&st, status, None).await;
        };
        st.role = self.await_lease().await?;
        if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
            return self.finish(&st, ReleaseStatus::Interrupted, None).await;
        }
        if !matches!(st.role, Some(LeaseRole::Holder { .. })) {
            return Ok(self.left_to_holder(why, &st));
        }
        if let Some(done) = self.on_acquire(executor, &mut st).await? {
            return Ok(done);
        }
        self.record(self.revert_started(prior.tick > 0)?).await?;
        let now_ms = self.agent.clock.now_ms();
        let window_ms = i64::from(self.policy.rate_limit.window_minutes) * 60_000;
        let rollbacks = self.ledger.automated_rollbacks(&self.facts.target, now_ms - window_ms).await?;
        let history = History { automated_rollbacks: rollbacks };
        let ask = RevertAsk { release: &self.facts, history: &history, why, now_ms };
        let outcome = rule_revert(self.policy, &ask);
        st.tick += 1;
        self.record(revert_tick(&st, &outcome, why)).await?;
        let status = match &outcome.decision {
            Decision::Rollback { .. } => self.act(&outcome.decision, actuation, &mut st, observer, None).await?,
            decision => Some(ReleaseStatus::Held { reason: decision.reason().to_string() }),
        };
        match status {
            Some(status) => self.finish(&st, status, None).await,
            None => Ok(self.left_to_holder(why, &st)),
        }
    }

    /// Another agent holds the target: it carries the revert out, and this
    /// one records nothing (its fleet finds the revert's end in the ledger).
    fn left_to_holder(&self, why: &str, st: &LoopState) -> RunOutcome {
        let reason = format!("{why}; another agent holds {}'s lease and carries the revert out", self.facts.target);
        let end = crate::ledger::ReleaseFinished {
            status: ReleaseStatus::Held { reason },
            ticks: st.tick,
            decided_at_s: st.now_s,
            model_usage: Default::default(),
        };
        self.recorded(end, super::Conclusion::OtherAgent)
    }

    /// The target's lease, waited for while another holder's may still
    /// lapse (an agent killed mid-fleet keeps it for its TTL): up to two
    /// TTLs, or until the stop signal. `Follower`: a live agent renews it.
    async fn await_lease(&self) -> Result<Option<LeaseRole>, LedgerError> {
        let ttl_ms = self.agent.lease_ms.max(1) as u64;
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(2 * ttl_ms + 1_000);
        loop {
            let role = self.claim_lease().await?;
            let stopping = self.stop.as_ref().is_some_and(|s| *s.borrow());
            if matches!(role, Some(LeaseRole::Holder { .. })) || stopping || tokio::time::Instant::now() >= until {
                return Ok(role);
            }
            tokio::time::sleep(std::time::Duration::from_millis((ttl_ms / 4).max(50))).await;
        }
    }

    fn revert_started(&self, continued: bool) -> Result<Record, LedgerError> {
        let policy = serde_json::to_string(self.policy).map_err(LedgerError::from)?;
        Ok(Record::ReleaseStarted(ReleaseStarted {
            facts: self.facts.clone(),
            source: "fleet".into(),
            mode: RunMode::Act,
            duration_s: 0,
            policy_digest: digest(policy.as_bytes()),
            continued_from_s: continued.then_some(0),
            canary_from_ms: None,
        }))
    }
}

impl LoopState {
    /// A loop state at `tick`, `now_s` of `run`, before any lease.
    pub(super) fn at(run: &ReleaseRun<'_>, tick: u64, now_s: u64) -> LoopState {
        LoopState {
            tick,
            now_s,
            model: Deliberation::new(None, run.model_timing()),
            last_obs: None,
            judge: super::Deadlined::default(),
            recovered: false,
            role: None,
            asking: None,
            failing_ticks: 0,
            last_verdict: None,
            quarantine: run.facts.quarantine.clone(),
            failing: vec![],
            ramp: Default::default(),
            advanced_s: 0,
            seat: None,
        }
    }
}

/// The revert's one decision, as a tick: nothing was judged (the fleet's
/// failure is the reason), and the rules that fired.
fn revert_tick(st: &LoopState, outcome: &PolicyOutcome, why: &str) -> Record {
    Record::Tick(Box::new(TickRecord {
        tick: st.tick,
        now_s: st.now_s,
        mode: RunMode::Act,
        inputs_digest: "none".into(),
        judge: failed_observation_result(st.now_s, &format!("not judged: {why}")),
        model: ModelInput::NotConfigured,
        consultation: None,
        prompt_version: None,
        tool_calls: vec![],
        decision: outcome.decision.clone(),
        rules: outcome.trace.clone(),
        lease: st.role.clone(),
        rehearsed_raise: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: ReleaseStatus, at_ms: i64) -> MemberState {
        MemberState::Ended { status: Box::new(status), at_ms }
    }

    fn member(release: MemberState) -> Member {
        Member { release, revert: MemberState::NotStarted }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    const WAVES: [&[usize]; 3] = [&[0], &[1, 2], &[3]];

    fn waves() -> Vec<Vec<usize>> {
        WAVES.iter().map(|w| w.to_vec()).collect()
    }

    #[test]
    fn waves_run_in_order_and_each_bakes_after_its_last_promotion() {
        let bake = [1_000, 1_000, 0];
        let mut m: Vec<Member> = (0..4).map(|_| member(MemberState::NotStarted)).collect();
        assert_eq!(fleet_next(&waves(), &bake, &m, &names(4), 0), FleetNext::Run { wave: 0 });
        m[0].release = ended(ReleaseStatus::Promoted, 10);
        assert_eq!(fleet_next(&waves(), &bake, &m, &names(4), 500), FleetNext::Bake { wave: 0, until_ms: 1_010 });
        assert_eq!(fleet_next(&waves(), &bake, &m, &names(4), 1_010), FleetNext::Run { wave: 1 });
        m[1].release = ended(ReleaseStatus::Promoted, 2_000);
        m[2].release = MemberState::Unfinished;
        assert_eq!(fleet_next(&waves(), &bake, &m, &names(4), 9_000), FleetNext::Run { wave: 1 });
        m[2].release = ended(ReleaseStatus::Promoted, 3_000);
        assert_eq!(fleet_next(&waves(), &bake, &m, &names(4), 3_500), FleetNext::Bake { wave: 1, until_ms: 4_000 });
        m[3].release = ended(ReleaseStatus::Promoted, 5_000);
        assert_eq!(fleet_next(&waves(), &bake, &m, &names(4), 5_000), FleetNext::Done(FleetEnd::Promoted));
    }

    #[test]
    fn a_failed_wave_reverts_every_promoted_member_once_and_never_starts_a_later_wave() {
        let mut m: Vec<Member> = (0..4).map(|_| member(MemberState::NotStarted)).collect();
        m[0].release = ended(ReleaseStatus::Promoted, 10);
        m[1].release = ended(ReleaseStatus::RolledBack, 20);
        m[2].release = MemberState::Unfinished;
        // The wave's other canary is judged to its end first.
        assert_eq!(fleet_next(&waves(), &[0; 3], &m, &names(4), 30), FleetNext::Run { wave: 1 });
        m[2].release = ended(ReleaseStatus::Promoted, 40);
        let next = fleet_next(&waves(), &[0; 3], &m, &names(4), 50);
        let FleetNext::Revert { members, why } = next else { panic!("{next:?}") };
        assert_eq!(members, vec![0, 2]);
        assert!(why.contains("wave 2") && why.contains("m1 rolled_back"), "{why}");
        m[0].revert = ended(ReleaseStatus::RolledBack, 60);
        assert_eq!(fleet_next(&waves(), &[0; 3], &m, &names(4), 60), FleetNext::Revert { members: vec![2], why });
        m[2].revert = ended(ReleaseStatus::Held { reason: "irreversible".into() }, 70);
        let FleetNext::Done(FleetEnd::Stopped { failed_wave: 1, .. }) =
            fleet_next(&waves(), &[0; 3], &m, &names(4), 70)
        else {
            panic!("the fleet ends stopped at wave 2")
        };
        assert_eq!(m[3].release, MemberState::NotStarted);
    }

    #[test]
    fn an_interrupted_or_unresolved_member_is_continued_not_counted_as_failed() {
        let mut m: Vec<Member> = (0..4).map(|_| member(MemberState::NotStarted)).collect();
        m[0].release = ended(ReleaseStatus::Interrupted, 10);
        assert_eq!(fleet_next(&waves(), &[0; 3], &m, &names(4), 20), FleetNext::Run { wave: 0 });
        let unresolved = ReleaseStatus::ActionUnresolved {
            action: crate::executor::ActionKind::Promote,
            plan_id: "p".into(),
            observed: "?".into(),
        };
        m[0].release = ended(unresolved, 10);
        assert_eq!(fleet_next(&waves(), &[0; 3], &m, &names(4), 20), FleetNext::Run { wave: 0 });
        m[0].release = ended(ReleaseStatus::Held { reason: "window ended".into() }, 10);
        let next = fleet_next(&waves(), &[0; 3], &m, &names(4), 20);
        assert!(matches!(next, FleetNext::Done(FleetEnd::Stopped { failed_wave: 0, .. })), "{next:?}");
    }
}
