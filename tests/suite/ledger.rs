//! Tamper detection on real databases — SQLite files and a PostgreSQL server —
//! through the same `AnyPool` code path: an attacker with database access
//! edits, deletes, reorders and truncates records; `verify` names each.

use std::sync::Arc;

use backstop::executor::{ActionKind, ActionPlan, Guarded, SimulatedExecutor};
use backstop::ledger::{
    ActionResult, Actor, Admission, Append, IntentRecord, LeaseOp, LeaseRole, Ledger, LedgerError, OutcomeRecord,
    Problem, Record, ReleaseFinished, ReleaseStarted, ResumePoint, sqlite_url,
};
use backstop::release::ReleaseStatus;

use crate::support::pg::PgServer;

struct Db {
    _dir: tempfile::TempDir,
    url: String,
}

fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir.path().join("l.db"));
    Db { _dir: dir, url }
}

/// A small typed record; `n` makes each one different.
fn rec(n: u64) -> Record {
    Record::ReleaseFinished(ReleaseFinished {
        status: ReleaseStatus::Interrupted,
        ticks: n,
        decided_at_s: n * 10,
        model_usage: Default::default(),
    })
}

fn agent() -> Actor {
    Actor::agent("test")
}

async fn ledger_with(url: &str, n: i64) -> Ledger {
    let ledger = Ledger::open(url).await.unwrap();
    for i in 1..=n {
        ledger.append("rel", &agent(), i, rec(i as u64)).await.unwrap();
    }
    ledger
}

async fn exec(l: &Ledger, sql: &'static str) {
    sqlx::query(sql).execute(l.pool()).await.unwrap();
}

