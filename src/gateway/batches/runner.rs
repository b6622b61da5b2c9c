//! Drives active batches: publishes each request of a batch as a task (confirmed, at most
//! `gateway.batch_in_flight` unanswered at once, a full queue waited out), whose reply goes to
//! the shared results queue like a background response's; when every request has its
//! outcome, writes the output and error files and marks the batch final. A cancelled or
//! expired batch stops publishing, cancels its tasks in flight and ends with what it has.
//!
//! One runner per batch across all replicas: it holds a lease in Redis while it runs
//! (`gateway.batch_lease_ms`), and every replica looks for active batches without a runner
//! every third of the lease, so a batch
//! outlives the gateway that accepted it. State lives in Redis only ([`crate::gateway::batches::store`]): a
//! runner that dies between a publish and its record publishes that request again, and its
//! first outcome wins. It must not answer HTTP requests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::clock::unix_seconds;
use crate::gateway::batches::input::{self, Line, LineKind};
use crate::gateway::batches::object::{self, BatchStatus};
use crate::gateway::batches::outcome::{self, Outcome};
use crate::gateway::batches::store::{BatchRecord, BatchStore};
use crate::gateway::Shared;
use crate::protocol::{Limits, Tier};
use crate::redis_link::RedisError;
use crate::telemetry::traces;

/// How often a runner looks at its batch.
const POLL: Duration = Duration::from_millis(250);
/// How often a replica looks for batches without a runner, as a part of the lease.
const SUPERVISE_PER_LEASE: u32 = 3;
/// How long a cancelled or expired batch waits for the tasks it cancelled to answer.
const WIND_DOWN: Duration = Duration::from_secs(30);

/// The batches this replica runs.
pub struct Runners {
    holder: String,
    running: Mutex<HashSet<String>>,
}

impl Default for Runners {
    fn default() -> Self {
        Runners {
            holder: format!("{}", uuid::Uuid::new_v4().simple()),
            running: Mutex::default(),
        }
    }
}

/// Starts a runner for batch `id` unless this replica runs it already.
pub fn start(app: &Arc<Shared>, id: &str, shutdown: &CancellationToken) {
    let runners = &app.batches.runners;
    let started = runners
        .running
        .lock()
        .is_ok_and(|mut running| running.insert(id.to_owned()));
    if !started {
        return;
    }
    let (app, id, shutdown) = (app.clone(), id.to_owned(), shutdown.clone());
    tokio::spawn(async move {
        app.metrics.batches_running(1);
        if let Err(e) = run(&app, &id, &shutdown).await {
            warn!(batch = %id, error = %e, "batch runner stopped; it resumes from Redis");
        }
        app.metrics.batches_running(-1);
        if let Ok(mut running) = app.batches.runners.running.lock() {
            running.remove(&id);
        }
    });
}

