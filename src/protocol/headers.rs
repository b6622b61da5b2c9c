//! Every AMQP header name warren reads or writes (`x-warren-*`, and RabbitMQ's delivery
//! count), defined once. The DLQ tool and the republishing helpers take their lists from here.

/// Header on a dead-lettered copy: the error code that ended the task.
pub const HEADER_ERROR_CODE: &str = "x-warren-error-code";
/// Header on a dead-lettered copy: the human-readable reason.
pub const HEADER_ERROR: &str = "x-warren-error";
/// Header carrying the attempt number of a task (1 for the first delivery).
pub const HEADER_ATTEMPTS: &str = "x-warren-attempts";
/// Header on a dead-lettered copy: the worker that gave up on it.
pub const HEADER_WORKER: &str = "x-warren-worker";
/// Header on a dead-lettered copy: when it was dead-lettered (Unix time, milliseconds).
pub const HEADER_FAILED_AT: &str = "x-warren-failed-at-ms";
/// Header on a task waiting in a delay queue: the code of the failure that is being retried.
pub const HEADER_LAST_ERROR_CODE: &str = "x-warren-last-error-code";
/// Header on a task waiting in a delay queue: the reason of the failure being retried.
pub const HEADER_LAST_ERROR: &str = "x-warren-last-error";
/// Header on a task in a classic requests queue: deliveries that ended without an outcome.
pub const HEADER_REDELIVERIES: &str = "x-warren-redeliveries";
/// Header on a reply: microseconds from the task's receipt by the worker to the reply's
/// publication (the worker's own time, at a finer grain than `timings_ms.total`).
pub const HEADER_WORKER_MICROS: &str = "x-warren-worker-us";
/// Header on a reply that went to the results queue because its `reply_to` queue did not
/// exist: the original `reply_to`.
pub const HEADER_UNDELIVERABLE: &str = "x-warren-undeliverable-reply-to";
/// Header on a reply kept in the results queue: `true` when a full `reply_to` queue refused
/// a message of a commit that held several tasks (RabbitMQ does not say which, so this reply
/// may have reached its queue too), `false` when it was not delivered.
pub const HEADER_MAYBE_DELIVERED: &str = "x-warren-maybe-delivered";
/// Header on a republished copy whose original had an AMQP `expiration`: that value (the
/// copy itself must not expire in the parking lot).
pub const HEADER_ORIGINAL_EXPIRATION: &str = "x-warren-original-expiration";
/// Header on a task: when its publisher sent it (Unix time, microseconds), finer than the
/// AMQP `timestamp` (whole seconds). Set by warren's client; optional for other publishers.
pub const HEADER_PUBLISHED_US: &str = "x-warren-published-us";
/// Header on a task replayed from the dead-letter queue: how many times it was replayed. A
/// replay is a new run of the task: the worker's finished mark (`worker.redis_url`) is kept
/// per replay, so a replayed copy is not mistaken for a duplicate of the run that failed.
pub const HEADER_REPLAYS: &str = "x-warren-replays";
/// Header that, `true` (boolean, or the string `true`), makes a message a wake-up, not a
/// task: a worker acks it without running it or answering. Published to a queue no worker consumes, it is something for a scaler that
/// watches the queue's depth (KEDA) to see; the gateway leaves one when it refuses a caller
/// that asked not to wait for a cold start.
pub const HEADER_WAKE: &str = "x-warren-wake";
/// Header RabbitMQ's quorum queues set on a redelivered message: earlier deliveries that
/// ended without an ack.
pub const QUORUM_DELIVERY_COUNT: &str = "x-delivery-count";

/// The headers that describe one failed life of a task (attempts, errors, delivery counts):
/// a task replayed from the dead-letter queue starts afresh without them.
pub const FAILURE_HEADERS: [&str; 13] = [
    HEADER_ERROR_CODE,
    HEADER_ERROR,
    HEADER_ATTEMPTS,
    HEADER_WORKER,
    HEADER_FAILED_AT,
    HEADER_LAST_ERROR_CODE,
    HEADER_LAST_ERROR,
    HEADER_REDELIVERIES,
    HEADER_ORIGINAL_EXPIRATION,
    QUORUM_DELIVERY_COUNT,
    "x-death",
    "x-first-death-reason",
    "x-last-death-reason",
];
