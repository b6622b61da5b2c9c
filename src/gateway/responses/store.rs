//! Background responses' state in Redis, shared by every gateway replica, each record expiring
//! after `gateway.state_ttl_s`:
//! - `warren:response:<id>`: a hash of `status`, `object` (the response object, JSON),
//!   `meta` (owner, callback URL, webhook attempts, JSON) and `input` (the conversation it
//!   answered, without its instructions: chat turns, JSON), which `previous_response_id`
//!   continues;
//! - `warren:idempotency:<owner>:<key>`: the response id an `Idempotency-Key` was first used for;
//! - `warren:response-deleted:<id>`: a response deleted on purpose (refused, taken over,
//!   deleted by its owner), so that a late reply to its task does not bring it back.
//!
//! A state change is a compare-and-set on `status` (a Lua script), so a cancel and a worker's
//! reply racing from two replicas cannot both win, and a final state never changes. Every
//! call is bounded in time ([`crate::redis_link`]): Redis down is an error at once, never a hang.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::responses::object::Status;
use crate::protocol::ChatMessage;
use crate::redis_link::{RedisError, RedisLink, SET_STATUS_IF};

// HSET on an expired key would create a record without a status: only a live one is touched.
const PUT_META: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSET', KEYS[1], 'meta', ARGV[1])
";

// Deletes a claim only if it is still the given response's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

// Marks a live record accepted; 0 when it is gone (a repeat took its key over).
const ACCEPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'accepted', '1')
return 1
";

// KEYS: the claim, the claimed response's record, its deleted mark; ARGV: the claimed id,
// the new id, the claim's TTL, the age past which an unaccepted claim is abandoned. The
// claim's age is read from its TTL, so the replicas' clocks do not matter. A record a worker
// has started or answered was accepted whatever its mark says (its gateway stopped after the
// confirm): it is marked so, not taken over.
const TAKE_OVER: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HGET', KEYS[2], 'accepted') ~= '0' then return 0 end
  if redis.call('HGET', KEYS[2], 'status') ~= 'queued' then
    redis.call('HSET', KEYS[2], 'accepted', '1')
    return 0
  end
end
local left = redis.call('TTL', KEYS[1])
if left < 0 or tonumber(ARGV[3]) - left < tonumber(ARGV[4]) then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
";

/// Redis could not be reached or answered wrongly.
pub type StoreError = RedisError;

/// One delivery attempt of a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When (Unix seconds).
    pub at: u64,
    /// The receiver's HTTP status, or what went wrong.
    pub outcome: String,
}

/// What the gateway keeps beside the response object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Hash of the API key that created it (empty without keys).
    pub owner: String,
    /// Where its webhook goes, if anywhere.
    pub callback_url: Option<String>,
    /// Webhook delivery attempts, in order.
    pub webhook_attempts: Vec<Attempt>,
    /// Whether the webhook was delivered.
    pub webhook_delivered: bool,
}

/// A stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its state.
    pub status: Status,
    /// The response object.
    pub object: Value,
    /// The gateway's own notes.
    pub meta: Meta,
    /// The conversation it answered, without its instructions.
    pub input: Vec<ChatMessage>,
}

/// The outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Done.
    Done,
    /// The record was in another state (given).
    Conflict(Option<Status>),
    /// No such record (expired, or never created).
    Missing,
}

/// The Redis-backed state store.
pub struct Store {
    redis: RedisLink,
    ttl_s: u64,
}

fn response_key(id: &str) -> String {
    format!("warren:response:{id}")
}

fn claim_key(owner: &str, key: &str) -> String {
    format!("warren:idempotency:{owner}:{key}")
}

fn deleted_key(id: &str) -> String {
    format!("warren:response-deleted:{id}")
}

impl Store {
    /// A store for `url` whose records live `ttl_s` seconds. Connects on first use.
    pub fn new(url: &str, ttl_s: u64) -> Result<Store, StoreError> {
        Ok(Store {
            redis: RedisLink::new(url)?,
            ttl_s,
        })
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, StoreError> {
        self.redis.run(command).await
    }

    /// Claims idempotency key `key` of `owner` for response `id`. `None`: claimed; `Some`:
    /// the id it was claimed for before.
    pub async fn claim(
        &self,
        owner: &str,
        key: &str,
        id: &str,
    ) -> Result<Option<String>, StoreError> {
        let name = claim_key(owner, key);
        let mut set = redis::cmd("SET");
        set.arg(&name).arg(id).arg("NX").arg("EX").arg(self.ttl_s);
        if self.run::<Option<String>>(set).await?.is_some() {
            return Ok(None);
        }
        self.run::<Option<String>>(redis::cmd("GET").arg(&name).clone())
            .await
    }

    /// Gives up the claim of `id` (the request it was made for was not accepted); a claim
    /// taken over by another response stays.
    pub async fn release(&self, owner: &str, key: &str, id: &str) -> Result<(), StoreError> {
        let claim = claim_key(owner, key);
        self.redis
            .script::<i64>(RELEASE, &claim, &[id])
            .await
            .map(|_| ())
    }

    /// Stores a new record with the store's TTL.
    pub async fn create(&self, id: &str, record: &Record) -> Result<(), StoreError> {
        self.put(id, record, true).await
    }

    /// Stores a new record not yet accepted: its task is still to be confirmed
    /// ([`Store::accept`]).
    pub async fn create_pending(&self, id: &str, record: &Record) -> Result<(), StoreError> {
        self.put(id, record, false).await
    }

    async fn put(&self, id: &str, record: &Record, accepted: bool) -> Result<(), StoreError> {
        let key = response_key(id);
        let meta = serde_json::to_string(&record.meta).unwrap_or_default();
        let pipeline = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("status")
            .arg(record.status.as_str())
            .arg("object")
            .arg(record.object.to_string())
            .arg("meta")
            .arg(meta)
            .arg("input")
            .arg(serde_json::to_string(&record.input).unwrap_or_default())
            .arg("accepted")
            .arg(if accepted { "1" } else { "0" })
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.ttl_s)
            .ignore()
            .clone();
        self.redis.pipeline(&pipeline).await
    }

