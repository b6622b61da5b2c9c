//! A run's report: what the samples add up to (throughput, latency percentiles, refusals),
//! as a table for people and JSON for the benchmark scripts.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Sample;

/// p50 / p90 / p99 in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Name of the run.
    pub label: String,
    /// Tasks sent.
    pub tasks: usize,
    /// Tasks that did not complete, refusals aside.
    pub errors: usize,
    /// Tasks a full queue refused.
    pub refused: usize,
    /// How long a refusal took to come.
    pub refused_ms: Option<Percentiles>,
    /// Tasks outstanding at once.
    pub concurrency: usize,
    /// Wall time of the run, in seconds.
    pub wall_s: f64,
    /// Completed tasks per second.
    pub tasks_per_s: f64,
    /// Tokens generated, in all.
    pub completion_tokens: u64,
    /// Tokens generated per second.
    pub tokens_per_s: f64,
    /// Prompt tokens the server evaluated per task, on average (the rest came from a cache).
    pub prompt_read_per_task: f64,
    /// End-to-end latency as the client saw it.
    pub latency_ms: Percentiles,
    /// Latency minus the server's generation time.
    pub ttft_ms: Percentiles,
    /// Time before inference started, as the server reports it.
    pub queue_wait_ms: Percentiles,
    /// Latency minus the worker's own time: the broker path (AMQP), or the HTTP and broker
    /// path (gateway).
    pub overhead_ms: Option<Percentiles>,
    /// Warren only: round trips of bare probes through the same broker during the run.
    pub broker_floor_ms: Option<Percentiles>,
}

impl Report {
    /// Summarizes `samples` taken over `wall`.
    pub(crate) fn new(
        label: &str,
        concurrency: usize,
        samples: &[Sample],
        wall: Duration,
        broker_floor: &[Duration],
    ) -> Report {
        let ok: Vec<_> = samples.iter().filter(|s| s.ok).collect();
        let tokens: u64 = ok.iter().map(|s| u64::from(s.completion_tokens)).sum();
        let wall_s = wall.as_secs_f64().max(1e-9);
        let overheads: Vec<_> = ok.iter().filter_map(|s| s.overhead).collect();
        let refused: Vec<_> = samples.iter().filter(|s| s.refused).collect();
        Report {
            label: label.to_owned(),
            tasks: samples.len(),
            errors: samples.len() - ok.len() - refused.len(),
            refused: refused.len(),
            refused_ms: (!refused.is_empty())
                .then(|| percentiles(refused.iter().map(|s| s.latency))),
            concurrency,
            wall_s,
            tasks_per_s: ok.len() as f64 / wall_s,
            completion_tokens: tokens,
            tokens_per_s: tokens as f64 / wall_s,
            prompt_read_per_task: ok.iter().map(|s| f64::from(s.prompt_read)).sum::<f64>()
                / (ok.len().max(1) as f64),
            latency_ms: percentiles(ok.iter().map(|s| s.latency)),
            ttft_ms: percentiles(ok.iter().map(|s| s.time_to_first_token)),
            queue_wait_ms: percentiles(ok.iter().map(|s| s.queue_wait)),
            overhead_ms: (!overheads.is_empty()).then(|| percentiles(overheads.into_iter())),
            broker_floor_ms: (!broker_floor.is_empty())
                .then(|| percentiles(broker_floor.iter().copied())),
        }
    }

    /// A human-readable table of this report.
    pub(crate) fn table(&self) -> String {
        let p = |x: &Percentiles| format!("{:>8.1} {:>8.1} {:>8.1}", x.p50, x.p90, x.p99);
        let mut out = format!(
            "{}: {} tasks ({} errors) at concurrency {} in {:.1} s\n\
             throughput   {:.2} tasks/s, {:.1} completion tokens/s ({} tokens)\n\
             prompt       {:.1} tokens read per task\n\
             {:<12} {:>8} {:>8} {:>8}\n\
             {:<12} {}\n{:<12} {}\n{:<12} {}\n",
            self.label,
            self.tasks,
            self.errors,
            self.concurrency,
            self.wall_s,
            self.tasks_per_s,
            self.tokens_per_s,
            self.completion_tokens,
            self.prompt_read_per_task,
            "ms",
            "p50",
            "p90",
            "p99",
            "latency",
            p(&self.latency_ms),
            "ttft",
            p(&self.ttft_ms),
            "queue wait",
            p(&self.queue_wait_ms),
        );
        if let Some(overhead) = &self.overhead_ms {
            out.push_str(&format!("{:<12} {}\n", "broker path", p(overhead)));
        }
        if let Some(refusals) = &self.refused_ms {
            let share = 100.0 * self.refused as f64 / self.tasks.max(1) as f64;
            out.push_str(&format!(
                "{:<12} {}   ({} refused by a full queue, {share:.1}%)\n",
                "refusal",
                p(refusals),
                self.refused
            ));
        }
        if let Some(floor) = &self.broker_floor_ms {
            out.push_str(&format!("{:<12} {}\n", "broker floor", p(floor)));
        }
        out
    }
}

fn percentiles(values: impl Iterator<Item = Duration>) -> Percentiles {
    let Ok(mut histogram) = Histogram::<u64>::new(3) else {
        return Percentiles::default();
    };
    let mut any = false;
    for value in values {
        any = true;
        let _ = histogram.record(value.as_micros().max(1) as u64);
    }
    if !any {
        return Percentiles::default();
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    Percentiles {
        p50: ms(0.50),
        p90: ms(0.90),
        p99: ms(0.99),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_apart_from_errors_with_their_own_latency() {
        let done = Sample {
            ok: true,
            latency: Duration::from_millis(900),
            ..Sample::default()
        };
        let refused = Sample {
            refused: true,
            latency: Duration::from_millis(2),
            ..Sample::default()
        };
        let samples = [done.clone(), refused.clone(), refused, Sample::default()];
        let report = Report::new("r", 4, &samples, Duration::from_secs(1), &[]);
        assert_eq!((report.tasks, report.refused, report.errors), (4, 2, 1));
        assert_eq!(report.refused_ms.map(|p| p.p50.round()), Some(2.0));
        assert_eq!(report.latency_ms.p50.round(), 900.0);
        assert!(report.table().contains("2 refused by a full queue, 50.0%"));
    }
}
