//! Per-target leases with fencing, as pure decisions over the stored row.
//! The ledger applies them inside the same transaction as the record they
//! accompany, under the head lock, so two agents never both hold a target.

use super::record::{LeaseEvent, LeaseRole};

/// A lease row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// Holder's instance id.
    pub holder: String,
    /// Fencing token; grows by one at each change of holder.
    pub token: i64,
    /// Unix ms it lapses unless renewed.
    pub expires_ms: i64,
}

/// What an agent asks of a target's lease along with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    /// Take the lease if free or lapsed, renew it if ours.
    Claim {
        /// Target.
        target: String,
        /// Instance id.
        holder: String,
        /// How long it lasts from the record's time, ms.
        ttl_ms: i64,
    },
    /// Renew only if ours and the token is still `token` (during an action).
    Renew {
        /// Target.
        target: String,
        /// Instance id.
        holder: String,
        /// Token held.
        token: i64,
        /// How long it lasts from now, ms.
        ttl_ms: i64,
    },
    /// A holder's tick: renew if `holder` still holds `token` (lapsed or
    /// not, while nobody took it), else refuse the record — an agent that
    /// lost its seat (stopped past its lease) must not write a second tick
    /// record beside the new holder's.
    Keep {
        /// Target.
        target: String,
        /// Instance id.
        holder: String,
        /// Token held.
        token: i64,
        /// How long it lasts from now, ms.
        ttl_ms: i64,
    },
    /// Give the lease to `to` (the holder has more than its share): only if
    /// `holder` still holds `token`; the new holder gets a new token and a
    /// full lease, so it is counted as holding it at once (and if it never
    /// claims it, the lease lapses and another agent takes over).
    Hand {
        /// Target.
        target: String,
        /// Instance id.
        holder: String,
        /// Token held.
        token: i64,
        /// The agent given the lease.
        to: String,
        /// How long it lasts from now, ms.
        ttl_ms: i64,
    },
    /// The record is an intent: refuse it unless `holder` still holds `token`.
    Fence {
        /// Target.
        target: String,
        /// Instance id.
        holder: String,
        /// Token the intent carries.
        token: i64,
    },
    /// Give the lease back (the release finished): lapse it now if ours.
    Release {
        /// Target.
        target: String,
        /// Instance id.
        holder: String,
    },
}

impl LeaseOp {
    /// The target it concerns.
    pub fn target(&self) -> &str {
        match self {
            LeaseOp::Claim { target, .. }
            | LeaseOp::Renew { target, .. }
            | LeaseOp::Keep { target, .. }
            | LeaseOp::Hand { target, .. }
            | LeaseOp::Fence { target, .. }
            | LeaseOp::Release { target, .. } => target,
        }
    }
}

/// What applying an op decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStep {
    /// The row to store, when it changes.
    pub write: Option<LeaseRow>,
    /// A change of holder to record in the chain.
    pub event: Option<LeaseEvent>,
    /// The caller's role afterwards.
    pub role: LeaseRole,
    /// The accompanying record must not be written (a fenced intent refused).
    pub refuse: bool,
}

fn observer(row: &LeaseRow) -> LeaseRole {
    LeaseRole::Follower { holder: row.holder.clone(), token: row.token }
}

impl LeaseStep {
    /// The caller holds the lease under `token`, the row written as `write`.
    fn held(token: i64, write: LeaseRow, event: Option<LeaseEvent>) -> Self {
        LeaseStep { role: LeaseRole::Holder { token }, write: Some(write), event, refuse: false }
    }

    /// Nothing changes: the caller follows `row`'s holder.
    fn kept(row: &LeaseRow, refuse: bool) -> Self {
        LeaseStep { write: None, event: None, role: observer(row), refuse }
    }

    /// No lease exists, and none is made.
    fn none(refuse: bool) -> Self {
        LeaseStep { write: None, event: None, role: LeaseRole::Follower { holder: String::new(), token: 0 }, refuse }
    }
}

