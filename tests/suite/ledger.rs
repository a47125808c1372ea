//! Tamper detection on a real SQLite ledger: an attacker with database access
//! edits, deletes, reorders and truncates records; `verify` names each.

use backstop::ledger::{Ledger, Problem, RecordKind, sqlite_url};
use serde_json::json;

async fn ledger_with(n: i64) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&sqlite_url(&dir.path().join("l.db"))).await.unwrap();
    for i in 1..=n {
        ledger.append("rel", RecordKind::Tick, "agent", &json!({ "tick": i })).await.unwrap();
    }
    (dir, ledger)
}

async fn exec(l: &Ledger, sql: &'static str) {
    sqlx::query(sql).execute(l.pool()).await.unwrap();
}

#[tokio::test]
async fn intact_ledger_verifies_and_chains() {
    let (_d, l) = ledger_with(5).await;
    let report = l.verify().await.unwrap();
    assert_eq!(report.records, 5);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let rows = l.list(None, 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(rows.windows(2).all(|w| w[1].prev_hash == w[0].hash));
}

#[tokio::test]
async fn edited_record_is_detected() {
    let (_d, l) = ledger_with(5).await;
    exec(&l, "UPDATE ledger_records SET body = '{\"tick\":42}' WHERE seq = 3").await;
    assert_eq!(l.verify().await.unwrap().problems, vec![Problem::Edited { seq: 3 }]);
}

#[tokio::test]
async fn edited_actor_is_detected() {
    let (_d, l) = ledger_with(3).await;
    exec(&l, "UPDATE ledger_records SET actor = 'mallory' WHERE seq = 2").await;
    assert_eq!(l.verify().await.unwrap().problems, vec![Problem::Edited { seq: 2 }]);
}

#[tokio::test]
async fn deleted_record_is_detected() {
    let (_d, l) = ledger_with(5).await;
    exec(&l, "DELETE FROM ledger_records WHERE seq = 2").await;
    assert_eq!(l.verify().await.unwrap().problems, vec![Problem::Deleted { from_seq: 2, to_seq: 2 }]);
}

#[tokio::test]
async fn reordered_records_are_detected() {
    let (_d, l) = ledger_with(5).await;
    exec(&l, "UPDATE ledger_records SET seq = 100 WHERE seq = 2").await;
    exec(&l, "UPDATE ledger_records SET seq = 2 WHERE seq = 3").await;
    exec(&l, "UPDATE ledger_records SET seq = 3 WHERE seq = 100").await;
    let problems = l.verify().await.unwrap().problems;
    assert!(problems.contains(&Problem::Reordered { seq: 2 }), "{problems:?}");
    assert!(problems.iter().all(|p| matches!(p, Problem::Reordered { .. })), "{problems:?}");
}

#[tokio::test]
async fn truncated_tail_is_detected() {
    let (_d, l) = ledger_with(5).await;
    exec(&l, "DELETE FROM ledger_records WHERE seq = 5").await;
    assert_eq!(l.verify().await.unwrap().problems, vec![Problem::Truncated { head_seq: 5, last_seq: 4 }]);
}

#[tokio::test]
async fn concurrent_appends_keep_one_chain() {
    let (_d, l) = ledger_with(0).await;
    let l = std::sync::Arc::new(l);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                l.append(&format!("rel{t}"), RecordKind::Tick, "agent", &json!({ "i": i })).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = l.verify().await.unwrap();
    assert_eq!(report.records, 80);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
