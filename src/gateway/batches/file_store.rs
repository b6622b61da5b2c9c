//! The files' half of [`BatchStore`]: `warren:file:<id>` (a hash of `object`, `owner` and
//! `content`) and the owner's list `warren:files:<owner>`. A file's keys expire at its
//! `expires_at`; the list lives as long as its longest-lived file.

use serde_json::{json, Value};

use super::object;
use super::record::{BatchRecord, StoredFile};
use super::store::{decode, BatchStore};
use crate::clock::unix_seconds;
use crate::redis_link::RedisError;

fn file_key(id: &str) -> String {
    format!("warren:file:{id}")
}

// Puts an id on a list and keeps the list at least `ARGV[2]` seconds more: a file kept for
// an hour must not shorten the list under one kept for a month. (`EXPIRE … GT` would do
// it, but needs Redis 7.)
const LIST_FOR: &str = r"
redis.call('LPUSH', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
";

impl BatchStore {
    /// Stores file `id`, kept `keep_s` seconds (the span of its object's `created_at` and
    /// `expires_at`).
    pub async fn put_file(
        &self,
        id: &str,
        file: &StoredFile,
        content: &[u8],
        keep_s: u64,
    ) -> Result<(), RedisError> {
        let (key, list) = (file_key(id), format!("warren:files:{}", file.owner));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("object", file.object.to_string()),
                    ("owner", file.owner.clone()),
                ],
            )
            .ignore()
            .hset(&key, "content", content)
            .ignore()
            .expire(&key, keep_s as i64)
            .ignore()
            .add_command(
                redis::cmd("EVAL")
                    .arg(LIST_FOR)
                    .arg(1)
                    .arg(&list)
                    .arg(id)
                    .arg(keep_s)
                    .clone(),
            )
            .ignore();
        self.bulk.pipeline(&pipe).await
    }

    /// Stores one of batch `record`'s result files (`which`: `output` or `error`), kept its
    /// `output_ttl_s`; the file's id, or null when `text` has no lines.
    pub async fn put_result_file(
        &self,
        record: &BatchRecord,
        text: &str,
        which: &str,
    ) -> Result<Value, RedisError> {
        if text.is_empty() {
            return Ok(Value::Null);
        }
        let id = format!("{}{}", object::FILE_PREFIX, uuid::Uuid::new_v4().simple());
        let batch_id = record.object["id"].as_str().unwrap_or_default();
        let filename = format!("{batch_id}_{which}.jsonl");
        let now = unix_seconds();
        let file = StoredFile {
            object: object::file(
                &id,
                text.len(),
                (now, now + record.output_ttl_s),
                &filename,
                "batch_output",
            ),
            owner: record.owner.clone(),
        };
        self.put_file(&id, &file, text.as_bytes(), record.output_ttl_s)
            .await?;
        Ok(json!(id))
    }

    /// File `id`, if it exists.
    pub async fn file(&self, id: &str) -> Result<Option<StoredFile>, RedisError> {
        let fields: (Option<String>, Option<String>) = self
            .redis
            .run(
                redis::cmd("HMGET")
                    .arg(file_key(id))
                    .arg("object")
                    .arg("owner")
                    .clone(),
            )
            .await?;
        match fields {
            (Some(object), owner) => Ok(Some(StoredFile {
                object: decode(&object)?,
                owner: owner.unwrap_or_default(),
            })),
            _ => Ok(None),
        }
    }

    /// The content of file `id`, if it exists.
    pub async fn file_content(&self, id: &str) -> Result<Option<Vec<u8>>, RedisError> {
        self.bulk
            .run(redis::cmd("HGET").arg(file_key(id)).arg("content").clone())
            .await
    }

    /// Deletes file `id`.
    pub async fn delete_file(&self, id: &str, owner: &str) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.del(file_key(id))
            .ignore()
            .lrem(format!("warren:files:{owner}"), 0, id)
            .ignore();
        self.redis.pipeline(&pipe).await
    }
}
