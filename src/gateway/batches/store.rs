//! Batches' and files' state in Redis, shared by every gateway replica; a batch's keys
//! expire after the completion window plus `gateway.state_ttl_s`, counted again from its
//! end, a file's at its `expires_at`:
//! - `warren:file:<id>`: a hash of `object` (the file object), `owner` and `content`, kept
//!   until the file's `expires_at` ([`super::file_store`]);
//! - `warren:batch:<id>`: a hash of `status`, `object` (the batch object), `owner`, the
//!   counters `total`, `refused`, `next` (lines handled by the runner), `published`,
//!   `completed` and `failed`, and `output_ttl_s` (how long its output files are kept);
//! - `warren:batch:<id>:results`: line index → its [`Outcome`], written once (the first
//!   result of a request wins, so a task answered twice is counted once);
//! - `warren:batch:<id>:input`: the input file's content as the batch was created, so that
//!   deleting the file does not take its requests from a batch still running (deleted when
//!   the batch ends);
//! - `warren:batches:active:<results queue>`: batches not yet final, which some replica of
//!   this deployment (the gateways sharing its results queue) drives, holding
//!   `warren:batch:<id>:lease`;
//! - `warren:files:<owner>`, `warren:batches:<owner>`: ids, newest first, for the lists.
//!
//! Every call is bounded in time ([`crate::redis_link`]): Redis down is an error, never a hang.

use std::collections::HashMap;

use serde_json::Value;

use crate::gateway::batches::object::{BatchStatus, WINDOW_S};
use crate::gateway::batches::outcome::Outcome;
pub use crate::gateway::batches::record::{BatchRecord, StoredFile};
use crate::redis_link::{RedisError, RedisLink, SET_STATUS_IF};

use super::store_scripts::{ADVANCE, END_COUNTED, RECORD, RELEASE, RENEW};

fn batch_key(id: &str) -> String {
    format!("warren:batch:{id}")
}
fn results_key(id: &str) -> String {
    format!("warren:batch:{id}:results")
}
fn input_key(id: &str) -> String {
    format!("warren:batch:{id}:input")
}
fn lease_key(id: &str) -> String {
    format!("warren:batch:{id}:lease")
}

/// The Redis-backed store of files and batches.
pub struct BatchStore {
    pub(super) redis: RedisLink,
    /// For the calls that carry a file's or a batch's whole content.
    pub(super) bulk: RedisLink,
    ttl_s: u64,
    active: String,
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, RedisError> {
    serde_json::from_str(text)
        .map_err(|e| RedisError::Corrupt(format!("a stored value is not valid: {e}")))
}

impl BatchStore {
    /// A store for `url` whose keys live the completion window plus `keep_s` seconds, for
    /// the gateways whose shared results queue is `results_queue`.
    pub fn new(url: &str, keep_s: u64, results_queue: &str) -> Result<BatchStore, RedisError> {
        Ok(BatchStore {
            redis: RedisLink::new(url)?,
            bulk: RedisLink::for_bulk(url)?,
            ttl_s: keep_s + WINDOW_S,
            active: format!("warren:batches:active:{results_queue}"),
        })
    }

    /// How long a file or a batch is kept, in seconds: the completion window plus
    /// `gateway.state_ttl_s`.
    pub fn ttl_s(&self) -> u64 {
        self.ttl_s
    }

    /// The ids of `owner`'s files (`batches` false) or batches, newest first.
    pub async fn ids_of(&self, owner: &str, batches: bool) -> Result<Vec<String>, RedisError> {
        let kind = if batches { "batches" } else { "files" };
        let list = format!("warren:{kind}:{owner}");
        self.redis
            .run(redis::cmd("LRANGE").arg(list).arg(0).arg(-1).clone())
            .await
    }

    /// Takes `id` off `owner`'s list of files (`batches` false) or batches: a list finds
    /// its entries gone once their keys expire, and drops them so the list does not grow.
    pub async fn forget_id(&self, owner: &str, batches: bool, id: &str) -> Result<(), RedisError> {
        let kind = if batches { "batches" } else { "files" };
        let list = format!("warren:{kind}:{owner}");
        self.redis
            .run(redis::cmd("LREM").arg(list).arg(0).arg(id).clone())
            .await
    }

