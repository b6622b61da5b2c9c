//! What a stuck test says before it gives up: the broker's alarms and resources, and a
//! watchdog that ends a test binary whose test outlived any reasonable wait (killing the
//! worker processes it started first), so that a hang fails fast with a reason instead of
//! using up CI's time in silence.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How long one test may hold a worker before the watchdog ends the test binary. Every wait
/// in the harness is bounded by far less; this catches a wait that is not.
pub const TEST_LIMIT: Duration = Duration::from_secs(600);

/// Worker processes the tests started and have not stopped, killed if the watchdog fires.
static LIVE_CHILDREN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Alarms, sockets, file descriptors and queue count of the local broker, in one line, for a
/// failure message.
pub fn broker_health() -> String {
    let nodes = match super::management_get("nodes") {
        Ok(nodes) => nodes,
        Err(e) => return format!("the management API did not answer ({e})"),
    };
    let queues = super::management_get("queues/%2F?columns=name")
        .ok()
        .and_then(|q| q.as_array().map(Vec::len));
    let node = nodes.get(0).cloned().unwrap_or(Value::Null);
    format!(
        "broker: mem_alarm={} disk_free_alarm={} mem_used={} mem_limit={} disk_free={} \
         sockets={}/{} fds={}/{} queues={}",
        node["mem_alarm"],
        node["disk_free_alarm"],
        node["mem_used"],
        node["mem_limit"],
        node["disk_free"],
        node["sockets_used"],
        node["sockets_total"],
        node["fd_used"],
        node["fd_total"],
        queues.map_or("?".to_owned(), |n| n.to_string()),
    )
}

/// Remembers a worker process so that the watchdog can kill it.
pub fn register_child(pid: u32) {
    let mut live = LIVE_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    live.get_or_insert_with(HashSet::new).insert(pid);
}

/// Forgets a worker process that has been stopped.
pub fn forget_child(pid: u32) {
    let mut live = LIVE_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(live) = live.as_mut() {
        live.remove(&pid);
    }
}

/// Ends the test binary if it is still alive [`TEST_LIMIT`] after being armed, unless
/// dropped first (when the test it belongs to ends).
pub struct Watchdog {
    done: Arc<AtomicBool>,
}

impl Watchdog {
    /// Arms a watchdog for the current test; `log` is where its worker writes.
    pub fn arm(log: std::path::PathBuf) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        let seen = done.clone();
        std::thread::spawn(move || {
            let step = Duration::from_secs(1);
            let mut waited = Duration::ZERO;
            while waited < TEST_LIMIT {
                if seen.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(step);
                waited += step;
            }
            if seen.load(Ordering::Acquire) {
                return;
            }
            fire(&test, &log);
        });
        Watchdog { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

fn fire(test: &str, log: &std::path::Path) -> ! {
    let worker_log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = worker_log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    // Straight to the file descriptor: `eprintln!` in a test's thread is captured by the
    // test harness, and lost when the process exits.
    let _ = writeln!(
        std::io::stderr(),
        "\nWATCHDOG: {test} still running after {TEST_LIMIT:?}; ending the test binary.\n{}\n\
         the last lines of its worker's log ({}):\n{tail}\n",
        broker_health(),
        log.display()
    );
    let live = LIVE_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    for pid in live.iter().flatten() {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    std::process::exit(101);
}
