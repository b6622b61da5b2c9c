//! Cancellations: the task ids callers cancelled (from the control exchange), and a token per
//! task running here so that a cancel reaches it wherever it is.
//!
//! A cancel for a task this worker holds cancels its token at once; a cancel for a task not
//! seen yet is remembered for [`REMEMBER_FOR`] (at most [`REMEMBER_AT_MOST`] ids, the oldest
//! forgotten first), so the task is skipped when it arrives. It owns no I/O: the session feeds
//! it control messages and the delivery handler asks it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a cancel for a task not (yet) seen is remembered.
pub(crate) const REMEMBER_FOR: Duration = Duration::from_secs(15 * 60);
/// Most cancelled ids remembered at once.
pub(crate) const REMEMBER_AT_MOST: usize = 10_000;

#[derive(Default)]
struct Inner {
    /// Tokens of the tasks running here, by id.
    running: HashMap<String, CancellationToken>,
    /// Cancelled ids and when the cancel came, in arrival order.
    cancelled: HashMap<String, Instant>,
    order: VecDeque<String>,
}

/// The worker's cancellations; shared by its sessions and handlers.
#[derive(Clone, Default)]
pub(crate) struct Cancellations {
    inner: Arc<Mutex<Inner>>,
}

impl Cancellations {
    /// Records a cancel for `id` and stops the task if it runs here.
    pub(crate) fn cancel(&self, id: &str, now: Instant) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(token) = inner.running.get(id) {
            token.cancel();
        }
        forget_old(&mut inner, now);
        if inner.cancelled.insert(id.to_owned(), now).is_none() {
            inner.order.push_back(id.to_owned());
        }
        while inner.order.len() > REMEMBER_AT_MOST {
            if let Some(oldest) = inner.order.pop_front() {
                inner.cancelled.remove(&oldest);
            }
        }
    }

    /// Watches task `id` while it runs here: the returned token is cancelled when a cancel
    /// for it arrives (already cancelled if one came before). Dropping the watch ends it.
    pub(crate) fn watch(&self, id: &str, now: Instant) -> Watch {
        let token = CancellationToken::new();
        if let Ok(mut inner) = self.inner.lock() {
            forget_old(&mut inner, now);
            if inner.cancelled.contains_key(id) {
                token.cancel();
            }
            inner.running.insert(id.to_owned(), token.clone());
        }
        Watch {
            id: id.to_owned(),
            token,
            cancellations: self.clone(),
        }
    }
}

fn forget_old(inner: &mut Inner, now: Instant) {
    while let Some(oldest) = inner.order.front() {
        let expired = inner
            .cancelled
            .get(oldest)
            .is_none_or(|at| now.duration_since(*at) > REMEMBER_FOR);
        if !expired {
            break;
        }
        if let Some(oldest) = inner.order.pop_front() {
            inner.cancelled.remove(&oldest);
        }
    }
}

/// A task being watched for a cancel.
pub(crate) struct Watch {
    id: String,
    token: CancellationToken,
    cancellations: Cancellations,
}

impl Watch {
    /// The token a cancel trips.
    pub(crate) fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.cancellations.inner.lock() {
            inner.running.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_stops_a_running_task() {
        let cancels = Cancellations::default();
        let now = Instant::now();
        let watch = cancels.watch("t1", now);
        assert!(!watch.token().is_cancelled());
        cancels.cancel("t1", now);
        assert!(watch.token().is_cancelled());
    }

    #[test]
    fn a_cancel_that_comes_first_is_remembered_for_the_task() {
        let cancels = Cancellations::default();
        let now = Instant::now();
        cancels.cancel("early", now);
        assert!(cancels.watch("early", now).token().is_cancelled());
        assert!(!cancels.watch("other", now).token().is_cancelled());
    }

    #[test]
    fn a_remembered_cancel_is_forgotten_after_its_time() {
        let cancels = Cancellations::default();
        let then = Instant::now();
        cancels.cancel("old", then);
        let later = then + REMEMBER_FOR + Duration::from_secs(1);
        assert!(!cancels.watch("old", later).token().is_cancelled());
    }

    #[test]
    fn remembered_cancels_are_bounded_oldest_first() {
        let cancels = Cancellations::default();
        let now = Instant::now();
        for i in 0..=REMEMBER_AT_MOST {
            cancels.cancel(&format!("t{i}"), now);
        }
        assert!(!cancels.watch("t0", now).token().is_cancelled());
        assert!(cancels.watch("t1", now).token().is_cancelled());
        let inner = cancels.inner.lock().unwrap();
        assert_eq!(inner.cancelled.len(), REMEMBER_AT_MOST);
    }

    #[test]
    fn a_finished_task_is_no_longer_watched() {
        let cancels = Cancellations::default();
        let now = Instant::now();
        drop(cancels.watch("done", now));
        assert!(cancels.inner.lock().unwrap().running.is_empty());
    }
}