    /// Stores a new batch (its counters as given) with the outcomes of the requests refused
    /// at once and, unless it is already final, a copy of its `input` and its place among
    /// the active batches.
    pub async fn create_batch(
        &self,
        id: &str,
        record: &BatchRecord,
        refused: &[(usize, Outcome)],
        input: &[u8],
    ) -> Result<(), RedisError> {
        let (key, results) = (batch_key(id), results_key(id));
        let list = format!("warren:batches:{}", record.owner);
        let mut pipe = redis::pipe();
        pipe.atomic().hset_multiple(
            &key,
            &[
                ("status", record.status.as_str().to_owned()),
                ("object", record.object.to_string()),
                ("owner", record.owner.clone()),
                ("total", record.total.to_string()),
                ("refused", record.refused.to_string()),
                ("next", "0".into()),
                ("published", "0".into()),
                ("completed", "0".into()),
                ("failed", record.failed.to_string()),
                ("traceparent", record.traceparent.clone()),
                ("output_ttl_s", record.output_ttl_s.to_string()),
            ],
        );
        pipe.ignore().expire(&key, self.ttl_s as i64).ignore();
        for (index, outcome) in refused {
            let outcome = serde_json::to_string(outcome).unwrap_or_default();
            pipe.hset(&results, index, outcome).ignore();
        }
        pipe.expire(&results, self.ttl_s as i64).ignore();
        pipe.lpush(&list, id)
            .ignore()
            .expire(&list, self.ttl_s as i64)
            .ignore();
        if record.status == BatchStatus::InProgress {
            pipe.set_ex(input_key(id), input, self.ttl_s)
                .ignore()
                .sadd(&self.active, id)
                .ignore();
        }
        self.bulk.pipeline(&pipe).await
    }

    /// Batch `id`, if it exists.
    pub async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, RedisError> {
        let fields: HashMap<String, String> = self
            .redis
            .run(redis::cmd("HGETALL").arg(batch_key(id)).clone())
            .await?;
        let (Some(status), Some(object)) = (fields.get("status"), fields.get("object")) else {
            return Ok(None);
        };
        let status = BatchStatus::parse(status).ok_or_else(|| {
            RedisError::Corrupt(format!("batch `{id}` has an unknown status `{status}`"))
        })?;
        let count = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Some(BatchRecord {
            status,
            object: decode(object)?,
            owner: fields.get("owner").cloned().unwrap_or_default(),
            total: count("total"),
            refused: count("refused"),
            next: count("next"),
            published: count("published"),
            completed: count("completed"),
            failed: count("failed"),
            traceparent: fields.get("traceparent").cloned().unwrap_or_default(),
            // A batch stored before the field existed keeps its files the store's time.
            output_ttl_s: fields
                .get("output_ttl_s")
                .and_then(|v| v.parse().ok())
                .unwrap_or(self.ttl_s),
        }))
    }

    /// Moves batch `id` from `from` to `to` with `object`, only if it is still in `from`.
    /// Whether it moved.
    pub async fn transition(
        &self,
        id: &str,
        from: BatchStatus,
        to: BatchStatus,
        object: &Value,
    ) -> Result<bool, RedisError> {
        let object = object.to_string();
        let (from, to) = (from.as_str(), to.as_str());
        let answer: String = self
            .redis
            .script(SET_STATUS_IF, &batch_key(id), &[from, to, &object])
            .await?;
        Ok(answer == "ok")
    }

    /// Ends batch `id` (still `from`) as `to` with `object`, its counts set to `counts`
    /// (completed, failed): those of the outcomes its result files hold. Whether it ended.
    pub async fn end(
        &self,
        id: &str,
        from: BatchStatus,
        to: BatchStatus,
        object: &Value,
        counts: (usize, usize),
    ) -> Result<bool, RedisError> {
        let (completed, failed) = (counts.0.to_string(), counts.1.to_string());
        let object = object.to_string();
        let ended: i64 = self
            .redis
            .script(
                END_COUNTED,
                &batch_key(id),
                &[from.as_str(), to.as_str(), &object, &completed, &failed],
            )
            .await?;
        Ok(ended == 1)
    }

    /// Records the reply that ended line `index`, unless the line has an outcome already.
    /// Whether it counted.
    pub async fn record(
        &self,
        id: &str,
        index: usize,
        outcome: &Outcome,
    ) -> Result<bool, RedisError> {
        self.record_by(id, index, outcome, "").await
    }

    /// `holder`, the runner of batch `id`, refuses line `index` (it is never published),
    /// unless the line has an outcome already or `holder` no longer holds the lease.
    /// Whether it counted.
    pub async fn record_refusal(
        &self,
        id: &str,
        holder: &str,
        index: usize,
        outcome: &Outcome,
    ) -> Result<bool, RedisError> {
        self.record_by(id, index, outcome, holder).await
    }

