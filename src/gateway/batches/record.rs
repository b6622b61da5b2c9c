//! What the store keeps of a file and of a batch, as values.

use serde_json::Value;

use crate::gateway::batches::object::BatchStatus;

/// A stored file, without its content.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFile {
    /// The file object.
    pub object: Value,
    /// Hash of the API key that uploaded it.
    pub owner: String,
}

/// A stored batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchRecord {
    /// Its status.
    pub status: BatchStatus,
    /// The batch object (its `request_counts` are filled in by [`BatchRecord::current`]).
    pub object: Value,
    /// Hash of the API key that created it.
    pub owner: String,
    /// Requests in its file.
    pub total: usize,
    /// Of those, refused when the batch was created.
    pub refused: usize,
    /// Lines the runner has handled, in file order (published, or skipped as refused).
    pub next: usize,
    /// Tasks published.
    pub published: usize,
    /// Requests answered ok.
    pub completed: usize,
    /// Requests refused or answered with an error.
    pub failed: usize,
    /// The W3C `traceparent` of the request that created it (empty: not traced): its
    /// requests' tasks join that trace.
    pub traceparent: String,
    /// How long its output and error files are kept, in seconds from their creation.
    pub output_ttl_s: u64,
}

impl BatchRecord {
    /// The batch object with its current counts.
    pub fn current(&self) -> Value {
        let mut object = self.object.clone();
        object["request_counts"] = serde_json::json!({
            "total": self.total, "completed": self.completed, "failed": self.failed,
        });
        object
    }

    /// Published tasks not answered yet.
    pub fn outstanding(&self) -> usize {
        let answered = (self.completed + self.failed).saturating_sub(self.refused);
        self.published.saturating_sub(answered)
    }
}
