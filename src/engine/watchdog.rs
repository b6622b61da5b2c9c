//! Ends the worker when its engine thread stops making progress: one round of its loop
//! (admitting tasks, building their grammars' samplers, a decode, sampling) running past
//! `engine.stall_timeout_ms`, or the thread gone (a panic) while the worker still serves.
//! A llama.cpp call cannot be interrupted, and a worker whose engine never answers keeps
//! its deliveries unanswered (or, its engine gone, fails every task it takes): aborting the
//! process hands them back to the broker, which redelivers them to other workers, and a task
//! that stalls every worker it reaches is answered as poison after
//! `worker.max_redeliveries` (docs/src/wire-contract/failures.md).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the engine thread ended, as stored in [`Heartbeat::ended`].
const RUNNING: u8 = 0;
/// It returned: told to stop, or every handle gone (it returns for nothing else).
const RETURNED: u8 = 1;
const PANICKED: u8 = 2;

/// What the engine thread tells the watchdog, and the handle tells both.
#[derive(Debug)]
pub(super) struct Heartbeat {
    epoch: Instant,
    /// When the round under way began, in milliseconds since `epoch` plus one; 0 while the
    /// thread waits for work.
    round_began: AtomicU64,
    /// [`RUNNING`], [`RETURNED`] or [`PANICKED`].
    ended: AtomicU8,
    /// True once the worker asked its engine to stop: a panic then ends nothing more.
    stopping: AtomicBool,
}

impl Heartbeat {
    pub(super) fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat {
            epoch: Instant::now(),
            round_began: AtomicU64::new(0),
            ended: AtomicU8::new(RUNNING),
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

    /// The engine thread waits for `next` with no round under way, then begins one.
    pub(super) fn waiting<T>(&self, next: impl FnOnce() -> T) -> T {
        self.idle();
        let got = next();
        self.round();
        got
    }

    /// The worker asks its engine to stop.
    pub(super) fn ask_to_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the worker asked its engine to stop: the engine thread reads it between rounds,
    /// so that a stop does not wait for a slot to free.
    pub(super) fn stop_asked(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
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
            self.ended.load(Ordering::SeqCst),
            self.stopping.load(Ordering::SeqCst),
        )
    }
}

/// Dropped when the engine thread ends, however it ends.
pub(super) struct EndGuard(Arc<Heartbeat>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let how = if std::thread::panicking() {
            PANICKED
        } else {
            self.0.idle();
            RETURNED
        };
        self.0.ended.store(how, Ordering::SeqCst);
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
    /// The thread ended on purpose (or while the worker was stopping): nothing more to watch.
    Ended,
}

fn health(busy_for: Option<Duration>, limit: Duration, ended: u8, stopping: bool) -> Health {
    match ended {
        RUNNING => {}
        PANICKED if !stopping => return Health::Panicked,
        _ => return Health::Ended,
    }
    // Watched while stopping too: a stalled engine would hold the worker's stop for ever.
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
                Health::Ended => return,
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
        assert_eq!(health(busy(60_000), LIMIT, RUNNING, false), Health::Fine);
        assert_eq!(
            health(busy(60_001), LIMIT, RUNNING, false),
            Health::Stalled(Duration::from_millis(60_001))
        );
        assert_eq!(
            health(None, LIMIT, RUNNING, false),
            Health::Fine,
            "idle for hours"
        );
        assert_eq!(
            health(busy(60_001), LIMIT, RUNNING, true),
            Health::Stalled(Duration::from_millis(60_001)),
            "a stall would hold the stop for ever"
        );
    }

    #[test]
    fn a_panic_counts_only_while_the_worker_serves_and_a_return_never() {
        assert_eq!(health(None, LIMIT, PANICKED, false), Health::Panicked);
        assert_eq!(health(None, LIMIT, PANICKED, true), Health::Ended);
        let stalled = Some(Duration::from_secs(600));
        assert_eq!(health(stalled, LIMIT, RETURNED, false), Health::Ended);
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
        heartbeat.ask_to_stop();
        assert_eq!(heartbeat.health(LIMIT), Health::Ended);
        // A thread that returns ends on purpose, mid-round or not.
        let heartbeat = Heartbeat::new();
        let on_thread = heartbeat.clone();
        std::thread::spawn(move || {
            let _ended = on_thread.guard();
            on_thread.round();
        })
        .join()
        .unwrap();
        assert_eq!(heartbeat.health(Duration::ZERO), Health::Ended, "returned");
    }
}
