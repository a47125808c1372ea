//! Who runs which release when several agents share a ledger, as pure
//! decisions over the roster (`ledger::roster`) and the target's lease row.
//!
//! Each release ranks the agents by rendezvous hashing (a score of the
//! lease's name and the agent's id), so every agent computes the same order
//! without talking, releases spread evenly, and an agent joining or leaving
//! moves only the releases whose first choice it is. A lease free or lapsed
//! is claimed at once by the first-ranked live agent with room; the next
//! ranked waits one check each, so a release whose first choice does not run
//! it (another configuration, or no room) is still taken. A holder with more
//! than its even share gives a quiet release back to the agent ranked above
//! it — which keeps it, being first — so claims never flap. The lease is
//! handed over directly (counted as the receiver's at once, so no agent
//! over-sheds while the receiver wakes), and lapses as usual if the receiver
//! never takes it up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use sha2::{Digest, Sha256};

use crate::ledger::{LeaseRow, Roster};

/// What a release not held by this agent does at a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standby {
    /// Claim the lease now.
    Claim,
    /// Leave it for now.
    Wait(Waiting),
}

/// Why a standby waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// A live lease is held by this agent (`holder`).
    Held {
        /// Instance id.
        holder: String,
    },
    /// Agents ranked above this one may claim it first.
    Ranked {
        /// This agent's place (0 would claim).
        rank: usize,
    },
    /// This agent holds as many releases as its capacity.
    Full,
}

/// What the holder of a release does after a quiet tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// Keep judging it.
    Keep,
    /// Hand the lease over: `to` ranks first for it and has fewer releases.
    Shed {
        /// The agent expected to claim it.
        to: String,
    },
}

/// One standby check's inputs.
#[derive(Debug, Clone)]
pub struct StandbyView<'a> {
    /// This agent.
    pub me: &'a str,
    /// The lease's name (its target).
    pub lease: &'a str,
    /// The lease row as stored now.
    pub row: Option<&'a LeaseRow>,
    /// The roster, when this agent shares work (`None`: a lone `watch`, which claims whenever free).
    pub roster: Option<&'a Roster>,
    /// Releases this agent holds now.
    pub held: usize,
    /// This agent's capacity.
    pub capacity: Option<u32>,
    /// Unix ms now.
    pub now_ms: i64,
    /// Unix ms since when the lease has been free (its lapse, or when this agent first saw it unheld).
    pub free_since_ms: i64,
    /// Ms between two standby checks: the delay each rank adds.
    pub check_ms: i64,
    /// Lease length, ms: an agent silent this long is counted gone.
    pub ttl_ms: i64,
}

/// The standby decision.
pub fn standby(v: &StandbyView<'_>) -> Standby {
    if let Some(row) = v.row
        && row.expires_ms > v.now_ms
    {
        return if row.holder == v.me {
            Standby::Claim
        } else {
            Standby::Wait(Waiting::Held { holder: row.holder.clone() })
        };
    }
    if v.capacity.is_some_and(|c| v.held >= c as usize) {
        return Standby::Wait(Waiting::Full);
    }
    let Some(roster) = v.roster else { return Standby::Claim };
    let lapsed = v.row.map(|r| r.holder.as_str());
    let mut ranked: Vec<(bool, u64, &str)> = roster
        .live(v.now_ms, v.ttl_ms)
        .filter(|m| m.instance != v.me && has_room(roster, &m.instance, m.capacity))
        .map(|m| (Some(m.instance.as_str()) == lapsed, score(v.lease, &m.instance), m.instance.as_str()))
        .collect();
    ranked.push((Some(v.me) == lapsed, score(v.lease, v.me), v.me));
    // A lapsed holder comes last: it stopped renewing (or gave the release away).
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2)));
    let rank = ranked.iter().position(|r| r.2 == v.me).unwrap_or(0);
    let waited = v.now_ms - v.free_since_ms;
    if waited >= rank as i64 * v.check_ms.max(1) { Standby::Claim } else { Standby::Wait(Waiting::Ranked { rank }) }
}

/// One holder check's inputs.
#[derive(Debug, Clone)]
pub struct HoldingView<'a> {
    /// This agent.
    pub me: &'a str,
    /// The lease's name.
    pub lease: &'a str,
    /// The roster, when this agent shares work.
    pub roster: Option<&'a Roster>,
    /// Releases this agent holds now.
    pub held: usize,
    /// Unix ms now.
    pub now_ms: i64,
    /// Lease length, ms.
    pub ttl_ms: i64,
    /// The tick was quiet: policy goes on, nothing failing, nobody asked or holding it.
    pub quiet: bool,
}