async fn intact_ledger_verifies_and_chains(url: &str) {
    let l = ledger_with(url, 5).await;
    let report = l.verify(None).await.unwrap();
    assert_eq!(report.records, 5);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let rows = l.list(None, 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(rows.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    // Reopening runs the migrations again, idempotently, and keeps the chain.
    drop(l);
    let again = Ledger::open(url).await.unwrap();
    again.append("rel", &agent(), 6, rec(6)).await.unwrap();
    assert!(again.verify(None).await.unwrap().problems.is_empty());
}

async fn edited_record_is_detected(url: &str) {
    let l = ledger_with(url, 5).await;
    exec(&l, "UPDATE ledger_records SET body = '{\"ticks\":42}' WHERE seq = 3").await;
    assert_eq!(l.verify(None).await.unwrap().problems, vec![Problem::Edited { seq: 3 }]);
}

async fn edited_actor_is_detected(url: &str) {
    let l = ledger_with(url, 3).await;
    exec(&l, "UPDATE ledger_records SET actor = 'mallory' WHERE seq = 2").await;
    assert_eq!(l.verify(None).await.unwrap().problems, vec![Problem::Edited { seq: 2 }]);
}

async fn deleted_record_is_detected(url: &str) {
    let l = ledger_with(url, 5).await;
    exec(&l, "DELETE FROM ledger_records WHERE seq = 2").await;
    assert_eq!(l.verify(None).await.unwrap().problems, vec![Problem::Deleted { from_seq: 2, to_seq: 2 }]);
}

async fn reordered_records_are_detected(url: &str) {
    let l = ledger_with(url, 5).await;
    exec(&l, "UPDATE ledger_records SET seq = 100 WHERE seq = 2").await;
    exec(&l, "UPDATE ledger_records SET seq = 2 WHERE seq = 3").await;
    exec(&l, "UPDATE ledger_records SET seq = 3 WHERE seq = 100").await;
    let problems = l.verify(None).await.unwrap().problems;
    // The hash covers seq, so a renumbered record no longer matches its own hash.
    assert!(problems.contains(&Problem::Edited { seq: 2 }), "{problems:?}");
    assert!(problems.contains(&Problem::Edited { seq: 3 }), "{problems:?}");
}

async fn truncated_tail_is_detected(url: &str) {
    let l = ledger_with(url, 5).await;
    exec(&l, "DELETE FROM ledger_records WHERE seq = 5").await;
    assert_eq!(l.verify(None).await.unwrap().problems, vec![Problem::Truncated { head_seq: 5, last_seq: 4 }]);
}

async fn concurrent_appends_keep_one_chain(url: &str) {
    let l = Arc::new(ledger_with(url, 0).await);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                l.append(&format!("rel{t}"), &agent(), i, rec(i as u64)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = l.verify(None).await.unwrap();
    assert_eq!(report.records, 80);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Two agents, one target: a lapsed lease is taken over with a larger token,
/// and the old holder's intent, fenced by its old token, is refused by the
/// database transaction — it gets no permit, so nothing can run.
async fn a_stale_fencing_token_is_refused(url: &str) {
    let l = ledger_with(url, 0).await;
    let claim = |holder: &str, at_ms: i64| Append {
        release_id: "rel".into(),
        actor: Actor::agent(holder),
        at_ms,
        record: Some(rec(1)),
        lease: Some(LeaseOp::Claim { target: "t".into(), holder: holder.into(), ttl_ms: 1_000 }),
        approvals: Default::default(),
        admit: None,
    };
    assert_eq!(l.submit(claim("a", 0)).await.unwrap().role, Some(LeaseRole::Holder { token: 1 }));
    // b cannot take a live lease; it can take a lapsed one, with a new token.
    let live = l.submit(claim("b", 500)).await.unwrap().role;
    assert_eq!(live, Some(LeaseRole::Follower { holder: "a".into(), token: 1 }));
    assert_eq!(l.submit(claim("b", 1_000)).await.unwrap().role, Some(LeaseRole::Holder { token: 2 }));
    let plan = ActionPlan::new(ActionKind::Rollback, "t", "v1", 10, vec![]);
    let fence = |holder: &str, token| Some(LeaseOp::Fence { target: "t".into(), holder: holder.into(), token });
    let sim = std::sync::Arc::new(backstop::signals::simulator::Simulator::new(Default::default()));
    let acting = Guarded::new(std::sync::Arc::new(SimulatedExecutor::new("t", sim)));
    let stale =
        l.record_intent(&acting, "rel", &Actor::agent("a"), 1_100, &plan, (fence("a", 1), Default::default())).await;
    assert!(matches!(stale, Err(LedgerError::Fenced { ref holder, token: 2, .. }) if holder == "b"), "{stale:?}");
    l.record_intent(&acting, "rel", &Actor::agent("b"), 1_100, &plan, (fence("b", 2), Default::default()))
        .await
        .unwrap();
    // An intent for a target the acting executor is not for is refused before it is written.
    let elsewhere = ActionPlan::new(ActionKind::Rollback, "u", "v1", 10, vec![]);
    let foreign = l
        .record_intent(&acting, "rel", &Actor::agent("b"), 1_100, &elsewhere, (fence("b", 2), Default::default()))
        .await;
    assert!(matches!(foreign, Err(LedgerError::ForeignTarget { .. })), "{foreign:?}");
    // Only b's intent is in the chain, after the takeover record.
    let kinds: Vec<String> = l.list(None, 100).await.unwrap().into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "intent").count(), 1, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "lease").count(), 2, "{kinds:?}");
    assert!(l.verify(None).await.unwrap().problems.is_empty());
}

/// Verify reads the ledger page by page; a ledger longer than a page still verifies and breaks are still found.
async fn a_ledger_longer_than_a_page_verifies(url: &str) {
    let l = Arc::new(ledger_with(url, 0).await);
    let tasks: Vec<_> = (0..12)
        .map(|t| {
            let l = l.clone();
            tokio::spawn(async move {
                for i in 0..1_000 {
                    l.append(&format!("rel{t}"), &agent(), i, rec(i as u64)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let report = l.verify(None).await.unwrap();
    assert_eq!(report.records, 12_000);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    exec(&l, "UPDATE ledger_records SET actor = 'agent:mallory' WHERE seq = 11000").await;
    assert_eq!(l.verify(None).await.unwrap().problems, vec![Problem::Edited { seq: 11_000 }]);
}

/// A tick record `n` of a release; `consulted` gives it a (failed) consultation.
fn tick(n: u64, consulted: bool) -> Record {
    use backstop::judge::{JudgeResult, Verdict};
    let judge = JudgeResult::without_findings(Verdict::Inconclusive, n * 10, String::new());
    let consultation = consulted
        .then(|| backstop::assessor::Consultation::failed("t".into(), "m".into(), n * 10, "budget spent".into()));
    Record::Tick(Box::new(backstop::ledger::TickRecord {
        tick: n,
        now_s: n * 10,
        mode: backstop::policy::RunMode::Act,
        inputs_digest: "d".into(),
        judge,
        model: backstop::policy::ModelInput::NotConfigured,
        consultation,
        prompt_version: None,
        tool_calls: vec![],
        decision: backstop::policy::Decision::Continue,
        rules: vec![],
        lease: None,
        rehearsed_raise: None,
    }))
}

fn ended(status: ReleaseStatus) -> Record {
    Record::ReleaseFinished(ReleaseFinished { status, ticks: 10, decided_at_s: 100, model_usage: Default::default() })
}

/// Three releases ticking interleaved, ten ticks each: `done` promoted (a
/// consultation at tick 3), `paused` interrupted (not final: kept), `live`
/// still running. Returns the seq and hash of `done`'s tick 5.
async fn three_releases(l: &Ledger) -> backstop::ledger::Checkpoint {
    let mut at = None;
    for n in 1..=10 {
        for rel in ["done", "paused", "live"] {
            let r = l.append(rel, &agent(), n as i64, tick(n, rel == "done" && n == 3)).await.unwrap();
            if rel == "done" && n == 5 {
                at = Some(backstop::ledger::Checkpoint { seq: r.seq, hash: r.hash });
            }
        }
    }
    l.append("done", &agent(), 11, ended(ReleaseStatus::Promoted)).await.unwrap();
    l.append("paused", &agent(), 11, ended(ReleaseStatus::Interrupted)).await.unwrap();
    l.append("live", &agent(), 12, tick(11, false)).await.unwrap();
    at.unwrap()
}

async fn compact_all(l: &Ledger) -> backstop::ledger::Compaction {
    l.compact(i64::MAX, (100, &agent()), u64::MAX).await.unwrap()
}

/// A finished release's ticks go, but for its last and its last consulted
/// one; the chain still verifies, from genesis, from a checkpoint taken at a
/// removed tick, and from an agent's anchor there; nothing is compacted twice,
/// even by two handles at once.
async fn compaction_keeps_the_chain_verifiable(url: &str) {
    let l = ledger_with(url, 0).await;
    let cp = three_releases(&l).await;
    let before = l.list(None, 1_000).await.unwrap().len();
    let other = Ledger::open(url).await.unwrap();
    let (a, b) = tokio::join!(compact_all(&l), compact_all(&other));
    assert_eq!((a.releases + b.releases, a.removed + b.removed), (1, 8), "{a:?} {b:?}");
    let report = l.verify(Some(cp.clone())).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.records as usize, report.compacted), (before - 8 + 1, 8));
    assert!(l.verify_recent(Some(cp)).await.unwrap().problems.is_empty());
    let done: Vec<_> = l.list(Some("done"), 100).await.unwrap().into_iter().map(|r| r.kind).collect();
    assert_eq!(done, ["tick", "tick", "release_finished", "compacted"]);
    let kept = l.release_records("done").await.unwrap();
    let ticks: Vec<u64> =
        kept.iter().filter_map(|(_, r)| if let Record::Tick(t) = r { Some(t.tick) } else { None }).collect();
    assert_eq!(ticks, [3, 10], "the consulted tick and the last one stay");
    let Some((_, Record::Compacted(c))) = kept.last() else { panic!("{kept:?}") };
    assert_eq!((c.removed, c.ticks.count, c.ticks.ticks), (8, 8, (1, 9)));
    assert_eq!(l.list(Some("paused"), 100).await.unwrap().len(), 11, "a release that may continue keeps its ticks");
    let again = compact_all(&l).await;
    assert_eq!((again.releases, again.removed), (0, 0), "nothing is compacted twice");
    // New records chain on after the summary.
    l.append("live", &agent(), 13, tick(12, false)).await.unwrap();
    assert!(l.verify(None).await.unwrap().problems.is_empty());
}

/// More `interrupted` ends than one page of compaction holds, then a
/// promoted release: the reading moves past the page with nothing final in
/// it and compacts the promoted one.
async fn a_page_of_unfinished_ends_does_not_stop_compaction(url: &str) {
    let l = ledger_with(url, 0).await;
    for i in 0..25 {
        l.append(&format!("paused{i}"), &agent(), 1, ended(ReleaseStatus::Interrupted)).await.unwrap();
    }
    for n in 1..=4 {
        l.append("done", &agent(), n, tick(n as u64, false)).await.unwrap();
    }
    l.append("done", &agent(), 5, ended(ReleaseStatus::Promoted)).await.unwrap();
    let done = compact_all(&l).await;
    assert_eq!((done.releases, done.removed), (1, 3), "{done:?}");
    assert!(l.verify(None).await.unwrap().problems.is_empty());
}

/// The seq of the summary and of `done`'s kept tick 3, after compacting `three_releases`.
async fn compacted(l: &Ledger) -> (i64, i64) {
    three_releases(l).await;
    compact_all(l).await;
    let rows = l.list(Some("done"), 100).await.unwrap();
    (rows[3].seq, rows[0].seq)
}

/// A kept record deleted and passed off as compacted: the summary's digest no longer matches.
async fn a_record_passed_off_as_compacted_is_detected(url: &str) {
    let l = ledger_with(url, 0).await;
    let (summary, kept) = compacted(&l).await;
    let hash = l.get(kept).await.unwrap().unwrap().hash;
    sqlx::query("DELETE FROM ledger_records WHERE seq = $1").bind(kept).execute(l.pool()).await.unwrap();
    sqlx::query("INSERT INTO ledger_compacted (seq, hash, summary_seq) VALUES ($1, $2, $3)")
        .bind(kept)
        .bind(hash)
        .bind(summary)
        .execute(l.pool())
        .await
        .unwrap();
    assert_eq!(l.verify(None).await.unwrap().problems, vec![Problem::CompactionMismatch { summary_seq: summary }]);
}

/// A kept hash changed, or removed: the next link breaks, the deletion is named, the digest no longer matches.
async fn a_kept_hash_changed_or_removed_is_detected(url: &str) {
    let l = ledger_with(url, 0).await;
    let (summary, _) = compacted(&l).await;
    let first: i64 = sqlx::query_scalar("SELECT MIN(seq) FROM ledger_compacted").fetch_one(l.pool()).await.unwrap();
    sqlx::query("UPDATE ledger_compacted SET hash = $1 WHERE seq = $2")
        .bind("f".repeat(64))
        .bind(first)
        .execute(l.pool())
        .await
        .unwrap();
    let p = l.verify(None).await.unwrap().problems;
    assert_eq!(p, vec![Problem::Reordered { seq: first + 1 }, Problem::CompactionMismatch { summary_seq: summary }]);
    sqlx::query("DELETE FROM ledger_compacted WHERE seq = $1").bind(first).execute(l.pool()).await.unwrap();
    let p = l.verify(None).await.unwrap().problems;
    assert_eq!(
        p,
        vec![Problem::Deleted { from_seq: first, to_seq: first }, Problem::CompactionMismatch { summary_seq: summary }]
    );
}

/// A tick edited before compaction: nothing is removed, the edit stays to be found.
async fn a_tampered_ledger_is_not_compacted(url: &str) {
    let l = ledger_with(url, 0).await;
    three_releases(&l).await;
    exec(&l, "UPDATE ledger_records SET at_ms = 99 WHERE seq = 4").await;
    let e = l.compact(i64::MAX, (100, &agent()), u64::MAX).await.unwrap_err();
    assert!(matches!(e, LedgerError::Tampered { seq: 4 }), "{e}");
    assert!(e.to_string().contains("audit verify"), "{e}");
    let report = l.verify(None).await.unwrap();
    assert_eq!((report.compacted, report.problems), (0, vec![Problem::Edited { seq: 4 }]));
}

/// A release acting on `target` of service `svc`.
fn started(release: &str, target: &str) -> Record {
    let facts = backstop::policy::ReleaseFacts {
        release_id: release.into(),
        service: "svc".into(),
        target: target.into(),
        service_targets: 0,
        declared_targets: vec![target.to_string()].into(),
        candidate_revision: "v2".into(),
        last_known_good: Some("v1".into()),
        quarantine: None,
        last_known_good_from: None,
        irreversible: false,
        environment: "production".into(),
    };
    let mode = backstop::policy::RunMode::Act;
    Record::ReleaseStarted(ReleaseStarted {
        facts,
        source: "sim".into(),
        mode,
        duration_s: 60,
        policy_digest: "p".into(),
        continued_from_s: None,
        canary_from_ms: None,
    })
}

/// Plan ids of the intents open on `target`.
async fn open_plans(l: &Ledger, target: &str) -> Vec<String> {
    l.open_intents(target).await.unwrap().into_iter().map(|o| o.intent.plan.id).collect()
}

/// Admission (blast radius) and recovery (open intents) read what is open
/// from tables the writer keeps beside the records; a ledger written before
/// those tables existed gets them derived from its records at its next open.
async fn what_is_open_is_kept_by_every_write_and_derived_again_for_an_older_ledger(url: &str) {
    let l = Ledger::open(url).await.unwrap();
    let start = |release: &str, target: &str| Append {
        release_id: release.into(),
        actor: agent(),
        at_ms: 1,
        record: Some(started(release, target)),
        lease: None,
        approvals: Default::default(),
        admit: Some(Admission { service: "svc".into(), target: target.into(), max_targets: 1 }),
    };
    assert!(!l.submit(start("r1", "t1")).await.unwrap().refused);
    let full = l.submit(start("r2", "t2")).await.unwrap();
    assert!(full.refused && full.in_canary == ["t1"], "{:?}", full.in_canary);
    let end = |status| {
        Record::ReleaseFinished(ReleaseFinished { status, ticks: 1, decided_at_s: 10, model_usage: Default::default() })
    };
    l.append("r1", &agent(), 2, end(ReleaseStatus::Interrupted)).await.unwrap();
    assert!(l.submit(start("r2", "t2")).await.unwrap().refused, "an interrupted release keeps its canary");
    l.append("r1", &agent(), 3, end(ReleaseStatus::Promoted)).await.unwrap();
    assert!(!l.submit(start("r2", "t2")).await.unwrap().refused, "r1 ended: r2 is admitted");
    // Intents on t2: open until an outcome settles them; an unresolved one stays open.
    let plan = |n: u32| ActionPlan::new(ActionKind::Rollback, "t2", &format!("v{n}"), 10, vec![]);
    let (a, b) = (plan(1), plan(2));
    for p in [&a, &b] {
        l.append("r2", &agent(), 4, Record::Intent(IntentRecord { plan: p.clone(), fence: None })).await.unwrap();
    }
    let outcome = |p: &ActionPlan, result| Record::Outcome(OutcomeRecord { plan_id: p.id.clone(), result });
    let unresolved = ActionResult::Unresolved { observed: "v2".into() };
    l.append("r2", &agent(), 5, outcome(&a, unresolved)).await.unwrap();
    let verified = ActionResult::Verified { output: String::new(), observed: "v1".into() };
    l.append("r2", &agent(), 6, outcome(&b, verified)).await.unwrap();
    assert_eq!(open_plans(&l, "t2").await, vec![a.id.clone()]);
    assert!(l.open_intents("t1").await.unwrap().is_empty());
    // A ledger from before the derived tables: empty tables, no marker. Its next open derives
    // them — and two agents opening it at the same instant derive them once between them.
    exec(&l, "DELETE FROM ledger_running").await;
    exec(&l, "DELETE FROM ledger_open_intents").await;
    exec(&l, "DELETE FROM ledger_derived").await;
    let (again, other) = tokio::join!(Ledger::open(url), Ledger::open(url));
    let (again, other) = (again.unwrap(), other.unwrap());
    assert_eq!(open_plans(&again, "t2").await, vec![a.id.clone()]);
    assert_eq!(open_plans(&other, "t2").await, vec![a.id.clone()], "derived once, not twice");
    let third = again.submit(start("r3", "t3")).await.unwrap();
    assert!(third.refused && third.in_canary == ["t2"], "{:?}", third.in_canary);
    assert!(again.verify(None).await.unwrap().problems.is_empty(), "the derived tables are not in the chain");
}

/// Where a continued release stands: its first start, where its canary is
/// read from (the newest start record that says), the release time its
/// newest tick reached and when. Records of other releases and other kinds
/// (a pause) change none of it.
async fn a_releases_resume_point_comes_from_its_newest_start_and_tick(url: &str) {
    let l = Ledger::open(url).await.unwrap();
    assert_eq!(l.resume_point("r").await.unwrap(), None, "never started");
    let with_canary = |from: Option<i64>, continued: Option<u64>| match started("r", "t") {
        Record::ReleaseStarted(s) => {
            Record::ReleaseStarted(ReleaseStarted { canary_from_ms: from, continued_from_s: continued, ..s })
        }
        _ => unreachable!(),
    };
    l.append("r", &agent(), 1_000, with_canary(None, None)).await.unwrap();
    let point = |started_ms, canary_from_ms, reached_s, seen_ms| ResumePoint {
        started_ms,
        canary_from_ms,
        reached_s,
        seen_ms,
        ended: false,
    };
    assert_eq!(l.resume_point("r").await.unwrap(), Some(point(1_000, 1_000, 0, 1_000)));
    l.append("r", &agent(), 11_000, tick(1, false)).await.unwrap();
    l.append("r", &agent(), 21_000, tick(2, false)).await.unwrap();
    l.append("other", &agent(), 99_000, tick(7, false)).await.unwrap();
    l.append("r", &agent(), 25_000, rec(2)).await.unwrap();
    assert_eq!(l.resume_point("r").await.unwrap(), Some(point(1_000, 1_000, 20, 21_000)));
    // Continued hours later, its canary read again from then.
    l.append("r", &agent(), 7_200_000, with_canary(Some(7_180_000), Some(20))).await.unwrap();
    assert_eq!(l.resume_point("r").await.unwrap(), Some(point(1_000, 7_180_000, 20, 7_200_000)));
    l.append("r", &agent(), 7_210_000, tick(3, false)).await.unwrap();
    assert_eq!(l.resume_point("r").await.unwrap(), Some(point(1_000, 7_180_000, 30, 7_210_000)));
    // Interrupted goes on when run again; promoted is over.
    l.append("r", &agent(), 7_220_000, ended(ReleaseStatus::Interrupted)).await.unwrap();
    assert!(!l.resume_point("r").await.unwrap().unwrap().ended);
    l.append("r", &agent(), 7_230_000, ended(ReleaseStatus::Promoted)).await.unwrap();
    assert!(l.resume_point("r").await.unwrap().unwrap().ended);
}

macro_rules! on_sqlite {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let db = super::sqlite();
                    super::$check(&db.url).await;
                }
            )*
        }

        /// Every check again, on a real PostgreSQL server started for this test.
        #[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs PostgreSQL")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_check_on_postgres() {
            let pg = PgServer::start();
            $(
                let url = pg.fresh_database_url().await;
                $check(&url).await;
            )*
        }
    };
}

