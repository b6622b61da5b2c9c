//! Test harness shared by the integration tests: worker processes started from the real
//! `warren` binary on queues named for one test, an upstream client speaking AMQP with lapin
//! as any service would, and the RabbitMQ management API to look at what the broker holds.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod broker;
mod caller;
mod health;
mod private_broker;
// Each test binary uses its own share of the harness.
#[allow(unused_imports)]
pub use broker::*;
#[allow(unused_imports)]
pub use caller::{header, Caller};
pub use health::broker_health;
#[allow(unused_imports)]
pub use private_broker::PrivateBroker;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long a test waits for something the broker or a worker should do soon.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// How long one call to the broker (a connection, a declare) may take before the test
/// fails saying what the broker reports instead of hanging.
pub const BROKER_CALL: Duration = Duration::from_secs(30);

/// The real model the end-to-end tests run.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("WARREN_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/gemma3-270m-q4_k_m.gguf")
        });
    assert!(
        path.is_file(),
        "model {} is missing: run `make model` (or `make test`)",
        path.display()
    );
    path
}

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Queue and exchange names that belong to one test, deleted when dropped.
pub struct Names {
    /// What every name below starts with (`test.<test>.<id>`).
    pub base: String,
    pub requests: String,
    pub dlx: String,
    pub dead: String,
    pub results: String,
    /// Control exchange (cancel messages).
    pub control: String,
    /// Prefix of the delay queues, e.g. `<prefix>.1s`.
    pub retry_prefix: String,
    /// The broker they live on: the shared one, or a test's own ([`Names::on`]).
    pub broker_url: String,
}

impl Names {
    pub fn new(test: &str) -> Names {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let base = format!("test.{test}.{id}");
        Names {
            base: base.clone(),
            requests: format!("{base}.requests"),
            dlx: format!("{base}.dlx"),
            dead: format!("{base}.dead"),
            results: format!("{base}.results"),
            control: format!("{base}.control"),
            retry_prefix: format!("{base}.retry"),
            broker_url: AMQP_URL.to_owned(),
        }
    }

    /// Names on `broker`, a node of the test's own (nothing to delete afterwards: the node
    /// goes with the test).
    pub fn on(test: &str, broker: &PrivateBroker) -> Names {
        let mut names = Names::new(test);
        names.broker_url = broker.url.clone();
        names
    }

    fn on_shared_broker(&self) -> bool {
        self.broker_url == AMQP_URL
    }

    /// warren's own client, sending to these queues over a connection named `name`.
    pub async fn client(&self, name: &str) -> warren::client::Client {
        let route = warren::broker::Route {
            exchange: String::new(),
            routing_key: self.requests.clone(),
            control_exchange: self.control.clone(),
        };
        warren::client::Client::connect(&self.broker_url.clone().into(), name, route)
            .await
            .expect("connect")
    }

    /// Environment that points a warren process at these names and the local broker.
    pub fn env(&self) -> Vec<(String, String)> {
        // A test's own node runs no management plugin; "auto" would find the shared broker's
        // API and put the queue bound policy there.
        let management = (!self.on_shared_broker())
            .then(|| ("WARREN__BROKER__MANAGEMENT_URL".into(), String::new()));
        let names = vec![
            ("WARREN__BROKER__URL".into(), self.broker_url.clone()),
            (
                "WARREN__TOPOLOGY__REQUESTS_QUEUE".into(),
                self.requests.clone(),
            ),
            (
                "WARREN__TOPOLOGY__DEAD_LETTER_EXCHANGE".into(),
                self.dlx.clone(),
            ),
            (
                "WARREN__TOPOLOGY__DEAD_LETTER_QUEUE".into(),
                self.dead.clone(),
            ),
            (
                "WARREN__TOPOLOGY__RESULTS_QUEUE".into(),
                self.results.clone(),
            ),
            (
                "WARREN__TOPOLOGY__CONTROL_EXCHANGE".into(),
                self.control.clone(),
            ),
            (
                "WARREN__RETRY__QUEUE_PREFIX".into(),
                self.retry_prefix.clone(),
            ),
        ];
        names.into_iter().chain(management).collect()
    }
}

impl Drop for Names {
    /// Deletes every queue, exchange and bound policy under this test's base name (its batch
    /// tier and delay queues too): a queue left behind is a quorum queue the broker keeps
    /// running, and they add up over many runs.
    fn drop(&mut self) {
        if !self.on_shared_broker() {
            return;
        }
        let prefix = format!("{}.", self.base);
        let queues = management_get("queues/%2F?columns=name").unwrap_or(Value::Null);
        for queue in queues.as_array().into_iter().flatten() {
            if let Some(name) = queue["name"].as_str() {
                if name.starts_with(&prefix) {
                    let _ = management_delete(&format!("queues/%2F/{name}"));
                }
            }
        }
        let _ = management_delete(&format!("exchanges/%2F/{}", self.dlx));
        let _ = management_delete(&format!("exchanges/%2F/{}", self.control));
        let policies = management_get("policies/%2F").unwrap_or(Value::Null);
        for policy in policies.as_array().into_iter().flatten() {
            if let Some(name) = policy["name"].as_str() {
                if name.starts_with(&format!("warren-bound-{prefix}")) {
                    let _ = management_delete(&format!("policies/%2F/{name}"));
                }
            }
        }
    }
}

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
