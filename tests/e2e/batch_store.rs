//! The batch store's Lua scripts against the shared Redis: a batch's runner moves `next` and
//! refuses lines only while it holds the batch's lease, and a line's first outcome wins.
//! These are the compare-and-set steps that keep two gateways' runners from counting a line
//! twice when one of them stalled past its lease.

use serde_json::json;
use warren::gateway::batches::object::BatchStatus;
use warren::gateway::batches::outcome::Outcome;
use warren::gateway::batches::store::{BatchRecord, BatchStore};
use warren::gateway::errors::ApiError;
use warren::protocol::{ErrorCode, Reply, TaskError, Timings};

use crate::common::REDIS;

fn unique_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("batch_store_test_{}_{nanos}", std::process::id())
}

/// A store, and a new batch in progress of `total` lines in it (its id).
async fn new_batch(total: usize) -> (BatchStore, String) {
    let store = BatchStore::new(REDIS, 60, "warren.test.batch-store").expect("a Redis URL");
    let id = unique_id();
    let record = BatchRecord {
        status: BatchStatus::InProgress,
        object: json!({"id": id, "object": "batch"}),
        owner: "batch-store-test".into(),
        total,
        output_ttl_s: 60,
        ..BatchRecord::default()
    };
    store
        .create_batch(&id, &record, &[], b"{}\n{}\n{}\n")
        .await
        .expect("Redis stores the batch");
    (store, id)
}

/// Batch `id` as stored now.
async fn stored(store: &BatchStore, id: &str) -> BatchRecord {
    store
        .batch(id)
        .await
        .expect("Redis answers")
        .expect("the batch is stored")
}

/// Removes what the test stored (the store keeps a batch for its whole window).
async fn forget(store: &BatchStore, id: &str) {
    store.retire(id).await.expect("Redis answers");
    let client = redis::Client::open(REDIS).expect("a Redis URL");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let keys = [
        format!("warren:batch:{id}"),
        format!("warren:batch:{id}:results"),
    ];
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    let _: () = redis::cmd("LREM")
        .arg("warren:batches:batch-store-test")
        .arg(0)
        .arg(id)
        .query_async(&mut redis)
        .await
        .expect("LREM");
}

fn answered() -> Outcome {
    let error = TaskError::new(ErrorCode::Internal, "an answer (an error one) for the test");
    Outcome::Answered {
        reply: Box::new(Reply::failure(None, &error, "m", 1, Timings::default())),
        at: 1,
    }
}

#[tokio::test]
async fn a_runner_that_lost_its_lease_can_neither_refuse_nor_advance_a_line() {
    let (store, id) = new_batch(3).await;
    let refused = Outcome::refused(&ApiError::invalid("too long for the test", None));

    assert!(store.lease(&id, "gateway-a", 60_000).await.unwrap());
    // gateway-b's lease lapsed and gateway-a took the batch over.
    assert!(!store
        .record_refusal(&id, "gateway-b", 0, &refused)
        .await
        .unwrap());
    assert!(store.outcome(&id, 0).await.unwrap().is_none());
    assert!(!store.advance(&id, "gateway-b", 0, true).await.unwrap());

    // The holder refuses line 0 and moves past it; moving from 0 again is refused (another
    // runner's round, or its own stale one).
    assert!(store
        .record_refusal(&id, "gateway-a", 0, &refused)
        .await
        .unwrap());
    assert!(store.advance(&id, "gateway-a", 0, false).await.unwrap());
    assert!(!store.advance(&id, "gateway-a", 0, false).await.unwrap());
    // Line 1 published, then answered twice (a redelivered task): the first answer counts.
    assert!(store.advance(&id, "gateway-a", 1, true).await.unwrap());
    assert!(store.record(&id, 1, &answered()).await.unwrap());
    assert!(!store.record(&id, 1, &answered()).await.unwrap());
    // A line answered first is not refused after (nor counted twice).
    assert!(store.record(&id, 2, &answered()).await.unwrap());
    assert!(!store
        .record_refusal(&id, "gateway-a", 2, &refused)
        .await
        .unwrap());

    let batch = stored(&store, &id).await;
    assert_eq!(
        (batch.next, batch.published, batch.refused, batch.failed),
        (2, 1, 1, 3)
    );
    forget(&store, &id).await;
}

#[tokio::test]
async fn a_batch_that_ended_counts_no_more_outcomes() {
    let (store, id) = new_batch(2).await;
    assert!(store.lease(&id, "gateway-a", 60_000).await.unwrap());
    let object = json!({"id": id, "object": "batch", "status": "cancelled"});
    let ended = store
        .transition(
            &id,
            BatchStatus::InProgress,
            BatchStatus::Cancelled,
            &object,
        )
        .await
        .unwrap();
    assert!(ended);
    // A task cancelled at the end may still answer: it changes nothing.
    assert!(!store.record(&id, 0, &answered()).await.unwrap());
    let batch = stored(&store, &id).await;
    assert_eq!((batch.status, batch.failed), (BatchStatus::Cancelled, 0));
    forget(&store, &id).await;
}

#[tokio::test]
async fn a_batch_ends_with_the_counts_of_its_files_though_a_reply_came_meanwhile() {
    let (store, id) = new_batch(3).await;
    assert!(store.record(&id, 0, &answered()).await.unwrap());
    // The runner reads the outcomes (line 0) and writes its files; line 1's reply comes
    // before its status change.
    let read = store.outcomes(&id).await.unwrap();
    assert_eq!(read.len(), 1);
    assert!(store.record(&id, 1, &answered()).await.unwrap());
    let object = json!({"id": id, "object": "batch", "status": "expired"});
    let from = BatchStatus::InProgress;
    let ended = store
        .end(&id, from, BatchStatus::Expired, &object, (0, read.len()))
        .await
        .unwrap();
    assert!(ended);
    let batch = stored(&store, &id).await;
    assert_eq!(
        (batch.status, batch.completed, batch.failed),
        (BatchStatus::Expired, 0, 1)
    );
    // Ending it again (another runner that read it before) changes nothing.
    let again = store
        .end(&id, from, BatchStatus::Cancelled, &object, (0, 2))
        .await
        .unwrap();
    assert!(!again);
    forget(&store, &id).await;
}