on_sqlite!(
    intact_ledger_verifies_and_chains,
    edited_record_is_detected,
    edited_actor_is_detected,
    deleted_record_is_detected,
    reordered_records_are_detected,
    truncated_tail_is_detected,
    concurrent_appends_keep_one_chain,
    a_stale_fencing_token_is_refused,
    a_ledger_longer_than_a_page_verifies,
    compaction_keeps_the_chain_verifiable,
    a_record_passed_off_as_compacted_is_detected,
    a_kept_hash_changed_or_removed_is_detected,
    a_tampered_ledger_is_not_compacted,
    a_page_of_unfinished_ends_does_not_stop_compaction,
    what_is_open_is_kept_by_every_write_and_derived_again_for_an_older_ledger,
    a_releases_resume_point_comes_from_its_newest_start_and_tick,
);

/// A ledger written by the code before typed records (record version 1:
/// hand-built JSON bodies, a hash without `seq`) still opens, migrates,
/// verifies, reads as typed records, and takes new records on its chain.
#[tokio::test]
async fn a_version_1_ledger_still_reads_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    std::fs::copy("fixtures/ledger/v1-demo-rollback.db", &path).unwrap();
    let l = Ledger::open(&sqlite_url(&path)).await.unwrap();
    let report = l.verify(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let rows = l.list(None, 1_000).await.unwrap();
    assert!(rows.iter().all(|r| r.record_version == 1));
    let typed: Vec<Record> = rows.iter().map(|r| Record::from_stored(r).unwrap()).collect();
    assert!(typed.iter().any(|r| matches!(r, Record::Tick(_))));
    assert!(
        typed
            .iter()
            .any(|r| matches!(r, Record::Intent(i) if i.plan.kind == ActionKind::Rollback && i.fence.is_none()))
    );
    assert!(typed.iter().any(|r| matches!(r, Record::Outcome(o) if matches!(o.result, ActionResult::Verified { .. }))));
    assert!(typed.iter().any(|r| matches!(r, Record::ReleaseFinished(f) if f.status == ReleaseStatus::RolledBack)));
    l.append("new", &agent(), 1, rec(1)).await.unwrap();
    let after = l.verify(None).await.unwrap();
    assert!(after.problems.is_empty(), "{:?}", after.problems);
    // Rewriting an old record is still caught.
    exec(&l, "UPDATE ledger_records SET actor = 'mallory' WHERE seq = 2").await;
    assert_eq!(l.verify(None).await.unwrap().problems, vec![Problem::Edited { seq: 2 }]);
}