/// The holder decision.
pub fn holding(v: &HoldingView<'_>) -> Holding {
    let Some(roster) = v.roster.filter(|_| v.quiet) else { return Holding::Keep };
    let live: Vec<_> = roster.working(v.now_ms, v.ttl_ms).collect();
    if live.is_empty() {
        return Holding::Keep;
    }
    let fair = roster.held_total().div_ceil(live.len().max(1));
    if v.held <= fair {
        return Holding::Keep;
    }
    let mine = score(v.lease, v.me);
    let first = live
        .iter()
        .filter(|m| m.instance != v.me && has_room(roster, &m.instance, m.capacity))
        .max_by(|a, b| score(v.lease, &a.instance).cmp(&score(v.lease, &b.instance)).then(b.instance.cmp(&a.instance)));
    match first {
        Some(m) if score(v.lease, &m.instance) > mine && roster.held_by(&m.instance) + 1 < v.held => {
            Holding::Shed { to: m.instance.clone() }
        }
        Some(_) | None => Holding::Keep,
    }
}

/// The holder a standby waits on, if it knows one.
pub fn holder_of(waiting: &Waiting) -> Option<&str> {
    match waiting {
        Waiting::Held { holder } => Some(holder),
        Waiting::Ranked { .. } | Waiting::Full => None,
    }
}

fn has_room(roster: &Roster, instance: &str, capacity: Option<u32>) -> bool {
    capacity.is_none_or(|c| roster.held_by(instance) < c as usize)
}

/// The rendezvous score of `instance` for `lease`: the same in every agent and version.
fn score(lease: &str, instance: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(lease.as_bytes());
    h.update([0]);
    h.update(instance.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// This agent's share of the work: its capacity, how many releases it holds,
/// and the roster as last read (refreshed by the agent, read by every loop).
#[derive(Debug)]
pub struct Seats {
    /// Releases it may hold at once.
    pub capacity: Option<u32>,
    held: AtomicUsize,
    /// Releases it may still give back before the next roster read.
    shed_budget: AtomicUsize,
    roster: RwLock<Option<Arc<Roster>>>,
    /// Releases another agent finished, as read from the ledger since this agent started.
    finished: RwLock<HashSet<String>>,
    /// Standbys by lease name, woken when a roster read shows the lease handed to this agent.
    standbys: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl Seats {
    /// No releases held and no roster read yet.
    pub fn new(capacity: Option<u32>) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            held: AtomicUsize::new(0),
            shed_budget: AtomicUsize::new(0),
            roster: RwLock::new(None),
            finished: RwLock::new(HashSet::new()),
            standbys: Default::default(),
        })
    }

    /// Releases held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The roster as last read.
    pub fn roster(&self) -> Option<Arc<Roster>> {
        self.roster.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A new read of the roster by `me`: it also sets how many releases
    /// `me` may give back before the next read — a quarter of its excess
    /// over an even share — so newcomers receive releases over a few reads,
    /// never in one flood.
    pub fn set_roster(&self, roster: Roster, me: &str, ttl_ms: i64) {
        let live = roster.working(roster.read_ms, ttl_ms).count().max(1);
        let fair = roster.held_total().div_ceil(live);
        let excess = roster.held_by(me).saturating_sub(fair);
        self.shed_budget.store(excess.div_ceil(4), Ordering::Relaxed);
        {
            let standbys = self.standbys.lock().unwrap_or_else(PoisonError::into_inner);
            let handed = roster.leases.iter().filter(|(_, row)| row.holder == me);
            for wake in handed.filter_map(|(lease, _)| standbys.get(lease)) {
                wake.notify_one();
            }
        }
        *self.roster.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(roster));
    }

    /// A standby on `lease` waits on this: woken when the lease is handed to this agent.
    pub fn standing_by(&self, lease: &str) -> Arc<tokio::sync::Notify> {
        let mut standbys = self.standbys.lock().unwrap_or_else(PoisonError::into_inner);
        standbys.entry(lease.to_string()).or_default().clone()
    }

    /// The standby on `lease` ended (it claimed the lease, or its release ended).
    pub fn stood_down(&self, lease: &str) {
        self.standbys.lock().unwrap_or_else(PoisonError::into_inner).remove(lease);
    }

    /// Note releases finished (read from the ledger by the agent).
    pub fn add_finished(&self, ids: impl IntoIterator<Item = String>) {
        self.finished.write().unwrap_or_else(PoisonError::into_inner).extend(ids);
    }

    /// Whether `release_id` was seen finished; forgotten once asked, as only its own loop asks.
    pub fn finished(&self, release_id: &str) -> bool {
        self.finished.write().unwrap_or_else(PoisonError::into_inner).remove(release_id)
    }

    /// Take one release's worth of the giving-back budget; false when spent.
    pub fn take_shed(&self) -> bool {
        self.shed_budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_ok()
    }

    /// Count a lease just taken; the seat is counted until dropped.
    pub fn seat(self: &Arc<Self>) -> Seat {
        self.held.fetch_add(1, Ordering::Relaxed);
        Seat { seats: self.clone() }
    }
}

