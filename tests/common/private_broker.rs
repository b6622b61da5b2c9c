//! A RabbitMQ node of one test's own: the machine's RabbitMQ started on its own ports and data
//! directory by `scripts/local_cluster.py node`, for a test that stops the broker. Other tests
//! keep running on the shared broker meanwhile. The node stops when this value is dropped.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub struct PrivateBroker {
    /// Where the node keeps its data and `cluster.json` (its name and ports).
    dir: PathBuf,
    /// Its AMQP URL.
    pub url: String,
}

fn local_cluster(args: &[&str]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/local_cluster.py");
    Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs scripts/local_cluster.py")
}

impl PrivateBroker {
    /// Starts the node and waits until it accepts connections.
    pub fn start() -> PrivateBroker {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let dir = std::env::temp_dir().join(format!("warren-test-node-{id}"));
        let dir_text = dir.to_string_lossy().into_owned();
        let started = local_cluster(&["node", &dir_text]);
        let mut broker = PrivateBroker {
            dir,
            url: String::new(),
        };
        assert!(
            started.status.success(),
            "a RabbitMQ node of the test's own did not start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        let printed: Value = serde_json::from_slice(&started.stdout).expect("the node's JSON");
        broker.url = printed["urls"][0]
            .as_str()
            .expect("the node's URL")
            .to_owned();
        broker
    }

    /// `rabbitmqctl ARGS` against the node.
    pub fn ctl(&self, args: &[&str]) {
        let dir = self.dir.to_string_lossy().into_owned();
        let done = local_cluster(&[&["ctl", dir.as_str()], args].concat());
        assert!(
            done.status.success(),
            "rabbitmqctl {args:?} on the test's node: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let _ = local_cluster(&["down", &dir]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