    /// The record of response `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let fields: Vec<Option<String>> = self
            .run(
                redis::cmd("HMGET")
                    .arg(response_key(id))
                    .arg("status")
                    .arg("object")
                    .arg("meta")
                    .arg("input")
                    .clone(),
            )
            .await?;
        let [Some(status), Some(object), meta, input] =
            <[Option<String>; 4]>::try_from(fields).unwrap_or([None, None, None, None])
        else {
            return Ok(None);
        };
        Ok(Some(Record {
            status: Status::parse(&status)
                .ok_or_else(|| RedisError::Corrupt(format!("bad status {status}")))?,
            object: serde_json::from_str(&object)
                .map_err(|e| RedisError::Corrupt(e.to_string()))?,
            meta: meta
                .and_then(|m| serde_json::from_str(&m).ok())
                .unwrap_or_default(),
            input: match input {
                Some(input) => {
                    serde_json::from_str(&input).map_err(|e| RedisError::Corrupt(e.to_string()))?
                }
                None => Vec::new(),
            },
        }))
    }

    /// Moves response `id` from `from` to `to` with `object`, only if it is still in `from`.
    pub async fn transition(
        &self,
        id: &str,
        from: Status,
        to: Status,
        object: &Value,
    ) -> Result<Transition, StoreError> {
        let object = object.to_string();
        let args = [from.as_str(), to.as_str(), object.as_str()];
        let answer: String = self
            .redis
            .script(SET_STATUS_IF, &response_key(id), &args)
            .await?;
        Ok(match answer.as_str() {
            "ok" => Transition::Done,
            "missing" => Transition::Missing,
            other => Transition::Conflict(Status::parse(other)),
        })
    }

    /// Replaces the gateway's notes of response `id` (webhook attempts), if it still exists.
    pub async fn put_meta(&self, id: &str, meta: &Meta) -> Result<(), StoreError> {
        let meta = serde_json::to_string(meta).unwrap_or_default();
        let key = response_key(id);
        self.redis
            .script::<i64>(PUT_META, &key, &[&meta])
            .await
            .map(|_| ())
    }

    /// Marks response `id` accepted: its task was confirmed by the broker. `false`: the record
    /// is gone (a repeat of its idempotency key took the key over meanwhile).
    pub async fn accept(&self, id: &str) -> Result<bool, StoreError> {
        let marked: i64 = self.redis.script(ACCEPT, &response_key(id), &[]).await?;
        Ok(marked == 1)
    }

    /// Gives idempotency key `key` of `owner`, claimed for `earlier`, to response `id`, and
    /// deletes `earlier`'s record, when `earlier` was never accepted and was claimed at least
    /// `abandoned_after_s` ago: the request that claimed it is gone. `false`: not taken.
    pub async fn take_over(
        &self,
        owner: &str,
        key: &str,
        earlier: &str,
        id: &str,
        abandoned_after_s: u64,
    ) -> Result<bool, StoreError> {
        let claim = claim_key(owner, key);
        let ttl = self.ttl_s.to_string();
        let after = abandoned_after_s.to_string();
        let taken: i64 = self
            .redis
            .script_on(
                TAKE_OVER,
                &[&claim, &response_key(earlier), &deleted_key(earlier)],
                &[earlier, id, &ttl, &after],
            )
            .await?;
        Ok(taken == 1)
    }

    /// Whether response `id` was accepted (`None`: there is no such response). A record
    /// stored before the mark existed counts as accepted.
    pub async fn accepted(&self, id: &str) -> Result<Option<bool>, StoreError> {
        let fields: (Option<String>, Option<String>) = self
            .run(
                redis::cmd("HMGET")
                    .arg(response_key(id))
                    .arg("status")
                    .arg("accepted")
                    .clone(),
            )
            .await?;
        Ok(match fields {
            (None, _) => None,
            (Some(_), accepted) => Some(accepted.as_deref() != Some("0")),
        })
    }

    /// The response an idempotency key is claimed for, if it is.
    pub async fn claimed(&self, owner: &str, key: &str) -> Result<Option<String>, StoreError> {
        let name = claim_key(owner, key);
        self.run(redis::cmd("GET").arg(name).clone()).await
    }

    /// Deletes response `id` (it was not accepted after all, or its owner deleted it),
    /// leaving a mark that it was deleted on purpose ([`Store::was_deleted`]).
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let pipeline = redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(response_key(id))
            .ignore()
            .cmd("SET")
            .arg(deleted_key(id))
            .arg("1")
            .arg("EX")
            .arg(self.ttl_s)
            .ignore()
            .clone();
        self.redis.pipeline(&pipeline).await
    }

    /// Whether response `id` was deleted on purpose, so that a reply still to come for its
    /// task must not bring it back.
    pub async fn was_deleted(&self, id: &str) -> Result<bool, StoreError> {
        let marks: i64 = self
            .run(redis::cmd("EXISTS").arg(deleted_key(id)).clone())
            .await?;
        Ok(marks > 0)
    }
}