mod anchoring {
    use assert_cmd::Command;
    use backstop::ledger::{Ledger, record_hash, sqlite_url};
    use predicates::prelude::*;

    fn backstop(args: &[&str]) -> assert_cmd::assert::Assert {
        let mut c = Command::cargo_bin("backstop").unwrap();
        c.env_remove("BACKSTOP_CONFIG").args(args).assert()
    }

    /// A ledger with one rolled-back demo release, and its checkpoint as printed.
    fn demo_ledger(dir: &tempfile::TempDir) -> (String, String) {
        let path = dir.path().join("l.db").to_str().unwrap().to_string();
        backstop(&["demo", "--ledger", &path, "--tick-ms", "0", "--plain"]).success();
        let out = backstop(&["audit", "--ledger", &path, "checkpoint"]).success().get_output().stdout.clone();
        (path, String::from_utf8(out).unwrap().trim().to_string())
    }

    /// Rewrite from `seq` on as an attacker with database access would: new
    /// content, every later hash recomputed, the head moved to match.
    pub(super) async fn rewrite_and_rehash(
        l: &Ledger,
        from_seq: i64,
        edit: impl Fn(&mut backstop::ledger::StoredRecord),
    ) {
        let mut rows = l.list(None, 1_000_000).await.unwrap();
        let start = rows.iter().position(|r| r.seq == from_seq).unwrap();
        edit(&mut rows[start]);
        for i in start..rows.len() {
            if i > 0 {
                rows[i].prev_hash = rows[i - 1].hash.clone();
            }
            rows[i].hash = record_hash(&rows[i]);
            sqlx::query("UPDATE ledger_records SET body = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
                .bind(&rows[i].body)
                .bind(&rows[i].prev_hash)
                .bind(&rows[i].hash)
                .bind(rows[i].seq)
                .execute(l.pool())
                .await
                .unwrap();
        }
        move_head_to_last(l).await;
    }

    /// Point the head at the last record, as someone covering a rewrite would.
    async fn move_head_to_last(l: &Ledger) {
        let last = l.list(None, 1).await.unwrap().pop().unwrap();
        sqlx::query("UPDATE ledger_head SET seq = $1, hash = $2")
            .bind(last.seq)
            .bind(&last.hash)
            .execute(l.pool())
            .await
            .unwrap();
    }

    #[test]
    fn tail_truncation_with_the_head_moved_is_caught_only_against_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (path, checkpoint) = demo_ledger(&dir);
        let seq: i64 = checkpoint.split(':').next().unwrap().parse().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let l = Ledger::open(&sqlite_url(std::path::Path::new(&path))).await.unwrap();
            sqlx::query("DELETE FROM ledger_records WHERE seq > $1").bind(seq - 3).execute(l.pool()).await.unwrap();
            move_head_to_last(&l).await;
        });
        backstop(&["audit", "--ledger", &path, "verify"]).success().stdout(predicate::str::contains("chain intact"));
        backstop(&["audit", "--ledger", &path, "verify", "--since-checkpoint", &checkpoint])
            .code(4)
            .stdout(predicate::str::contains(format!("checkpoint record {seq} is missing")));
    }

    #[test]
    fn a_rewritten_intent_rehashed_to_the_head_is_caught_only_against_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (path, checkpoint) = demo_ledger(&dir);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let l = Ledger::open(&sqlite_url(std::path::Path::new(&path))).await.unwrap();
            let intent = l.list(None, 1_000_000).await.unwrap().into_iter().find(|r| r.kind == "intent").unwrap();
            rewrite_and_rehash(&l, intent.seq, |r| r.body = r.body.replace("\"v41\"", "\"v40\"")).await;
        });
        backstop(&["audit", "--ledger", &path, "verify"]).success();
        backstop(&["audit", "--ledger", &path, "verify", "--since-checkpoint", &checkpoint])
            .code(4)
            .stdout(predicate::str::contains("was rewritten"));
        // A malformed checkpoint is a usage error naming the expected form.
        backstop(&["audit", "--ledger", &path, "verify", "--since-checkpoint", "12"])
            .code(2)
            .stderr(predicate::str::contains("expected SEQ:HASH"));
    }
}

