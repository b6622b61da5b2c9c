//! Group commit on a real broker: deliveries settled while a commit is under way share the
//! next one, each still committed with its own ack, and a message the broker returns goes
//! back to the delivery that owed it.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warren::broker::{BrokerError, Outgoing, Settled, Settlement, TxChannel};

use crate::common::{ready_count, unacked_count, Caller, Names, AMQP_URL, PATIENCE};

#[tokio::test]
async fn deliveries_settled_together_share_a_commit_and_each_gets_its_own_returns() {
    const UNROUTABLE: usize = 3;
    let names = Names::new("group");
    let (connection, channel) = open().await;
    declare(&channel, &names.results, FieldTable::default()).await;
    let deliveries = deliveries(&channel, &names, 6).await;
    let settling = TxChannel::select(channel.clone()).await.expect("tx mode");

    let gone = format!("{}.no-such-queue", names.base);
    let settled = settle_all(&settling, &deliveries, |i| match i {
        UNROUTABLE => gone.clone(),
        _ => names.results.clone(),
    })
    .await;

    let settled: Vec<Settled> = settled
        .into_iter()
        .map(|s| s.expect("every settlement commits"))
        .collect();
    let groups: Vec<usize> = settled.iter().map(|s| s.group).collect();
    assert!(
        groups.iter().any(|&g| g > 1),
        "settlements that waited share a commit: {groups:?}"
    );
    for (i, s) in settled.iter().enumerate() {
        let bodies: Vec<&[u8]> = s.returned.iter().map(|m| m.body.as_slice()).collect();
        if i == UNROUTABLE {
            assert_eq!(bodies, vec![format!("reply {i}").as_bytes()]);
        } else {
            assert!(bodies.is_empty(), "delivery {i} got {bodies:?}");
        }
    }
    assert_eq!(
        ready_count(&names.results).await,
        5,
        "every routable reply is in its queue"
    );
    assert_eq!(unacked_count(&names.requests), 0, "every delivery is acked");
    connection.close(200, "done".into()).await.expect("close");
    assert_eq!(
        ready_count(&names.requests).await,
        0,
        "nothing comes back when the channel closes: the acks were committed"
    );
}

#[tokio::test]
async fn a_full_queue_refusing_one_reply_fails_the_whole_group_saying_so() {
    let names = Names::new("groupfull");
    let (_connection, channel) = open().await;
    let full = format!("{}.full", names.base);
    let mut bounded = FieldTable::default();
    bounded.insert("x-max-length".into(), AMQPValue::LongInt(1));
    bounded.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    declare(&channel, &names.results, FieldTable::default()).await;
    declare(&channel, &full, bounded).await;
    let filler = Caller::connect()
        .await
        .publish(&full, b"already here", BasicProperties::default())
        .await;
    assert!(filler.is_ack());
    let deliveries = deliveries(&channel, &names, 3).await;
    let settling = TxChannel::select(channel.clone()).await.expect("tx mode");

    // The first commits alone; the other two share the next commit, in which the full queue
    // refuses the last one's reply.
    let settled = settle_all(&settling, &deliveries, |i| match i {
        2 => full.clone(),
        _ => names.results.clone(),
    })
    .await;

    let first = settled[0].as_ref().expect("the first commits alone");
    assert_eq!(first.group, 1);
    for failed in &settled[1..] {
        let error = failed.as_ref().expect_err("the shared commit fails");
        assert!(
            matches!(error, BrokerError::InGroup { members: 2, .. }),
            "{error}"
        );
        let said = error.to_string();
        assert!(said.contains("partial tx completion"), "{said}");
    }
}

async fn open() -> (Connection, Channel) {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

async fn declare(channel: &Channel, queue: &str, arguments: FieldTable) {
    let options = QueueDeclareOptions::default();
    channel
        .queue_declare(queue.into(), options, arguments)
        .await
        .expect("declare");
}

/// `count` deliveries of tasks published to `names.requests`, held unacked on `channel`.
async fn deliveries(channel: &Channel, names: &Names, count: usize) -> Vec<Delivery> {
    declare(channel, &names.requests, FieldTable::default()).await;
    let upstream = Caller::connect().await;
    for i in 0..count {
        let body = format!("task {i}");
        let properties = BasicProperties::default();
        let confirm = upstream
            .publish(&names.requests, body.as_bytes(), properties)
            .await;
        assert!(confirm.is_ack());
    }
    let prefetch = u16::try_from(count).expect("a small count");
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            names.requests.as_str().into(),
            "group-commit-test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut deliveries = Vec::new();
    while deliveries.len() < count {
        let delivery = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("deliveries in time")
            .expect("consumer open")
            .expect("delivery");
        deliveries.push(delivery);
    }
    deliveries
}

/// Settles every delivery at once, delivery `i` owing `reply i` to `reply_to(i)`: the first
/// takes the channel, the others wait for its commit and go in the next one together.
async fn settle_all(
    settling: &TxChannel,
    deliveries: &[Delivery],
    reply_to: impl Fn(usize) -> String,
) -> Vec<Result<Settled, BrokerError>> {
    let settlements = deliveries.iter().enumerate().map(|(i, delivery)| {
        settling.settle(Settlement {
            owed: vec![Outgoing {
                exchange: String::new(),
                routing_key: reply_to(i),
                body: format!("reply {i}").into_bytes(),
                properties: BasicProperties::default(),
            }],
            acker: delivery.acker.clone(),
            requeue: false,
            before_commit: None,
        })
    });
    futures_util::future::join_all(settlements).await
}
