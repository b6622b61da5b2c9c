//! The end-to-end tests, one module per area, in one test binary: a real RabbitMQ (and Redis
//! where the area needs it), the real model, and `warren` workers started as processes or in
//! this process. One binary links llama.cpp once instead of once per area, and
//! `--test-threads` then runs any two tests side by side. Tests that restart the broker run
//! in a binary of their own (`tests/broker_restart.rs`): nothing else may run meanwhile.

#[path = "../common/mod.rs"]
mod common;

mod cancel;
mod device_sampling;
mod failures;
mod group_commit;
mod logprobs;
mod no_work_twice;
mod operations;
mod prefix_cache;
mod retry_to_full_queue;
mod task_file;
mod throughput;
mod topology_and_cli;
mod worker_e2e;