    async fn record_by(
        &self,
        id: &str,
        index: usize,
        outcome: &Outcome,
        refused_by: &str,
    ) -> Result<bool, RedisError> {
        let counter = if outcome.is_completed() {
            "completed"
        } else {
            "failed"
        };
        let value = serde_json::to_string(outcome).unwrap_or_default();
        let (key, results, lease, index, ttl) = (
            batch_key(id),
            results_key(id),
            lease_key(id),
            index.to_string(),
            self.ttl_s.to_string(),
        );
        let counted: i64 = self
            .redis
            .script_on(
                RECORD,
                &[&key, &results, &lease],
                &[&index, &value, counter, &ttl, refused_by],
            )
            .await?;
        Ok(counted == 1)
    }

    /// `holder`, the runner of batch `id`, has handled line `line` (`published`: as a task):
    /// `next` moves from `line` to `line + 1`. `false`: it did not, as the holder lost its
    /// lease or another runner moved on; the holder must stop.
    pub async fn advance(
        &self,
        id: &str,
        holder: &str,
        line: usize,
        published: bool,
    ) -> Result<bool, RedisError> {
        let (from, to) = (line.to_string(), (line + 1).to_string());
        let moved: i64 = self
            .redis
            .script_on(
                ADVANCE,
                &[&batch_key(id), &lease_key(id)],
                &[holder, &from, &to, if published { "1" } else { "0" }],
            )
            .await?;
        Ok(moved == 1)
    }

    /// Line `index` of batch `id`'s outcome, if it has one (it was refused when the batch was
    /// created, or a copy of its task answered).
    pub async fn outcome(&self, id: &str, index: usize) -> Result<Option<Outcome>, RedisError> {
        let stored: Option<String> = self
            .redis
            .run(redis::cmd("HGET").arg(results_key(id)).arg(index).clone())
            .await?;
        stored.as_deref().map(decode).transpose()
    }

    /// Every recorded outcome, by line index.
    pub async fn outcomes(&self, id: &str) -> Result<HashMap<usize, Outcome>, RedisError> {
        let stored: HashMap<usize, String> = self
            .bulk
            .run(redis::cmd("HGETALL").arg(results_key(id)).clone())
            .await?;
        stored
            .into_iter()
            .map(|(index, text)| Ok((index, decode(&text)?)))
            .collect()
    }

    /// Batches no runner has finished.
    pub async fn active(&self) -> Result<Vec<String>, RedisError> {
        self.redis
            .run(redis::cmd("SMEMBERS").arg(&self.active).clone())
            .await
    }

    /// Batch `id`'s input as it was created; a batch stored by a gateway before that copy
    /// was kept reads its input file, `file_id`. `None` when neither is there.
    pub async fn batch_input(
        &self,
        id: &str,
        file_id: &str,
    ) -> Result<Option<Vec<u8>>, RedisError> {
        let copy: Option<Vec<u8>> = self
            .bulk
            .run(redis::cmd("GET").arg(input_key(id)).clone())
            .await?;
        match copy {
            Some(input) => Ok(Some(input)),
            None => self.file_content(file_id).await,
        }
    }

    /// Batch `id` ended: it, its results and its owner's list are kept as long as the output
    /// files written at its end.
    pub async fn keep_ended(&self, id: &str, owner: &str) -> Result<(), RedisError> {
        let ttl = self.ttl_s as i64;
        let mut pipe = redis::pipe();
        pipe.expire(batch_key(id), ttl)
            .ignore()
            .expire(results_key(id), ttl)
            .ignore()
            .expire(format!("warren:batches:{owner}"), ttl)
            .ignore();
        self.redis.pipeline(&pipe).await
    }

    /// Batch `id` needs no runner any more.
    pub async fn retire(&self, id: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.srem(&self.active, id)
            .ignore()
            .del(lease_key(id))
            .ignore()
            .del(input_key(id))
            .ignore();
        self.redis.pipeline(&pipe).await
    }

    /// Gives up `holder`'s lease on batch `id`, so another replica may go on at once.
    pub async fn release(&self, id: &str, holder: &str) -> Result<(), RedisError> {
        self.redis
            .script::<i64>(RELEASE, &lease_key(id), &[holder])
            .await
            .map(|_| ())
    }

    /// Takes (or keeps) the lease on batch `id` for `holder`, `millis` long. Whether it holds it.
    pub async fn lease(&self, id: &str, holder: &str, millis: u64) -> Result<bool, RedisError> {
        let key = lease_key(id);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(holder).arg("NX").arg("PX").arg(millis);
        if self.redis.run::<Option<String>>(set).await?.is_some() {
            return Ok(true);
        }
        let renewed: i64 = self
            .redis
            .script(RENEW, &key, &[holder, &millis.to_string()])
            .await?;
        Ok(renewed == 1)
    }
}
