//! Cancelling a task over AMQP (wire contract: a cancel message on the control exchange), with
//! warren's own library client: a running task stops and is answered `cancelled`, a task
//! cancelled before it arrives is never run, and neither is retried nor dead-lettered.

use std::time::Duration;

use crate::common::{model_path, ready_count, Names, WorkerProcess, PATIENCE};
use warren::client::{Client, Incoming};
use warren::protocol::TaskBody;
use warren::protocol::{ErrorCode, Reply, ReplyStatus};

async fn client(names: &Names) -> Client {
    names.client("warren-test-cancel").await
}

async fn final_reply(pending: &mut warren::client::Pending) -> Reply {
    loop {
        let next = tokio::time::timeout(PATIENCE, pending.next())
            .await
            .expect("a reply in time")
            .expect("the connection stays up");
        if let Incoming::Reply { reply, .. } = next {
            return reply;
        }
    }
}

fn long_story() -> TaskBody {
    TaskBody {
        max_tokens: Some(450),
        stream: Some(true),
        ..TaskBody::prompt("Once upon a time, in a small village by the sea,")
    }
}

fn assert_cancelled(reply: &Reply) {
    assert_eq!(reply.status, ReplyStatus::Error, "{reply:?}");
    let error = reply.error.as_ref().expect("an error object");
    assert_eq!(error.code, ErrorCode::Cancelled);
    assert!(!error.retryable);
    assert_eq!(reply.attempt, 1, "a cancelled task is not retried");
}

#[tokio::test]
async fn a_running_task_stops_at_a_cancel_and_is_answered_cancelled_not_dead_lettered() {
    let names = Names::new("cancel-running");
    let _worker = WorkerProcess::start(&names, &[]).await;
    assert!(model_path().is_file());
    let client = client(&names).await;

    let mut running = client.submit("story-1", &long_story()).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, running.next())
        .await
        .expect("a first chunk in time")
        .expect("the connection stays up");
    assert!(matches!(first, Incoming::Chunk(_)), "it is generating");
    client.cancel("story-1").await.unwrap();
    let reply = final_reply(&mut running).await;
    assert_cancelled(&reply);

    // The slot is free again: a short task is answered.
    let short = TaskBody {
        max_tokens: Some(3),
        ..TaskBody::prompt("Hello")
    };
    let reply = client
        .submit("short-1", &short)
        .await
        .unwrap()
        .reply()
        .await;
    assert_eq!(reply.unwrap().reply.status, ReplyStatus::Ok);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ready_count(&names.dead).await,
        0,
        "nothing is dead-lettered"
    );
    client.close().await;
}

#[tokio::test]
async fn a_task_cancelled_before_it_arrives_is_answered_without_being_run() {
    let names = Names::new("cancel-early");
    let _worker = WorkerProcess::start(&names, &[]).await;
    let client = client(&names).await;

    client.cancel("early-1").await.unwrap();
    // The worker gets the cancel on its own queue; give it a moment to arrive first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pending = client.submit("early-1", &long_story()).await.unwrap();
    let reply = final_reply(&mut pending).await;
    assert_cancelled(&reply);
    assert_eq!(reply.usage, None, "it was never run");
    assert_eq!(reply.timings_ms.generation, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ready_count(&names.dead).await,
        0,
        "nothing is dead-lettered"
    );
    client.close().await;
}