mod refusing {
    use assert_cmd::Command;
    use backstop::ledger::{Ledger, sqlite_url};
    use predicates::prelude::*;

    fn demo(path: &str) -> assert_cmd::assert::Assert {
        let mut c = Command::cargo_bin("backstop").unwrap();
        c.env_remove("BACKSTOP_CONFIG").args(["demo", "--ledger", path, "--tick-ms", "0", "--plain"]).assert()
    }

    fn records(path: &str) -> i64 {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let l = Ledger::open(&sqlite_url(std::path::Path::new(path))).await.unwrap();
            l.checkpoint().await.unwrap().seq
        })
    }

    fn edit(path: &str, sql: &'static str) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let l = Ledger::open(&sqlite_url(std::path::Path::new(path))).await.unwrap();
            sqlx::query(sql).execute(l.pool()).await.unwrap();
        });
    }

    /// The audit's M3: `watch` appended to a ledger with an edited record, with
    /// no warning. An edit is refused before anything is appended (exit 4).
    #[test]
    fn an_edited_ledger_is_refused_before_anything_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db").to_str().unwrap().to_string();
        demo(&path).success();
        edit(&path, "UPDATE ledger_records SET actor = 'mallory' WHERE seq = 3");
        let before = records(&path);
        demo(&path).code(4).stderr(predicate::str::contains("was changed after it was written"));
        assert_eq!(records(&path), before, "nothing was appended");
    }

    /// Rewritten and rehashed to the head after this agent's last start: its
    /// own checkpoint (kept beside the file) no longer matches.
    #[test]
    fn a_ledger_rewritten_and_rehashed_since_the_last_start_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db").to_str().unwrap().to_string();
        demo(&path).success();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let l = Ledger::open(&sqlite_url(std::path::Path::new(&path))).await.unwrap();
            let intent = l.list(None, 1_000_000).await.unwrap().into_iter().find(|r| r.kind == "intent").unwrap();
            super::anchoring::rewrite_and_rehash(&l, intent.seq, |r| r.body = r.body.replace("\"v41\"", "\"v40\""))
                .await;
        });
        demo(&path).code(4).stderr(predicate::str::contains("checkpoint"));
        // A ledger deleted and started anew is simply new.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        demo(&path).success();
    }
}

