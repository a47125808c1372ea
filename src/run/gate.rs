//! The gate's state: what rollout engines (Argo Rollouts, Flagger) are told
//! about each release, kept current by every tick and every ending. Pure
//! tables ([`gate_verdict`], [`gate_answer`], [`ended_verdict`]) and a
//! board; the HTTP side (contracts, status codes) is `crate::serve`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::orchestrator::fleet::MemberState;
use crate::orchestrator::human::OperatorState;
use crate::orchestrator::{Observer, TickReport};
use crate::policy::Decision;
use crate::release::ReleaseStatus;
use crate::run::fleet::{FleetNow, FleetPhase, FleetSummary, MemberView};

/// What the gate tells a rollout engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// Policy promotes.
    Pass,
    /// Policy rolls back.
    Fail,
    /// Policy continues and the window is still running.
    Running,
    /// Policy holds, asks a human, or denies (or the revision asked about is not
    /// the one judged): the engine should pause, neither promote nor roll back.
    Inconclusive,
}

/// Policy's decision as a gate verdict. `window_running`: the analysis
/// window has not ended yet.
pub fn gate_verdict(decision: &Decision, window_running: bool) -> GateVerdict {
    match decision {
        Decision::Rollback { .. } => GateVerdict::Fail,
        Decision::Promote => GateVerdict::Pass,
        Decision::Continue if window_running => GateVerdict::Running,
        Decision::Continue | Decision::Hold { .. } | Decision::RequireApproval { .. } | Decision::Deny { .. } => {
            GateVerdict::Inconclusive
        }
    }
}

/// Where the release a gate answers for stands, beyond its last tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum GatePhase {
    /// Being judged: the answer follows policy's decision at the last tick.
    #[default]
    Judging,
    /// An operator holds it: judged, never advanced.
    Held,
    /// It ended (policy, a person's answer, an abort, an expiry): the answer follows how.
    Ended {
        /// How it ended.
        status: Box<ReleaseStatus>,
    },
    /// It could not run (a broken configuration or backend).
    Failed,
}

/// The answer for a release in `phase` whose last tick decided `decision`:
/// the release's real state to its end, never `running` or `pass` for a
/// release a person or policy stopped.
pub fn gate_answer(decision: &Decision, window_running: bool, phase: &GatePhase) -> GateVerdict {
    match phase {
        GatePhase::Judging => gate_verdict(decision, window_running),
        GatePhase::Held | GatePhase::Failed => GateVerdict::Inconclusive,
        GatePhase::Ended { status } => ended_verdict(status),
    }
}

/// The verdict of an ended release. A failed or unverified rollback is
/// still a rollback policy decided (the engine should roll back too); a
/// promotion that did not take is a pause; every stop by a person is a pause.
pub fn ended_verdict(status: &ReleaseStatus) -> GateVerdict {
    use crate::executor::ActionKind;
    match status {
        ReleaseStatus::Promoted => GateVerdict::Pass,
        ReleaseStatus::RolledBack => GateVerdict::Fail,
        ReleaseStatus::ActionNotVerified { action, .. }
        | ReleaseStatus::ActionFailed { action, .. }
        | ReleaseStatus::ActionUnresolved { action, .. } => match action {
            ActionKind::Rollback => GateVerdict::Fail,
            ActionKind::Promote | ActionKind::Raise { .. } => GateVerdict::Inconclusive,
        },
        ReleaseStatus::Recommended { decision, .. } => gate_verdict(decision, false),
        ReleaseStatus::AwaitingApproval { .. }
        | ReleaseStatus::Held { .. }
        | ReleaseStatus::Denied { .. }
        | ReleaseStatus::Interrupted
        | ReleaseStatus::Aborted { .. } => GateVerdict::Inconclusive,
    }
}

/// What the gate answers for a fleet release as a whole: its end once it
/// has one, `running` while waves run or bake; a failed wave is a `fail`
/// from the moment it failed, so no engine goes on while earlier waves are reverted.
pub fn fleet_verdict(phase: FleetPhase) -> GateVerdict {
    match phase {
        FleetPhase::Promoted => GateVerdict::Pass,
        FleetPhase::Stopped | FleetPhase::Reverting => GateVerdict::Fail,
        FleetPhase::Running | FleetPhase::Baking => GateVerdict::Running,
        FleetPhase::Interrupted => GateVerdict::Inconclusive,
    }
}

/// Why the fleet, not the member's own last tick, answers for a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum FleetOverride {
    /// Its wave has not started: it waits.
    WaitsForItsWave,
    /// An earlier wave failed: its wave never starts.
    WaveNeverStarts,
    /// The fleet stopped and its promotion is being reverted.
    Reverting,
    /// The fleet stopped and its promotion was reverted (or held): the revert's end.
    Reverted,
    /// The fleet's process stopped before its wave started.
    Interrupted,
}

