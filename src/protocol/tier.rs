//! Priority tiers. A task is **interactive** (someone waits for it) or **batch** (bulk work:
//! the Batch API, `warren submit --file`, OpenAI's `service_tier: "flex"`). Each tier has its
//! own queue: batch tasks go to the interactive queue's name plus [`BATCH_SUFFIX`]
//! (`warren.requests.batch`; under routing by model the routing key is the model's name plus
//! the suffix, and the queue `warren.requests.<model>.batch`). Workers take a batch task only
//! when they hold fewer tasks than they have slots, so an interactive task waits at most for
//! one running task to end. The suffix is part of the wire contract: AMQP callers choose a
//! tier by the queue (or routing key) they publish to.

use std::borrow::Cow;

/// What the batch tier adds to a queue's name or a routing key.
pub const BATCH_SUFFIX: &str = ".batch";

/// The priority tier of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    /// Someone waits for it: served first.
    #[default]
    Interactive,
    /// Bulk work: served when a slot would otherwise stay free.
    Batch,
}

impl Tier {
    /// The routing key (or queue name) of this tier for the interactive tier's `key`.
    pub fn key(self, key: &str) -> Cow<'_, str> {
        match self {
            Tier::Interactive => Cow::Borrowed(key),
            Tier::Batch => Cow::Owned(format!("{key}{BATCH_SUFFIX}")),
        }
    }

    /// The tier's name, as logs and metrics say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Interactive => "interactive",
            Tier::Batch => "batch",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_tier_suffixes_the_key_and_the_interactive_tier_keeps_it() {
        assert_eq!(Tier::Interactive.key("warren.requests"), "warren.requests");
        assert_eq!(Tier::Batch.key("warren.requests"), "warren.requests.batch");
        assert_eq!(Tier::Batch.key("gemma3-270m"), "gemma3-270m.batch");
        assert_eq!(Tier::default(), Tier::Interactive);
    }
}