/// Starts runners for active batches that have none, until `shutdown`.
pub async fn supervise(app: Arc<Shared>, shutdown: CancellationToken) {
    let period = Duration::from_millis(app.batches.lease_ms) / SUPERVISE_PER_LEASE;
    loop {
        match app.batches.store.active().await {
            Ok(ids) => ids.iter().for_each(|id| start(&app, id, &shutdown)),
            Err(e) => warn!(error = %e, "cannot list active batches"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

async fn run(app: &Arc<Shared>, id: &str, shutdown: &CancellationToken) -> Result<(), RedisError> {
    let store = &app.batches.store;
    let holder = app.batches.runners.holder.as_str();
    if !store.lease(id, holder, app.batches.lease_ms).await? {
        return Ok(());
    }
    let Some(record) = store.batch(id).await? else {
        return store.retire(id).await;
    };
    if record.status.is_final() {
        return store.retire(id).await;
    }
    let Some(lines) = input_lines(app, &record, &app.limits).await? else {
        let mut next = object::with_status(&record.object, BatchStatus::Failed, unix_seconds());
        next["errors"] = input::errors_object(&[input::FileProblem {
            code: "input_file_gone",
            message: "the batch's input expired before the batch ended".into(),
            line: None,
        }]);
        if !store
            .transition(id, record.status, BatchStatus::Failed, &next)
            .await?
        {
            // A cancel came meanwhile: the next runner reads the batch again.
            return Ok(());
        }
        app.metrics.batch_ended(BatchStatus::Failed.as_str());
        return store.retire(id).await;
    };
    info!(batch = %id, requests = lines.len(), "running batch");
    loop {
        if shutdown.is_cancelled() {
            return store.release(id, holder).await;
        }
        if !store.lease(id, holder, app.batches.lease_ms).await? {
            return Ok(());
        }
        let Some(record) = store.batch(id).await? else {
            return store.retire(id).await;
        };
        let expires_at = record.object["expires_at"].as_u64().unwrap_or(u64::MAX);
        match record.status {
            BatchStatus::Cancelling => {
                return wind_down(app, id, &lines, BatchStatus::Cancelled).await;
            }
            BatchStatus::InProgress if unix_seconds() >= expires_at => {
                return wind_down(app, id, &lines, BatchStatus::Expired).await;
            }
            BatchStatus::InProgress if record.next >= lines.len() && record.outstanding() == 0 => {
                let now = unix_seconds();
                let finalizing = object::with_status(&record.object, BatchStatus::Finalizing, now);
                store
                    .transition(
                        id,
                        BatchStatus::InProgress,
                        BatchStatus::Finalizing,
                        &finalizing,
                    )
                    .await?;
            }
            BatchStatus::InProgress => publish(app, id, &lines, &record).await?,
            BatchStatus::Finalizing => {
                return finish(app, id, &lines, BatchStatus::Completed).await;
            }
            BatchStatus::Completed
            | BatchStatus::Failed
            | BatchStatus::Expired
            | BatchStatus::Cancelled => return store.retire(id).await,
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The lines of the batch's input, checked within `limits`; `None` when it is gone.
async fn input_lines(
    app: &Shared,
    record: &BatchRecord,
    limits: &Limits,
) -> Result<Option<Vec<Line>>, RedisError> {
    let id = record.object["id"].as_str().unwrap_or_default();
    let file_id = record.object["input_file_id"].as_str().unwrap_or_default();
    let endpoint = record.object["endpoint"].as_str().unwrap_or_default();
    let Some(content) = app.batches.store.batch_input(id, file_id).await? else {
        return Ok(None);
    };
    Ok(input::parse_input(&content, endpoint, usize::MAX, limits).ok())
}

/// Publishes the next requests, up to the in-flight bound.
async fn publish(
    app: &Shared,
    id: &str,
    lines: &[Line],
    record: &BatchRecord,
) -> Result<(), RedisError> {
    let Some(client) = app.broker_link.client() else {
        return Ok(());
    };
    let store = &app.batches.store;
    let holder = app.batches.runners.holder.as_str();
    let mut room = app.batches.in_flight.saturating_sub(record.outstanding());
    let mut next = record.next;
    while next < lines.len() && room > 0 {
        // A line with its outcome is not published again, whatever this gateway's limits say
        // of it now: refused when the batch was created (another reply could not count), or
        // answered from a copy a runner published without moving `next` (counted now).
        if let Some(outcome) = store.outcome(id, next).await? {
            let answered = matches!(outcome, Outcome::Answered { .. });
            if !store.advance(id, holder, next, answered).await? {
                return Ok(());
            }
            next += 1;
            continue;
        }
        let task = match lines[next].task_for(&app.models) {
            Ok(task) => task,
            Err(refused) => {
                // The limits or the served models changed since the batch was created.
                if !refuse(store, id, holder, next, &refused).await? {
                    return Ok(());
                }
                next += 1;
                continue;
            }
        };
        let line_id = object::line_id(id, next);
        let results = &app.responses.results_queue;
        // Each request's task joins the trace of the request that created the batch.
        let line = tracing::info_span!("batch request", batch = id, line = next as i64);
        traces::continue_trace(&line, traces::from_traceparent(&record.traceparent));
        let sent = async {
            if matches!(task.kind, LineKind::Embedding(_)) {
                let queue = &app.embeddings_queue;
                client
                    .send_to_queue(&line_id, &task.body, results, queue)
                    .await
                    .map_err(|e| crate::gateway::embeddings::publish_error(queue, e))
            } else {
                match app.models.routing_key(&task.model) {
                    Ok(key) => client
                        .send_to(&line_id, &task.body, results, key, Tier::Batch)
                        .await
                        .map_err(|e| app.models.publish_error(&task.model, e)),
                    Err(refused) => Err(refused),
                }
            }
        }
        .instrument(line)
        .await;
        match sent {
            Ok(()) => {
                app.metrics.batch_task_published();
                if !store.advance(id, holder, next, true).await? {
                    return Ok(());
                }
                next += 1;
                room -= 1;
            }
            // A full queue or a lost broker: try again at the next look.
            Err(e) if e.status.as_u16() == 429 || e.status.as_u16() == 503 => {
                if matches!(e.code.as_str(), "queue_full") {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                return Ok(());
            }
            Err(refused) => {
                if !refuse(store, id, holder, next, &refused).await? {
                    return Ok(());
                }
                next += 1;
            }
        }
    }
    Ok(())
}

/// Records line `index` as refused and moves `next` past it. `false`: this runner must stop
/// (it lost its lease, or another runner moved on).
async fn refuse(
    store: &BatchStore,
    id: &str,
    holder: &str,
    index: usize,
    refused: &crate::gateway::errors::ApiError,
) -> Result<bool, RedisError> {
    let counted = store
        .record_refusal(id, holder, index, &Outcome::refused(refused))
        .await?;
    // Not counted: a copy of the line, published without moving `next`, answered meanwhile
    // (its publish counts, as its answer does), or the lease lapsed (`advance` says so).
    let answered = !counted
        && matches!(
            store.outcome(id, index).await?,
            Some(Outcome::Answered { .. })
        );
    store.advance(id, holder, index, answered).await
}

/// Stops a cancelled or expired batch: no more publishing, its tasks in flight cancelled and
/// waited for (at most [`WIND_DOWN`]), then its files written with what it has.
async fn wind_down(
    app: &Shared,
    id: &str,
    lines: &[Line],
    status: BatchStatus,
) -> Result<(), RedisError> {
    let store = &app.batches.store;
    let holder = app.batches.runners.holder.as_str();
    let Some(record) = live(store, id).await? else {
        return Ok(());
    };
    let outcomes = store.outcomes(id).await?;
    // A line refused (at creation, or when its turn came) has its outcome: every other line
    // before `next` was published, whatever this gateway's limits say of it now.
    let unanswered = (0..record.next.min(lines.len())).filter(|i| !outcomes.contains_key(i));
    if let Some(client) = app.broker_link.client() {
        for index in unanswered {
            if let Err(e) = client.cancel(&object::line_id(id, index)).await {
                warn!(batch = %id, error = %e, "cannot cancel a request of the batch");
            }
        }
    }
    let deadline = tokio::time::Instant::now() + WIND_DOWN;
    while tokio::time::Instant::now() < deadline {
        store.lease(id, holder, app.batches.lease_ms).await?;
        match store.batch(id).await? {
            Some(record) if record.outstanding() > 0 => tokio::time::sleep(POLL).await,
            _ => break,
        }
    }
    finish(app, id, lines, status).await
}

/// Batch `id`'s record, or `None` once it expired from Redis (then it is retired from the
/// runners' list).
async fn live(store: &BatchStore, id: &str) -> Result<Option<BatchRecord>, RedisError> {
    let record = store.batch(id).await?;
    if record.is_none() {
        store.retire(id).await?;
    }
    Ok(record)
}

/// Writes the output and error files and moves the batch to `status` (final).
async fn finish(
    app: &Shared,
    id: &str,
    lines: &[Line],
    status: BatchStatus,
) -> Result<(), RedisError> {
    let store = &app.batches.store;
    let Some(record) = live(store, id).await? else {
        return Ok(());
    };
    // What each line asked for, read under no limits: a line that ran keeps its shape (a
    // response object, base64 vectors) though this gateway's limits would refuse it now.
    let loose = input_lines(app, &record, &input::no_limits()).await?;
    let lines = loose.as_deref().unwrap_or(lines);
    let endpoint = object::endpoint_kind(record.object["endpoint"].as_str().unwrap_or_default())
        .unwrap_or(object::Endpoint::Completions(
            crate::gateway::completions::Kind::Chat,
        ));
    let outcomes = store.outcomes(id).await?;
    let unrun = if status == BatchStatus::Expired {
        "batch_expired"
    } else {
        "batch_cancelled"
    };
    let (mut output, mut errors) = (String::new(), String::new());
    let mut counts = (0, 0);
    for (index, line) in lines.iter().enumerate() {
        let line_id = object::line_id(id, index);
        let outcome = outcomes.get(&index);
        let (text, ok) = match outcome {
            Some(outcome) => {
                let task = line.task.as_ref().ok();
                let requested = task.map_or("", |task| task.model.as_str());
                let model = app.models.reply_name(requested);
                let line_id = (line_id.as_str(), line.custom_id.as_str());
                outcome::result_line(endpoint, model, task.map(|t| &t.kind), line_id, outcome)
            }
            None => (outcome::unrun_line(&line_id, &line.custom_id, unrun), false),
        };
        // A line that ran counts where its result went: completed in the output file,
        // failed in the error file (as one that could not be written out).
        if outcome.is_some() {
            if ok {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
        let file = if ok { &mut output } else { &mut errors };
        file.push_str(&text.to_string());
        file.push('\n');
    }
    let mut next = object::with_status(&record.object, status, unix_seconds());
    next["output_file_id"] = store.put_result_file(&record, &output, "output").await?;
    next["error_file_id"] = store.put_result_file(&record, &errors, "error").await?;
    // The counts of what the files hold: a reply recorded since the outcomes were read is
    // in neither.
    if !store.end(id, record.status, status, &next, counts).await? {
        // Its status changed since it was read (a cancel came): the next runner ends it
        // from there, and these files expire unreferenced.
        return Ok(());
    }
    app.metrics.batch_ended(status.as_str());
    store.keep_ended(id, &record.owner).await?;
    info!(batch = %id, status = status.as_str(), completed = counts.0, failed = counts.1, "batch ended");
    store.retire(id).await
}
