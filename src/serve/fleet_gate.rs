//! The gate for fleet releases: `/v1/gates/{fleet}` answers for the fleet
//! as one thing, and a member's gate follows the fleet where the fleet
//! decides for it — a wave that never starts after an earlier one failed
//! is a `fail`, a promotion the fleet reverted ends as its revert ended —
//! so an engine per cluster never goes on with a revision the fleet stopped.

use axum::Json;
use axum::response::{IntoResponse, Response};

use super::{Contract, GateState};
use crate::ledger::LedgerError;
use crate::orchestrator::fleet::MemberState;
use crate::release::FleetPlan;
use crate::run::fleet::FleetNow;
use crate::run::gate::{FleetGateView, FleetOverride, GateVerdict, GateView, ended_verdict, fleet_member_verdict};

/// `name` as a fleet or a fleet's member, as the ledger shows it now.
pub(super) enum FleetPart {
    /// The fleet itself.
    Whole(FleetNow),
    /// Member `usize` (an index into the fleet's members).
    Member(FleetNow, usize),
}

/// Whether `name` is a configured fleet or one of its members; `None`:
/// neither (no ledger read then). Only that fleet is read from the ledger.
pub(super) async fn fleet_part(g: &GateState, name: &str) -> Option<Result<FleetPart, LedgerError>> {
    let rt = g.agent.as_ref()?.runtime();
    let plans = rt.settings.fleet_plans().unwrap_or_default();
    let member = |p: &FleetPlan| p.waves.iter().flatten().position(|&i| rt.settings.releases[i].name == name);
    let (plan, m) =
        plans.iter().find_map(|p| if p.name == name { Some((p, None)) } else { member(p).map(|m| (p, Some(m))) })?;
    Some(rt.fleet_now(plan).await.map(|f| match m {
        None => FleetPart::Whole(f),
        Some(m) => FleetPart::Member(f, m),
    }))
}

/// What a person reads for `o`.
fn says(o: FleetOverride, f: &FleetNow) -> String {
    let at = f.wave.map(|w| format!(" at wave {w}")).unwrap_or_default();
    let fleet = &f.outcome.name;
    match o {
        FleetOverride::WaitsForItsWave => format!("fleet {fleet} is {}{at}: this member waits for its wave", f.phase),
        FleetOverride::WaveNeverStarts => format!("fleet {fleet} stopped{at}: this member's wave never starts"),
        FleetOverride::Reverting => format!("fleet {fleet} stopped{at}: this member's promotion is being reverted"),
        FleetOverride::Reverted => format!("fleet {fleet} stopped{at}: this member's promotion was reverted"),
        FleetOverride::Interrupted => format!("fleet {fleet} was interrupted before this member's wave"),
    }
}

/// Member `m`'s answer: the fleet's where it decides, else `own` (this
/// agent's board), else how the ledger shows the member.
pub(super) fn member_view(f: &FleetNow, m: usize, own: Option<GateView>) -> GateView {
    let member = &f.outcome.members[m];
    if let Some((verdict, why)) = fleet_member_verdict(member, f.phase) {
        let base = own.unwrap_or_else(|| GateView::untouched(&member.name, &f.revision, verdict, String::new()));
        return GateView { verdict, summary: says(why, f), failing: vec![], ..base };
    }
    own.unwrap_or_else(|| {
        let (verdict, summary) = match &member.release {
            MemberState::Ended { status, .. } => (ended_verdict(status), format!("ended {}", status.label())),
            MemberState::Unfinished | MemberState::NotStarted => {
                (GateVerdict::Inconclusive, "judged by another agent sharing the ledger".into())
            }
        };
        GateView::untouched(&member.name, &f.revision, verdict, summary)
    })
}

/// The fleet's own answer; asked about another revision, a pause.
pub(super) fn whole(f: &FleetNow, asked: Option<&str>, contract: Contract) -> Response {
    let mut view = FleetGateView::of(f);
    if let Some(asked) = asked.filter(|r| *r != f.revision) {
        view.summary =
            format!("revision {asked} is not the one fleet {} releases ({}): pausing", view.release, f.revision);
        view.revision = asked.into();
        view.verdict = GateVerdict::Inconclusive;
    }
    (contract.status(view.verdict), Json(view)).into_response()
}

/// The ledger could not be read: a pause, saying why.
pub(super) fn unreadable(name: &str, why: &LedgerError, contract: Contract) -> Response {
    let why = crate::error::chain(why);
    let summary = format!("the ledger cannot be read, so fleet {name} cannot be answered for: pausing; {why}");
    let view = GateView::untouched(name, "", GateVerdict::Inconclusive, summary);
    (contract.status(GateVerdict::Inconclusive), Json(view)).into_response()
}
