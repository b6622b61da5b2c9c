//! What the engine holds right now: slots busy with a task, tasks handed to the engine and
//! waiting for a slot, and KV cells in use (by running tasks and by the prefix cache). The
//! engine thread writes it as it goes; whoever reports on the engine (the worker's metrics)
//! reads it. vLLM calls the first two requests running and waiting.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Live counts of one engine.
#[derive(Debug, Default)]
pub struct Occupancy {
    busy: AtomicUsize,
    waiting: AtomicUsize,
    kv_cells_used: AtomicUsize,
}

impl Occupancy {
    /// Slots holding a task.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Relaxed)
    }

    /// Tasks handed to the engine that no slot has taken yet.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// KV cells holding a token: running tasks' and those the prefix cache keeps.
    pub fn kv_cells_used(&self) -> usize {
        self.kv_cells_used.load(Ordering::Relaxed)
    }

    pub(super) fn set_busy(&self, slots: usize) {
        self.busy.store(slots, Ordering::Relaxed);
    }

    pub(super) fn set_kv_cells_used(&self, cells: usize) {
        self.kv_cells_used.store(cells, Ordering::Relaxed);
    }

    /// A job was sent to the engine thread.
    pub(super) fn job_sent(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// The engine thread took a job off its channel (admitted or not).
    pub(super) fn job_taken(&self) {
        let _ = self
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_counts_jobs_sent_and_not_yet_taken_and_never_goes_below_zero() {
        let occupancy = Occupancy::default();
        occupancy.job_sent();
        occupancy.job_sent();
        occupancy.job_taken();
        assert_eq!(occupancy.waiting(), 1);
        occupancy.job_taken();
        occupancy.job_taken();
        assert_eq!(occupancy.waiting(), 0);
        occupancy.set_busy(3);
        occupancy.set_kv_cells_used(1200);
        assert_eq!((occupancy.busy(), occupancy.kv_cells_used()), (3, 1200));
    }
}
