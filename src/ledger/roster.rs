//! Agents sharing a ledger: who is alive, how many releases each may hold,
//! and who holds which target — what agents read to share the work
//! (`orchestrator::seat` decides on it). Heartbeats and lease rows are
//! mutable state beside the chain, never part of it.

use std::collections::HashMap;

use sqlx::Row;

use super::{LeaseRow, Ledger, LedgerError};

/// How this version shares releases with the agents on its ledger: 1 names a
/// release's lease by the resource its executor changes (`release::lease_name`).
/// Agents whose leases are named another way do not exclude each other, so
/// an agent refuses to start beside a live one of another kind
/// ([`Roster::other_kind`]).
pub const SHARING: i64 = 1;

/// One agent as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Instance id.
    pub instance: String,
    /// Releases it may hold at once (`agent.capacity`); `None`: no limit.
    pub capacity: Option<u32>,
    /// Unix ms of its last heartbeat.
    pub seen_ms: i64,
    /// Its [`SHARING`]; `None`: a version before it was written (leases named by target).
    pub sharing: Option<i64>,
}

/// Agents and leases as read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// Unix ms of the read.
    pub read_ms: i64,
    /// Every agent that ever reported (alive or not; see [`Roster::live`]).
    pub members: Vec<Member>,
    /// Lease rows live at the read, by target.
    pub leases: HashMap<String, LeaseRow>,
    /// Unlapsed leases per holder at `read_ms`.
    held: HashMap<String, usize>,
}

impl Roster {
    /// A roster from its parts (counts the unlapsed leases per holder).
    pub fn new(read_ms: i64, members: Vec<Member>, leases: HashMap<String, LeaseRow>) -> Self {
        let mut held = HashMap::new();
        for row in leases.values().filter(|r| r.expires_ms > read_ms) {
            *held.entry(row.holder.clone()).or_insert(0) += 1;
        }
        Self { read_ms, members, leases, held }
    }

    /// Members heard from within `ttl_ms` of `now_ms` (an agent silent for
    /// a lease's length is as good as gone: its leases lapse too).
    pub fn live(&self, now_ms: i64, ttl_ms: i64) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.seen_ms + ttl_ms > now_ms)
    }

    /// A live agent other than `me` that shares releases another way than
    /// this version (or an older version that did not say): its leases and
    /// ours would not exclude each other, so `me` must not start beside it.
    pub fn other_kind(&self, me: &str, now_ms: i64, ttl_ms: i64) -> Option<&Member> {
        self.live(now_ms, ttl_ms).find(|m| m.instance != me && m.sharing != Some(SHARING))
    }

    /// Live members that take releases: an acting `watch` heartbeats with
    /// capacity 0 (so agents see it), holds only its own and never counts in a share.
    pub fn working(&self, now_ms: i64, ttl_ms: i64) -> impl Iterator<Item = &Member> {
        self.live(now_ms, ttl_ms).filter(|m| m.capacity != Some(0))
    }

    /// `instance`'s heartbeat, if it ever wrote one.
    pub fn member(&self, instance: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.instance == instance)
    }

    /// Unlapsed leases `instance` held at the read.
    pub fn held_by(&self, instance: &str) -> usize {
        self.held.get(instance).copied().unwrap_or(0)
    }

    /// Unlapsed leases of every holder at the read.
    pub fn held_total(&self) -> usize {
        self.held.values().sum()
    }
}

/// A `ledger_agents` row.
fn member_row(r: &sqlx::any::AnyRow) -> Result<Member, sqlx::Error> {
    let capacity: Option<i64> = r.try_get("capacity")?;
    Ok(Member {
        instance: r.try_get("instance")?,
        capacity: capacity.map(|c| u32::try_from(c).unwrap_or(u32::MAX)),
        seen_ms: r.try_get("seen_ms")?,
        sharing: r.try_get("sharing")?,
    })
}

/// A `ledger_leases` row (its `holder`, `token` and `expires_ms` columns).
pub(super) fn lease_row(r: &sqlx::any::AnyRow) -> Result<LeaseRow, sqlx::Error> {
    Ok(LeaseRow { holder: r.try_get("holder")?, token: r.try_get("token")?, expires_ms: r.try_get("expires_ms")? })
}

