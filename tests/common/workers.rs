//! Workers for the tests: `warren worker` processes on the real model, killed when dropped,
//! a worker run in the test's own process, and the usual start of a test (queues, a worker,
//! a client).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{consumer_count, consumer_count_at, health, model_path, Caller, Names, PATIENCE};

/// A `warren` command with the test environment (no inherited warren settings).
pub fn warren(names: &Names) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_warren"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WARREN") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    command.envs(names.env());
    command
}

/// A `warren worker` process, killed when dropped. Its log goes to a file.
pub struct WorkerProcess {
    child: Child,
    pub log_path: PathBuf,
    queue: String,
    /// The broker its queue is on.
    broker_url: String,
    _watchdog: health::Watchdog,
}

impl WorkerProcess {
    /// Starts a worker on the real model with one decoding thread and a 512-token context,
    /// plus `extra` settings, and waits until it consumes.
    pub async fn start(names: &Names, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut worker = Self::spawn(names, extra);
        worker.wait_consuming().await;
        worker
    }

    /// Starts a worker like [`WorkerProcess::start`] without waiting for it to consume (for a
    /// worker that may die at once, as a supervisor would restart it).
    pub fn spawn(names: &Names, extra: &[(&str, &str)]) -> WorkerProcess {
        let log_path = std::env::temp_dir().join(format!(
            "{}.{}.log",
            names.requests,
            uuid::Uuid::new_v4().simple()
        ));
        let log = std::fs::File::create(&log_path).expect("create worker log");
        let mut command = warren(names);
        command
            .arg("worker")
            .env("WARREN__ENGINE__MODEL_PATH", model_path())
            .env("WARREN__ENGINE__THREADS", "1")
            .env("WARREN__ENGINE__CONTEXT_SIZE", "512")
            .env("WARREN__ENGINE__BATCH_SIZE", "64")
            .env("WARREN__METRICS__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info,warren=debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (key, value) in extra {
            command.env(key, value);
        }
        let child = command.spawn().expect("spawn warren worker");
        health::register_child(child.id());
        WorkerProcess {
            child,
            _watchdog: health::Watchdog::arm(log_path.clone()),
            log_path,
            queue: names.requests.clone(),
            broker_url: names.broker_url.clone(),
        }
    }

    async fn wait_consuming(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("worker exited early ({status}):\n{}", self.log());
            }
            if consumer_count_at(&self.broker_url, &self.queue).await > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "worker never consumed:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The worker's `/metrics` page now.
    pub async fn metrics_text(&self) -> String {
        let url = format!("{}/metrics", self.health_url().await);
        ureq::get(&url)
            .call()
            .expect("the worker's metrics")
            .body_mut()
            .read_to_string()
            .expect("a metrics text")
    }

    /// Base URL of the worker's metrics and health listener, from its log.
    pub async fn health_url(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            if let Some(at) = log.find("listening on http://") {
                let rest = &log[at + "listening on ".len()..];
                let url = rest.split("/metrics").next().unwrap_or_default();
                return url.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no metrics listener in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its exit status, once it exits by itself within `within`; `None` if it is still up.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker ignored SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        health::forget_child(self.child.id());
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A worker started in this process as a library value (`warren::worker::Worker`), for tests
/// that need no process to die: its metrics address comes from the app, not from its log.
pub struct InProcessWorker {
    pub metrics_addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), warren::worker::WorkerError>>,
    _watchdog: health::Watchdog,
}

impl InProcessWorker {
    /// Starts a worker on `names` like [`WorkerProcess::start`] (one thread, 512-token
    /// context), with `extra` settings, and waits until it consumes.
    pub async fn start(names: &Names, extra: &[(&str, &str)]) -> InProcessWorker {
        let mut env: HashMap<String, String> = names.env().into_iter().collect();
        let model = model_path().display().to_string();
        for (key, value) in [
            ("WARREN__ENGINE__MODEL_PATH", model.as_str()),
            ("WARREN__ENGINE__THREADS", "1"),
            ("WARREN__ENGINE__CONTEXT_SIZE", "512"),
            ("WARREN__ENGINE__BATCH_SIZE", "64"),
            ("WARREN__METRICS__LISTEN", "127.0.0.1:0"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            env.insert(key.to_owned(), value.to_owned());
        }
        let source = config::Environment::with_prefix("WARREN").source(Some(env));
        let settings = warren::config::Settings::load_from(None, source).expect("settings");
        let app = warren::worker::Worker::build(settings)
            .await
            .expect("the worker starts");
        let metrics_addr = app.metrics_addr().expect("a metrics listener");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(app.run_until(shutdown.clone()));
        let deadline = Instant::now() + PATIENCE;
        while consumer_count(&names.requests).await == 0 {
            assert!(
                Instant::now() < deadline,
                "the in-process worker never consumed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        InProcessWorker {
            metrics_addr,
            shutdown,
            task,
            _watchdog: health::Watchdog::arm(PathBuf::from("(in this process)")),
        }
    }

    /// Drains and stops it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let stopped = self.task.await.expect("the worker task ends");
        stopped.expect("the worker stops cleanly");
    }
}

/// What most end-to-end tests start from: their own queue names, a worker consuming them,
/// and an upstream client. Dropped in reverse: client, worker, then the queues.
pub struct Serving {
    pub upstream: Caller,
    pub worker: WorkerProcess,
    pub names: Names,
}

/// A worker for test `test` with `extra` settings, and an upstream client.
pub async fn serving(test: &str, extra: &[(&str, &str)]) -> Serving {
    let names = Names::new(test);
    let worker = WorkerProcess::start(&names, extra).await;
    let upstream = Caller::connect().await;
    Serving {
        upstream,
        worker,
        names,
    }
}
