//! A broker restart with tasks queued and in flight: the worker reconnects by itself and
//! every task gets its reply. The broker that restarts is a RabbitMQ node of the test's own
//! ([`PrivateBroker`]), so the other tests run beside it on the shared one.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common::{
    self, consumer_count_at, ready_count_at, Caller, Names, PrivateBroker, WorkerProcess,
};
use warren::protocol::TaskBody;

#[tokio::test]
async fn the_worker_comes_back_by_itself_after_a_broker_restart_and_answers_every_task() {
    let broker = PrivateBroker::start();
    let names = Names::on("restart", &broker);
    let reply_queue = format!("{}.replies", names.requests);
    // Declare the durable reply queue, then leave it unconsumed until after the restart: a
    // reply delivered to a consumer whose connection the restart kills would be lost to the
    // test (not to the product: each reply was confirmed into the durable queue).
    Caller::connect_to(&broker.url, Some(&reply_queue))
        .await
        .close()
        .await;
    let mut worker = WorkerProcess::start(
        &names,
        &[
            ("WARREN__BROKER__PREFETCH", "2"),
            ("WARREN__BROKER__RECONNECT_INITIAL_MS", "200"),
            ("WARREN__BROKER__RECONNECT_MAX_MS", "2000"),
        ],
    )
    .await;
    let client = names.client("warren-test-restart").await;
    let mut ids = HashSet::new();
    for i in 0..6 {
        let id = format!("verse-{i}");
        let task = TaskBody {
            max_tokens: Some(48),
            ..TaskBody::prompt(format!("Verse {i}:"))
        };
        client
            .send_to(
                &id,
                &task.to_bytes(),
                &reply_queue,
                None,
                warren::protocol::Tier::Interactive,
            )
            .await
            .expect("published");
        ids.insert(id);
    }
    let deadline = Instant::now() + common::PATIENCE;
    while ready_count_at(&broker.url, &reply_queue).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no first reply:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    broker.ctl(&["stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.ctl(&["start_app"]);
    broker.ctl(&["await_startup"]);

    let deadline = Instant::now() + common::PATIENCE;
    while consumer_count_at(&broker.url, &names.requests).await == 0 {
        assert!(worker.is_running(), "the worker exited:\n{}", worker.log());
        assert!(
            Instant::now() < deadline,
            "the worker did not come back:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Only now read the durable reply queue: every reply, from before and after the restart.
    let mut upstream = Caller::connect_to(&broker.url, Some(&reply_queue)).await;
    let mut answered = HashSet::new();
    while !ids.is_subset(&answered) {
        let (cid, reply) = upstream
            .any_reply_within(common::PATIENCE)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "unanswered: {:?}\n{}",
                    ids.difference(&answered),
                    worker.log()
                )
            });
        assert_eq!(reply["status"], "ok", "{reply}");
        answered.insert(cid);
    }
    assert!(worker.is_running());
    assert!(worker.log().contains("reconnecting"), "{}", worker.log());
}