impl Ledger {
    /// Say this agent is alive, with its capacity, at `now_ms`.
    pub async fn heartbeat(&self, instance: &str, capacity: Option<u32>, now_ms: i64) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO ledger_agents (instance, capacity, seen_ms, sharing) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (instance) DO UPDATE SET capacity = excluded.capacity, seen_ms = excluded.seen_ms, \
             sharing = excluded.sharing",
        )
        .bind(instance)
        .bind(capacity.map(i64::from))
        .bind(now_ms)
        .bind(SHARING)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Leave the roster now (a clean stop), so the others need not wait a lease to count this agent gone.
    pub async fn leave(&self, instance: &str) -> Result<(), LedgerError> {
        sqlx::query("DELETE FROM ledger_agents WHERE instance = $1").bind(instance).execute(self.pool()).await?;
        Ok(())
    }

    /// `instance`'s heartbeat as stored now.
    pub async fn member(&self, instance: &str) -> Result<Option<Member>, LedgerError> {
        let row = sqlx::query("SELECT instance, capacity, seen_ms, sharing FROM ledger_agents WHERE instance = $1")
            .bind(instance)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(member_row).transpose()?)
    }

    /// Every agent, and every lease row live at `now_ms`.
    pub async fn roster(&self, now_ms: i64) -> Result<Roster, LedgerError> {
        let rows = sqlx::query("SELECT instance, capacity, seen_ms, sharing FROM ledger_agents")
            .fetch_all(self.pool())
            .await?;
        let members = rows.iter().map(member_row).collect::<Result<Vec<_>, sqlx::Error>>()?;
        // Only leases live at `now_ms`: a lapsed one is read fresh when a standby looks at it,
        // and the table keeps a row for every target ever leased.
        let rows = sqlx::query("SELECT target, holder, token, expires_ms FROM ledger_leases WHERE expires_ms > $1")
            .bind(now_ms)
            .fetch_all(self.pool())
            .await?;
        let leases = rows
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("target")?, lease_row(r)?)))
            .collect::<Result<HashMap<_, _>, sqlx::Error>>()?;
        Ok(Roster::new(now_ms, members, leases))
    }

    /// Releases finished after `after_seq`, oldest first, at most `limit`: (seq, release id).
    pub async fn finished_after(&self, after_seq: i64, limit: i64) -> Result<Vec<(i64, String)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT seq, release_id FROM ledger_records WHERE kind = 'release_finished' AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("seq")?, r.try_get("release_id")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// The lease row of `target` as stored now.
    pub async fn lease(&self, target: &str) -> Result<Option<LeaseRow>, LedgerError> {
        let row = sqlx::query("SELECT holder, token, expires_ms FROM ledger_leases WHERE target = $1")
            .bind(target)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(lease_row).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(instance: &str, seen_ms: i64, sharing: Option<i64>) -> Member {
        Member { instance: instance.into(), capacity: None, seen_ms, sharing }
    }

    /// Only a live agent other than this one, of another kind (older: none
    /// written; newer: another number), keeps this one from starting.
    #[test]
    fn only_a_live_agent_of_another_kind_is_named() {
        let at = |members| Roster::new(10_000, members, HashMap::new());
        let same = at(vec![member("me", 9_000, None), member("peer", 9_500, Some(SHARING))]);
        assert_eq!(same.other_kind("me", 10_000, 5_000), None, "this one's own stale row and a peer of its kind");
        let gone = at(vec![member("old", 4_000, None)]);
        assert_eq!(gone.other_kind("me", 10_000, 5_000), None, "silent past a lease");
        for sharing in [None, Some(SHARING + 1)] {
            let mixed = at(vec![member("peer", 9_500, Some(SHARING)), member("other", 6_000, sharing)]);
            assert_eq!(
                mixed.other_kind("me", 10_000, 5_000).map(|m| m.instance.as_str()),
                Some("other"),
                "{sharing:?}"
            );
        }
    }
}