/// The answer for member `m` of a fleet at `phase`, when the fleet decides
/// it; `None` leaves it to the member's own release (judged, or ended as it ended).
pub fn fleet_member_verdict(m: &MemberView, phase: FleetPhase) -> Option<(GateVerdict, FleetOverride)> {
    match (&m.release, &m.revert) {
        (_, MemberState::Ended { status, .. }) => Some((ended_verdict(status), FleetOverride::Reverted)),
        (_, MemberState::Unfinished) => Some((GateVerdict::Inconclusive, FleetOverride::Reverting)),
        (MemberState::NotStarted, MemberState::NotStarted) => Some(match phase {
            FleetPhase::Running | FleetPhase::Baking => (GateVerdict::Running, FleetOverride::WaitsForItsWave),
            FleetPhase::Stopped | FleetPhase::Reverting => (GateVerdict::Fail, FleetOverride::WaveNeverStarts),
            FleetPhase::Promoted | FleetPhase::Interrupted => (GateVerdict::Inconclusive, FleetOverride::Interrupted),
        }),
        (MemberState::Unfinished | MemberState::Ended { .. }, MemberState::NotStarted) => None,
    }
}

/// What a gate answers for a fleet release as one thing.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FleetGateView {
    /// The fleet's name.
    pub release: String,
    /// The revision its members release.
    pub revision: String,
    /// What the engine should do.
    pub verdict: GateVerdict,
    /// One line: where the fleet stands.
    pub summary: String,
    /// The fleet with its waves.
    pub fleet: FleetSummary,
}

impl FleetGateView {
    /// The answer for `f`.
    pub fn of(f: &FleetNow) -> Self {
        let summary = f.summary();
        let wave = summary.wave.map(|w| format!(" at wave {w}")).unwrap_or_default();
        let why = summary.why.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
        Self {
            release: summary.name.clone(),
            revision: f.revision.clone(),
            verdict: fleet_verdict(f.phase),
            summary: format!("fleet {}{wave}{why}", f.phase),
            fleet: summary,
        }
    }
}

/// What a gate answers for one release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GateView {
    /// Release name.
    pub release: String,
    /// The revision this answer is about.
    pub revision: String,
    /// What the engine should do, from policy's decision.
    pub verdict: GateVerdict,
    /// Policy's decision at the last tick, with its reason.
    pub decision: Decision,
    /// Release time of the last tick, seconds.
    pub now_s: u64,
    /// Window length, seconds.
    pub duration_s: u64,
    /// The judge's one-line summary.
    pub summary: String,
    /// Metrics failing now.
    pub failing: Vec<String>,
    /// Guards that fired (canary or shared breach), with where and when.
    #[serde(default)]
    pub guard_hits: Vec<crate::judge::GuardNote>,
    /// Judging, held by an operator, or ended (and how).
    #[serde(flatten)]
    pub phase: GatePhase,
}

/// The latest answer for every served release.
#[derive(Clone, Default)]
pub struct GateBoard {
    views: Arc<Mutex<HashMap<String, GateView>>>,
}

impl GateView {
    /// `release` (about `revision`) before any tick: `verdict`, saying `summary`.
    pub fn untouched(release: &str, revision: &str, verdict: GateVerdict, summary: String) -> Self {
        GateView {
            release: release.into(),
            revision: revision.into(),
            verdict,
            decision: Decision::Continue,
            now_s: 0,
            duration_s: 0,
            summary,
            failing: vec![],
            guard_hits: vec![],
            phase: GatePhase::Judging,
        }
    }
}

impl GateBoard {
    /// Register `release` (judging `revision`) before its first tick, so the gate answers `running`.
    pub fn register(&self, release: &str, revision: &str, duration_s: u64) {
        let view = GateView {
            duration_s,
            ..GateView::untouched(release, revision, GateVerdict::Running, "analysis starting".into())
        };
        self.lock().insert(release.into(), view);
    }

    /// An operator held, resumed or aborted `release`: a hold or an abort
    /// pauses the engine at once (an abort's end follows with [`GateBoard::ended`]).
    pub fn operator(&self, release: &str, state: OperatorState) {
        let mut views = self.lock();
        let Some(view) = views.get_mut(release).filter(|v| !matches!(v.phase, GatePhase::Ended { .. })) else {
            return;
        };
        view.phase = match state {
            OperatorState::Running => GatePhase::Judging,
            OperatorState::Held | OperatorState::Aborted => GatePhase::Held,
        };
        view.verdict = gate_answer(&view.decision, view.now_s < view.duration_s, &view.phase);
    }

