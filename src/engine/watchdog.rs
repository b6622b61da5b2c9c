//! Ends the worker when its engine thread stops making progress: one round of its loop
//! (admitting tasks, building their grammars' samplers, a decode, sampling) running past
//! `engine.stall_timeout_ms`, or the thread gone (a panic) while the worker still serves.
//! A llama.cpp call cannot be interrupted, and a worker whose engine never answers keeps
//! its deliveries unanswered (or, its engine gone, fails every task it takes): aborting the
//! process hands them back to the broker, which redelivers them to other workers, and a task
//! that stalls every worker it reaches is answered as poison after
//! `worker.max_redeliveries` (docs/src/wire-contract/failures.md).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the engine thread tells the watchdog, and the handle tells both.
#[derive(Debug)]
pub(super) struct Heartbeat {
    epoch: Instant,
    /// When the round under way began, in milliseconds since `epoch` plus one; 0 while the
    /// thread waits for work.
    round_began: AtomicU64,
    /// True once the engine thread has unwound from a panic.
    panicked: AtomicBool,
    /// True once the worker asked its engine to stop, or the thread returned (it returns
    /// only when told to stop or when every handle is gone).
    stopping: AtomicBool,
}

impl Heartbeat {
    pub(super) fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            epoch: Instant::now(),
            round_began: AtomicU64::new(0),
            panicked: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        })
    }

    /// The engine thread begins a round of work.
    pub(super) fn round(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        self.round_began.store(now, Ordering::Relaxed);
    }

    /// The engine thread waits for work: no round is under way.
    pub(super) fn idle(&self) {
        self.round_began.store(0, Ordering::Relaxed);
    }

    /// The worker asks its engine to stop.
    pub(super) fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Tells how the engine thread ended when dropped: hold it on that thread, so that it is
    /// dropped when the thread returns or unwinds.
    pub(super) fn guard(self: &Arc<Self>) -> EndGuard {
        EndGuard(self.clone())
    }

    fn health(&self, limit: Duration) -> Health {
        let began = self.round_began.load(Ordering::Relaxed);
        let busy_for = (began > 0).then(|| {
            let now = self.epoch.elapsed().as_millis() as u64 + 1;
            Duration::from_millis(now.saturating_sub(began))
        });
        health(
            busy_for,
            limit,
            self.panicked.load(Ordering::Relaxed),
            self.stopping.load(Ordering::Relaxed),
        )
    }
}

/// Dropped when the engine thread ends, however it ends.
pub(super) struct EndGuard(Arc<Heartbeat>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.panicked.store(true, Ordering::Relaxed);
        } else {
            self.0.stopping();
        }
    }
}

/// What the watchdog makes of the engine thread.
#[derive(Debug, PartialEq)]
enum Health {
    Fine,
    /// A round has run this long, past the limit.
    Stalled(Duration),
    /// The thread panicked while the worker still serves.
    Panicked,
    /// The worker is stopping: nothing more to watch.
    Stopping,
}

fn health(busy_for: Option<Duration>, limit: Duration, panicked: bool, stopping: bool) -> Health {
    if stopping {
        return Health::Stopping;
    }
    if panicked {
        return Health::Panicked;
    }
    match busy_for {
        Some(busy) if busy > limit => Health::Stalled(busy),
        _ => Health::Fine,
    }
}

/// Watches `heartbeat` on a thread of its own until the worker stops, aborting the process
/// when the engine stalls past `limit` or is gone. Returns the thread's spawn error, if any.
pub(super) fn watch(heartbeat: Arc<Heartbeat>, limit: Duration) -> std::io::Result<()> {
    let every = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    std::thread::Builder::new()
        .name("warren-engine-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match heartbeat.health(limit) {
                Health::Fine => {}
                Health::Stopping => return,
                Health::Stalled(busy) => abort(&format!(
                    "the engine thread has been in one round of work for {} ms, past \
                     engine.stall_timeout_ms ({} ms): aborting, so that the broker redelivers \
                     this worker's tasks",
                    busy.as_millis(),
                    limit.as_millis()
                )),
                Health::Panicked => abort(
                    "the engine thread panicked (logged above) while the worker still serves: \
                     aborting, so that the broker redelivers this worker's tasks",
                ),
            }
        })
        .map(drop)
}

fn abort(why: &str) -> ! {
    tracing::error!("{why}");
    // Also straight to stderr: nothing after this line runs, whatever the log's writer.
    eprintln!("warren: {why}");
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn a_round_past_the_limit_is_a_stall_and_waiting_for_work_is_not() {
        let busy = |ms| Some(Duration::from_millis(ms));
        assert_eq!(health(busy(60_000), LIMIT, false, false), Health::Fine);
        assert_eq!(
            health(busy(60_001), LIMIT, false, false),
            Health::Stalled(Duration::from_millis(60_001))
        );
        assert_eq!(
            health(None, LIMIT, false, false),
            Health::Fine,
            "idle for hours"
        );
    }

    #[test]
    fn a_panic_counts_only_while_the_worker_serves() {
        assert_eq!(health(None, LIMIT, true, false), Health::Panicked);
        assert_eq!(health(None, LIMIT, true, true), Health::Stopping);
        let stalled = Some(Duration::from_secs(600));
        assert_eq!(health(stalled, LIMIT, false, true), Health::Stopping);
    }

    #[test]
    fn the_heartbeat_reads_rounds_idleness_and_how_the_thread_ended() {
        let heartbeat = Heartbeat::new();
        assert_eq!(heartbeat.health(Duration::ZERO), Health::Fine, "idle");
        heartbeat.round();
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(
            heartbeat.health(Duration::ZERO),
            Health::Stalled(_)
        ));
        heartbeat.idle();
        assert_eq!(heartbeat.health(Duration::ZERO), Health::Fine);
        let on_thread = heartbeat.clone();
        let ended = std::thread::spawn(move || {
            let _ended = on_thread.guard();
            panic!("an engine thread's panic");
        })
        .join();
        assert!(ended.is_err());
        assert_eq!(heartbeat.health(LIMIT), Health::Panicked, "unwound");
        heartbeat.stopping();
        assert_eq!(heartbeat.health(LIMIT), Health::Stopping);
        // A thread that returns ends on purpose (told to stop, or every handle gone).
        let heartbeat = Heartbeat::new();
        let on_thread = heartbeat.clone();
        std::thread::spawn(move || drop(on_thread.guard()))
            .join()
            .unwrap();
        assert_eq!(heartbeat.health(LIMIT), Health::Stopping, "returned");
    }
}
