//! Tamper detection on real databases — SQLite files and a PostgreSQL server —
//! through the same `AnyPool` code path: an attacker with database access
//! edits, deletes, reorders and truncates records; `verify` names each.

use std::sync::Arc;

use backstop::ledger::{Actor, Ledger, Problem, Record, ReleaseFinished, sqlite_url};
use backstop::orchestrator::ReleaseStatus;

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
);
