//! Where the engine thread's time goes. Each step of the loop is split into four phases, and
//! the thread adds each phase's time to shared counters; readers (the worker's metrics,
//! `warren bench --in-process`, the engine's stop log) take snapshots and subtract them.
//! The split is what tells a GPU-bound engine from a host-bound one: `decode` and `sample`
//! are llama.cpp's (on a GPU, `sample` is mostly waiting for the device's tokens), while
//! `schedule` and `emit` are warren's own host work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// A part of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Admitting jobs (tokenizing their prompts), reaping, building the batch.
    Schedule,
    /// `llama_decode`: llama.cpp builds and launches the graph (on a CPU, computes it).
    Decode,
    /// Reading each next token: from the device (which waits for its results) or picked on
    /// the host from the logits.
    Sample,
    /// Pieces, stop checks, stream deltas and replies.
    Emit,
}

impl Phase {
    /// Every phase, in step order.
    pub const ALL: [Phase; 4] = [Phase::Schedule, Phase::Decode, Phase::Sample, Phase::Emit];

    /// The phase's name in metrics and reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Schedule => "schedule",
            Phase::Decode => "decode",
            Phase::Sample => "sample",
            Phase::Emit => "emit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters the engine thread adds to; cheap to read from any thread.
#[derive(Debug, Default)]
pub struct StepTimes {
    steps: AtomicU64,
    batch_tokens: AtomicU64,
    nanos: [AtomicU64; 4],
}

impl StepTimes {
    /// A decode of `tokens` tokens was made.
    pub(super) fn stepped(&self, tokens: usize) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        self.batch_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
    }

    /// `elapsed` more was spent in `phase`.
    pub(super) fn add(&self, phase: Phase, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[phase.index()].fetch_add(nanos, Ordering::Relaxed);
    }

    /// The totals so far.
    pub fn snapshot(&self) -> StepSnapshot {
        StepSnapshot {
            steps: self.steps.load(Ordering::Relaxed),
            batch_tokens: self.batch_tokens.load(Ordering::Relaxed),
            nanos: std::array::from_fn(|i| self.nanos[i].load(Ordering::Relaxed)),
        }
    }
}

/// Times one phase after another: each [`Lap::to`] charges the time since the last mark.
pub(super) struct Lap {
    mark: Instant,
}

impl Lap {
    pub(super) fn start() -> Lap {
        Lap {
            mark: Instant::now(),
        }
    }

    /// Charges the time since the previous mark to `phase`.
    pub(super) fn to(&mut self, times: &StepTimes, phase: Phase) {
        self.charge_until(times, phase, Instant::now());
    }

    fn charge_until(&mut self, times: &StepTimes, phase: Phase, now: Instant) {
        times.add(phase, now.saturating_duration_since(self.mark));
        self.mark = now;
    }
}

/// Totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepSnapshot {
    /// Decodes made.
    pub steps: u64,
    /// Tokens in those decodes' batches (next tokens and prompt tokens).
    pub batch_tokens: u64,
    nanos: [u64; 4],
}

impl StepSnapshot {
    /// Time spent in `phase`.
    pub fn time(&self, phase: Phase) -> Duration {
        Duration::from_nanos(self.nanos[phase.index()])
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &StepSnapshot) -> StepSnapshot {
        StepSnapshot {
            steps: self.steps.saturating_sub(earlier.steps),
            batch_tokens: self.batch_tokens.saturating_sub(earlier.batch_tokens),
            nanos: std::array::from_fn(|i| self.nanos[i].saturating_sub(earlier.nanos[i])),
        }
    }

    /// Averages per step; `None` before the first step.
    pub fn profile(&self) -> Option<StepProfile> {
        if self.steps == 0 {
            return None;
        }
        let per_step = |phase| self.time(phase).as_secs_f64() * 1000.0 / self.steps as f64;
        let [schedule, decode, sample, emit] = Phase::ALL.map(per_step);
        let total = schedule + decode + sample + emit;
        Some(StepProfile {
            steps: self.steps,
            tokens_per_step: self.batch_tokens as f64 / self.steps as f64,
            schedule_ms: schedule,
            decode_ms: decode,
            sample_ms: sample,
            emit_ms: emit,
            host_share: if total > 0.0 {
                (schedule + emit) / total
            } else {
                0.0
            },
        })
    }
}

/// The average step of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepProfile {
    /// Decodes made.
    pub steps: u64,
    /// Tokens per decode's batch.
    pub tokens_per_step: f64,
    /// Admitting, reaping and building the batch, per step (ms).
    pub schedule_ms: f64,
    /// `llama_decode`, per step (ms).
    pub decode_ms: f64,
    /// Reading or picking the next tokens, per step (ms).
    pub sample_ms: f64,
    /// Pieces, stop checks and replies, per step (ms).
    pub emit_ms: f64,
    /// warren's own host work (schedule and emit) as a share of the step.
    pub host_share: f64,
}

impl std::fmt::Display for StepProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps, {:.1} tokens each; per step: schedule {:.3} ms, decode {:.3} ms, \
             sample {:.3} ms, emit {:.3} ms (host work {:.1}%)",
            self.steps,
            self.tokens_per_step,
            self.schedule_ms,
            self.decode_ms,
            self.sample_ms,
            self.emit_ms,
            self.host_share * 100.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_charge_each_phase_and_snapshots_subtract() {
        let times = StepTimes::default();
        times.add(Phase::Decode, Duration::from_millis(3));
        let before = times.snapshot();
        times.stepped(64);
        times.stepped(32);
        times.add(Phase::Schedule, Duration::from_millis(1));
        times.add(Phase::Decode, Duration::from_millis(6));
        times.add(Phase::Sample, Duration::from_millis(2));
        times.add(Phase::Emit, Duration::from_millis(1));
        let run = times.snapshot().since(&before);
        assert_eq!(run.steps, 2);
        assert_eq!(run.batch_tokens, 96);
        assert_eq!(run.time(Phase::Decode), Duration::from_millis(6));
        let profile = run.profile().expect("two steps");
        assert_eq!(profile.tokens_per_step, 48.0);
        assert!((profile.decode_ms - 3.0).abs() < 1e-9);
        assert!((profile.schedule_ms - 0.5).abs() < 1e-9);
        assert!((profile.host_share - 0.2).abs() < 1e-9);
    }

    #[test]
    fn no_steps_no_profile_and_a_lap_moves_its_mark() {
        let times = StepTimes::default();
        assert_eq!(times.snapshot().profile(), None);
        let mut lap = Lap::start();
        let started = lap.mark;
        lap.charge_until(&times, Phase::Emit, started + Duration::from_millis(2));
        lap.charge_until(&times, Phase::Schedule, started + Duration::from_millis(3));
        let snapshot = times.snapshot();
        assert_eq!(snapshot.time(Phase::Emit), Duration::from_millis(2));
        assert_eq!(snapshot.time(Phase::Schedule), Duration::from_millis(1));
    }
}