/// PostgreSQL over TLS (`sslmode=verify-full` with the CA in `sslrootcert`):
/// the ledger opens and chains when the server's certificate is signed by
/// that CA for the host connected to; a certificate for another host, one
/// from another CA, or a server without TLS under `sslmode=require` is refused.
#[cfg_attr(not(feature = "live-tests"), ignore = "live tier: needs PostgreSQL")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_ledger_over_tls_verifies_the_server() {
    use crate::support::pg::make_certs;
    let certs = make_certs();
    let other = make_certs();
    let pg = PgServer::start_tls(certs.path());
    let plain = pg.fresh_database_url().await;
    let db = plain.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let ca = |d: &tempfile::TempDir| d.path().join("ca.pem").display().to_string();
    let good = pg.url_at("localhost", &db, &format!("sslmode=verify-full&sslrootcert={}", ca(&certs)));
    let l = Ledger::open(&good).await.expect("verify-full with the right CA and host");
    l.append("rel", &Actor::agent("tls"), 1, rec(1)).await.unwrap();
    assert!(l.verify(None).await.unwrap().problems.is_empty(), "chain intact over TLS");
    let wrong_host = pg.url_at("127.0.0.1", &db, &format!("sslmode=verify-full&sslrootcert={}", ca(&certs)));
    assert!(Ledger::open(&wrong_host).await.is_err(), "a certificate for localhost does not cover 127.0.0.1");
    let wrong_ca = pg.url_at("localhost", &db, &format!("sslmode=verify-full&sslrootcert={}", ca(&other)));
    assert!(Ledger::open(&wrong_ca).await.is_err(), "a certificate from another CA is refused");
    let no_tls = PgServer::start();
    let plain_db = no_tls.fresh_database_url().await;
    let name = plain_db.rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    let required = no_tls.url_at("127.0.0.1", &name, "sslmode=require");
    let err = Ledger::open(&required).await.err().expect("a server without TLS is refused under sslmode=require");
    assert!(!err.to_string().is_empty());
}