/// Decide `op` against the current row at `now_ms`.
pub fn apply(op: &LeaseOp, current: Option<&LeaseRow>, now_ms: i64) -> LeaseStep {
    match (op, current) {
        (LeaseOp::Claim { holder, ttl_ms, .. }, None) => {
            let row = LeaseRow { holder: holder.clone(), token: 1, expires_ms: now_ms + ttl_ms };
            LeaseStep::held(1, row, Some(LeaseEvent::Acquired))
        }
        (LeaseOp::Claim { holder, ttl_ms, .. }, Some(row)) if &row.holder == holder => {
            LeaseStep::held(row.token, LeaseRow { expires_ms: now_ms + ttl_ms, ..row.clone() }, None)
        }
        (LeaseOp::Claim { holder, ttl_ms, .. }, Some(row)) if row.expires_ms <= now_ms => {
            let token = row.token + 1;
            let event = LeaseEvent::TakenOver { from: row.holder.clone() };
            LeaseStep::held(token, LeaseRow { holder: holder.clone(), token, expires_ms: now_ms + ttl_ms }, Some(event))
        }
        (LeaseOp::Renew { holder, token, ttl_ms, .. } | LeaseOp::Keep { holder, token, ttl_ms, .. }, Some(row))
            if &row.holder == holder && row.token == *token =>
        {
            LeaseStep::held(*token, LeaseRow { expires_ms: now_ms + ttl_ms, ..row.clone() }, None)
        }
        (LeaseOp::Hand { holder, token, to, ttl_ms, .. }, Some(row))
            if &row.holder == holder && row.token == *token =>
        {
            let given = LeaseRow { holder: to.clone(), token: token + 1, expires_ms: now_ms + ttl_ms };
            let event = LeaseEvent::HandedOver { from: holder.clone() };
            LeaseStep { role: observer(&given), write: Some(given), event: Some(event), refuse: false }
        }
        (LeaseOp::Fence { holder, token, .. }, Some(row)) if &row.holder == holder && row.token == *token => {
            LeaseStep { role: LeaseRole::Holder { token: *token }, write: None, event: None, refuse: false }
        }
        (LeaseOp::Fence { .. } | LeaseOp::Keep { .. }, None) => LeaseStep::none(true),
        (LeaseOp::Release { holder, .. }, Some(row)) if &row.holder == holder => LeaseStep {
            write: Some(LeaseRow { expires_ms: now_ms.min(row.expires_ms), ..row.clone() }),
            event: None,
            role: observer(row),
            refuse: false,
        },
        (LeaseOp::Fence { .. } | LeaseOp::Keep { .. }, Some(row)) => LeaseStep::kept(row, true),
        (LeaseOp::Claim { .. } | LeaseOp::Renew { .. } | LeaseOp::Release { .. } | LeaseOp::Hand { .. }, Some(row)) => {
            LeaseStep::kept(row, false)
        }
        (LeaseOp::Renew { .. } | LeaseOp::Release { .. } | LeaseOp::Hand { .. }, None) => LeaseStep::none(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(h: &str) -> LeaseOp {
        LeaseOp::Claim { target: "t".into(), holder: h.into(), ttl_ms: 1000 }
    }

    fn row(h: &str, token: i64, expires_ms: i64) -> LeaseRow {
        LeaseRow { holder: h.into(), token, expires_ms }
    }

    #[test]
    fn first_claim_acquires_with_token_one() {
        let s = apply(&claim("a"), None, 0);
        assert_eq!(s.role, LeaseRole::Holder { token: 1 });
        assert_eq!(s.event, Some(LeaseEvent::Acquired));
    }

    #[test]
    fn a_live_lease_is_not_taken_and_a_lapsed_one_is_taken_with_a_larger_token() {
        let live = row("a", 4, 2000);
        assert_eq!(apply(&claim("b"), Some(&live), 1999).role, LeaseRole::Follower { holder: "a".into(), token: 4 });
        let s = apply(&claim("b"), Some(&live), 2000);
        assert_eq!(s.role, LeaseRole::Holder { token: 5 });
        assert_eq!(s.event, Some(LeaseEvent::TakenOver { from: "a".into() }));
    }

    #[test]
    fn the_holder_renews_without_a_new_token() {
        let s = apply(&claim("a"), Some(&row("a", 4, 10)), 500);
        assert_eq!(s.role, LeaseRole::Holder { token: 4 });
        assert_eq!(s.write, Some(row("a", 4, 1500)));
        assert_eq!(s.event, None);
    }

    #[test]
    fn an_intent_with_an_old_token_is_refused() {
        let fence = |h: &str, token| LeaseOp::Fence { target: "t".into(), holder: h.into(), token };
        assert!(apply(&fence("a", 4), Some(&row("b", 5, 0)), 0).refuse);
        assert!(apply(&fence("a", 4), Some(&row("a", 5, 0)), 0).refuse);
        assert!(apply(&fence("a", 4), None, 0).refuse);
        assert!(!apply(&fence("a", 4), Some(&row("a", 4, 0)), 0).refuse);
    }

    #[test]
    fn a_tick_keeps_its_own_lease_even_lapsed_and_is_refused_once_another_took_it() {
        let keep = |h: &str, token| LeaseOp::Keep { target: "t".into(), holder: h.into(), token, ttl_ms: 1000 };
        let lapsed = apply(&keep("a", 4), Some(&row("a", 4, 10)), 500);
        assert_eq!(
            (lapsed.role, lapsed.write, lapsed.refuse),
            (LeaseRole::Holder { token: 4 }, Some(row("a", 4, 1500)), false)
        );
        let taken = apply(&keep("a", 4), Some(&row("b", 5, 9000)), 500);
        assert!(taken.refuse && taken.write.is_none());
        assert_eq!(taken.role, LeaseRole::Follower { holder: "b".into(), token: 5 });
        assert!(apply(&keep("a", 4), Some(&row("a", 5, 9000)), 500).refuse, "our own later token is another seat");
        assert!(apply(&keep("a", 4), None, 500).refuse);
    }

    #[test]
    fn a_hand_over_gives_a_new_token_to_the_new_holder_only_from_the_holder_of_the_token() {
        let hand = |h: &str, token| LeaseOp::Hand {
            target: "t".into(),
            holder: h.into(),
            token,
            to: "b".into(),
            ttl_ms: 1000,
        };
        let s = apply(&hand("a", 4), Some(&row("a", 4, 900)), 500);
        assert_eq!(s.write, Some(row("b", 5, 1500)));
        assert_eq!(s.event, Some(LeaseEvent::HandedOver { from: "a".into() }));
        assert_eq!(s.role, LeaseRole::Follower { holder: "b".into(), token: 5 });
        // The new holder's own claim then renews it without another token.
        assert_eq!(apply(&claim("b"), s.write.as_ref(), 600).role, LeaseRole::Holder { token: 5 });
        assert_eq!(apply(&hand("a", 3), Some(&row("a", 4, 900)), 500).write, None, "an old token gives nothing");
        assert_eq!(apply(&hand("c", 4), Some(&row("a", 4, 900)), 500).write, None, "nor does another agent");
    }

    #[test]
    fn release_lapses_only_our_own_lease() {
        let rel = |h: &str| LeaseOp::Release { target: "t".into(), holder: h.into() };
        assert_eq!(apply(&rel("a"), Some(&row("a", 2, 900)), 100).write, Some(row("a", 2, 100)));
        assert_eq!(apply(&rel("b"), Some(&row("a", 2, 900)), 100).write, None);
    }
}