/// One release held by this agent: counted in [`Seats::held`] while it lives.
#[derive(Debug)]
pub struct Seat {
    seats: Arc<Seats>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.seats.held.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;
    use crate::ledger::Member;

    fn member(i: &str, capacity: Option<u32>, seen_ms: i64) -> Member {
        Member { instance: i.into(), capacity, seen_ms, sharing: Some(crate::ledger::SHARING) }
    }

    fn roster(members: Vec<Member>, leases: &[(&str, &str, i64)]) -> Roster {
        let leases: HashMap<String, LeaseRow> = leases
            .iter()
            .map(|(t, h, e)| (t.to_string(), LeaseRow { holder: h.to_string(), token: 1, expires_ms: *e }))
            .collect();
        Roster::new(1_000, members, leases)
    }

    fn view<'a>(me: &'a str, lease: &'a str, row: Option<&'a LeaseRow>, r: Option<&'a Roster>) -> StandbyView<'a> {
        StandbyView {
            me,
            lease,
            row,
            roster: r,
            held: 0,
            capacity: None,
            now_ms: 1_000,
            free_since_ms: 1_000,
            check_ms: 100,
            ttl_ms: 500,
        }
    }

    /// Which of `agents` claims each of `n` fresh releases at once.
    fn first_claims(agents: &[&str], r: &Roster, n: usize) -> BTreeMap<String, usize> {
        let mut count = BTreeMap::new();
        for i in 0..n {
            let lease = format!("target-{i}");
            let claimers: Vec<_> =
                agents.iter().filter(|a| standby(&view(a, &lease, None, Some(r))) == Standby::Claim).collect();
            assert_eq!(claimers.len(), 1, "exactly one agent claims {lease} at once: {claimers:?}");
            *count.entry(claimers[0].to_string()).or_insert(0) += 1;
        }
        count
    }

    #[test]
    fn fresh_releases_spread_evenly_and_exactly_one_agent_claims_each_at_once() {
        let r = roster(vec![member("a", None, 900), member("b", None, 900), member("c", None, 900)], &[]);
        let count = first_claims(&["a", "b", "c"], &r, 3000);
        for (agent, n) in &count {
            assert!((850..=1150).contains(n), "{agent} claims {n} of 3000: {count:?}");
        }
    }

    #[test]
    fn a_live_lease_is_left_to_its_holder_and_a_lone_watch_claims_whenever_free() {
        let row = LeaseRow { holder: "b".into(), token: 3, expires_ms: 1_001 };
        assert_eq!(standby(&view("a", "t", Some(&row), None)), Standby::Wait(Waiting::Held { holder: "b".into() }));
        assert_eq!(standby(&view("b", "t", Some(&row), None)), Standby::Claim, "its own live lease is renewed");
        let lapsed = LeaseRow { expires_ms: 1_000, ..row };
        assert_eq!(standby(&view("a", "t", Some(&lapsed), None)), Standby::Claim);
    }

    #[test]
    fn the_next_ranked_claims_one_check_later_and_a_full_agent_never() {
        let r = roster(vec![member("a", None, 900), member("b", None, 900)], &[]);
        let lease = (0..).map(|i| format!("t{i}")).find(|l| standby(&view("b", l, None, Some(&r))) != Standby::Claim);
        let lease = lease.unwrap();
        assert_eq!(standby(&view("b", &lease, None, Some(&r))), Standby::Wait(Waiting::Ranked { rank: 1 }));
        let later = StandbyView { free_since_ms: 900, ..view("b", &lease, None, Some(&r)) };
        assert_eq!(standby(&later), Standby::Claim, "a first choice that never claims is replaced after one check");
        let full = StandbyView { held: 2, capacity: Some(2), ..later };
        assert_eq!(standby(&full), Standby::Wait(Waiting::Full));
    }