    /// `release` judging `revision` ended with `status` (or, `None`, could not run).
    pub fn ended(&self, release: &str, revision: &str, status: Option<&ReleaseStatus>) {
        let mut views = self.lock();
        let Some(view) = views.get_mut(release).filter(|v| v.revision == revision) else { return };
        view.phase = match status {
            Some(s) => GatePhase::Ended { status: Box::new(s.clone()) },
            None => GatePhase::Failed,
        };
        view.verdict = gate_answer(&view.decision, false, &view.phase);
        if let Some(s) = status {
            view.summary = format!("release ended: {}", s.label());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, GateView>> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current view of `release`.
    pub fn get(&self, release: &str) -> Option<GateView> {
        self.lock().get(release).cloned()
    }

    /// An observer that keeps this board's entry for `release` current
    /// while it judges `revision` (not after another revision took over).
    pub fn observer(&self, release: &str, revision: &str) -> GateObserver {
        GateObserver { board: self.clone(), release: release.into(), revision: revision.into() }
    }
}

/// Updates a [`GateBoard`] at every tick.
pub struct GateObserver {
    board: GateBoard,
    release: String,
    revision: String,
}

impl Observer for GateObserver {
    fn on_tick(&mut self, t: &TickReport<'_>) {
        let mut views = self.board.lock();
        let Some(view) = views.get_mut(&self.release).filter(|v| v.revision == self.revision) else { return };
        view.verdict = gate_answer(&t.outcome.decision, t.now_s < t.duration_s, &view.phase);
        view.decision = t.outcome.decision.clone();
        view.now_s = t.now_s;
        view.duration_s = t.duration_s;
        view.summary = t.judge.summary.clone();
        view.failing = t.judge.failing().map(|f| f.metric.clone()).collect();
        view.guard_hits = t.judge.guard_notes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(release: MemberState, revert: MemberState) -> MemberView {
        MemberView { name: "eu-1".into(), target: "t".into(), wave: 1, release, revert }
    }

    fn ended(status: ReleaseStatus) -> MemberState {
        MemberState::Ended { status: Box::new(status), at_ms: 1 }
    }

    #[test]
    fn a_fleet_answers_for_itself_and_a_failed_wave_is_a_fail_while_earlier_ones_revert() {
        assert_eq!(fleet_verdict(FleetPhase::Promoted), GateVerdict::Pass);
        assert_eq!(fleet_verdict(FleetPhase::Reverting), GateVerdict::Fail);
        assert_eq!(fleet_verdict(FleetPhase::Stopped), GateVerdict::Fail);
        assert_eq!(fleet_verdict(FleetPhase::Baking), GateVerdict::Running);
        assert_eq!(fleet_verdict(FleetPhase::Interrupted), GateVerdict::Inconclusive);
    }

    #[test]
    fn a_member_the_fleet_stopped_or_reverted_is_never_answered_by_its_own_promotion() {
        let promoted = || ended(ReleaseStatus::Promoted);
        let reverted = member(promoted(), ended(ReleaseStatus::RolledBack));
        assert_eq!(
            fleet_member_verdict(&reverted, FleetPhase::Stopped),
            Some((GateVerdict::Fail, FleetOverride::Reverted))
        );
        let held = member(promoted(), ended(ReleaseStatus::Held { reason: "hold".into() }));
        assert_eq!(fleet_member_verdict(&held, FleetPhase::Stopped).map(|v| v.0), Some(GateVerdict::Inconclusive));
        let reverting = member(promoted(), MemberState::Unfinished);
        assert_eq!(
            fleet_member_verdict(&reverting, FleetPhase::Reverting).map(|v| v.0),
            Some(GateVerdict::Inconclusive)
        );
        let later = member(MemberState::NotStarted, MemberState::NotStarted);
        assert_eq!(
            fleet_member_verdict(&later, FleetPhase::Stopped),
            Some((GateVerdict::Fail, FleetOverride::WaveNeverStarts))
        );
        assert_eq!(fleet_member_verdict(&later, FleetPhase::Baking).map(|v| v.0), Some(GateVerdict::Running));
        // Its own release decides while it runs and after it ended, unless reverted.
        assert_eq!(
            fleet_member_verdict(&member(MemberState::Unfinished, MemberState::NotStarted), FleetPhase::Running),
            None
        );
        assert_eq!(fleet_member_verdict(&member(promoted(), MemberState::NotStarted), FleetPhase::Baking), None);
    }
}
