//! Control messages on the control exchange (`topology.control_exchange`, fanout), which
//! every worker listens on. Today one kind: cancel a task.

use serde::{Deserialize, Serialize};

/// A control message, published to the control exchange (`topology.control_exchange`,
/// fanout) that every worker listens on: `{"type": "cancel", "id": "<task id>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    /// Always `cancel`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The task's id: its `message_id`, else its `correlation_id`.
    pub id: String,
}

impl Cancel {
    /// The AMQP `type` property of a cancel message.
    pub const TYPE: &'static str = "warren.cancel";

    /// A cancel for task `id`.
    pub fn new(id: impl Into<String>) -> Cancel {
        Cancel {
            kind: "cancel".to_owned(),
            id: id.into(),
        }
    }

    /// Parses a control message; `None` for anything that is not a cancel.
    pub fn parse(body: &[u8]) -> Option<Cancel> {
        serde_json::from_slice::<Cancel>(body)
            .ok()
            .filter(|c| c.kind == "cancel" && !c.id.is_empty())
    }
}