    #[test]
    fn agents_silent_past_the_lease_or_full_are_skipped_and_a_lapsed_holder_comes_last() {
        // "a" is gone (silent), "c" is full: "b" is first for every lease.
        let r = roster(
            vec![member("a", None, 400), member("b", None, 900), member("c", Some(1), 900)],
            &[("x", "c", 5_000)],
        );
        for i in 0..50 {
            assert_eq!(standby(&view("b", &format!("t{i}"), None, Some(&r))), Standby::Claim);
        }
        // The holder that gave "t" back ranks after every other live agent with room.
        let r = roster(vec![member("a", None, 900), member("b", None, 900)], &[]);
        let gave = LeaseRow { holder: "a".into(), token: 2, expires_ms: 1_000 };
        for i in 0..50 {
            let t = format!("t{i}");
            assert_eq!(standby(&view("b", &t, Some(&gave), Some(&r))), Standby::Claim);
            assert_eq!(standby(&view("a", &t, Some(&gave), Some(&r))), Standby::Wait(Waiting::Ranked { rank: 1 }));
        }
    }

    #[test]
    fn a_holder_over_its_share_gives_back_only_to_the_first_ranked_and_never_flaps() {
        // "a" holds 10, "b" just joined with none.
        let leases: Vec<(String, String, i64)> = (0..10).map(|i| (format!("t{i}"), "a".to_string(), 5_000)).collect();
        let borrowed: Vec<(&str, &str, i64)> = leases.iter().map(|(t, h, e)| (t.as_str(), h.as_str(), *e)).collect();
        let r = roster(vec![member("a", None, 900), member("b", None, 900)], &borrowed);
        let decide = |me: &str, lease: &str, held, quiet| {
            holding(&HoldingView { me, lease, roster: Some(&r), held, now_ms: 1_000, ttl_ms: 500, quiet })
        };
        let shed: Vec<_> =
            (0..10).map(|i| format!("t{i}")).filter(|t| decide("a", t, 10, true) != Holding::Keep).collect();
        assert!(!shed.is_empty() && shed.len() < 10, "{shed:?}");
        for t in &shed {
            assert_eq!(decide("a", t, 10, true), Holding::Shed { to: "b".into() });
            assert_eq!(decide("a", t, 10, false), Holding::Keep, "only a quiet tick gives a release back");
            assert_eq!(decide("a", t, 5, true), Holding::Keep, "never below an even share");
            // "b" ranks first for it: holding it, "b" never gives it back to "a".
            assert_eq!(decide("b", t, 10, true), Holding::Keep);
        }
    }

    #[test]
    fn seats_count_held_releases_until_dropped_and_budget_what_is_given_back() {
        let seats = Seats::new(Some(3));
        let (one, two) = (seats.seat(), seats.seat());
        assert_eq!(seats.held(), 2);
        drop(one);
        assert_eq!(seats.held(), 1);
        drop(two);
        let leases: Vec<(String, String, i64)> = (0..6).map(|i| (format!("t{i}"), "a".to_string(), 5_000)).collect();
        let borrowed: Vec<(&str, &str, i64)> = leases.iter().map(|(t, h, e)| (t.as_str(), h.as_str(), *e)).collect();
        seats.set_roster(roster(vec![member("a", None, 900), member("b", None, 900)], &borrowed), "a", 500);
        let taken = (0..10).filter(|_| seats.take_shed()).count();
        assert_eq!(taken, 1, "six held by two agents: three to give back, a quarter of them at this read");
    }

    /// An acting `watch` heartbeats with capacity 0: agents see it, never
    /// rank it for a release, and leave it out of the even share.
    #[test]
    fn a_watch_on_the_roster_is_never_handed_a_release_nor_counted_in_a_share() {
        let watch = member("w", Some(0), 900);
        let r = roster(vec![member("a", None, 900), watch.clone()], &[]);
        for i in 0..50 {
            assert_eq!(standby(&view("a", &format!("t{i}"), None, Some(&r))), Standby::Claim, "first at once");
        }
        let leases: Vec<(String, String, i64)> = (0..20).map(|i| (format!("t{i}"), "a".to_string(), 5_000)).collect();
        let borrowed: Vec<(&str, &str, i64)> = leases.iter().map(|(t, h, e)| (t.as_str(), h.as_str(), *e)).collect();
        for members in [
            vec![member("a", None, 900), member("b", None, 900)],
            vec![member("a", None, 900), member("b", None, 900), watch],
        ] {
            let seats = Seats::new(None);
            seats.set_roster(roster(members, &borrowed), "a", 500);
            let taken = (0..10).filter(|_| seats.take_shed()).count();
            assert_eq!(taken, 3, "twenty held by two agents: ten to give back, a quarter of them at this read");
        }
    }
}