/// A ledger named in a folder that does not exist is refused, naming the
/// folder, and nothing is created: a typo must not start a second, empty
/// audit trail. (Only the default folder under the user's data directory is made.)
#[tokio::test]
async fn a_ledger_in_a_folder_that_does_not_exist_is_refused_not_created() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("typo").join("l.db");
    let url = backstop::ledger::sqlite_url(&path);
    let e = backstop::ledger::Ledger::open(&url).await.err().expect("refused");
    let text = backstop::error::chain(&e);
    assert!(text.contains("does not exist") && text.contains("typo"), "{text}");
    assert!(!d.path().join("typo").exists(), "nothing created");
}

/// Reading one kind page by page from the oldest, as an agent syncing
/// registrations does: every record once, in ledger order, however many
/// there are (the newest-first read would skip the older ones past its limit).
#[tokio::test]
async fn paging_one_kind_from_the_oldest_reads_every_record_once() {
    let db = sqlite();
    let ledger = ledger_with(&db.url, 7).await;
    // A record of another kind in between is not read.
    let paused = backstop::ledger::ReleasePaused { tick: 1, now_s: 10 };
    ledger.append("other", &agent(), 8, Record::ReleasePaused(paused)).await.unwrap();
    ledger.append("rel", &agent(), 9, rec(9)).await.unwrap();
    let (mut seen, mut after) = (Vec::new(), 0);
    loop {
        let page = ledger.of_kind_from(backstop::ledger::RecordKind::ReleaseFinished, after, 3).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = last.seq;
        seen.extend(page.iter().map(|(s, _)| s.seq));
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7, 9], "every record of the kind, once, oldest first");
}
