//! The end-to-end tests, one module per area, in one test binary: a real RabbitMQ (and Redis
//! where the area needs it), the real model, and `warren` workers started as processes or in
//! this process. One binary links llama.cpp once instead of once per area, and
//! `--test-threads` then runs any two tests side by side. A test that restarts the broker
//! restarts a node of its own (`common::PrivateBroker`), not the one the others use.

#[path = "../common/mod.rs"]
mod common;

mod amqps;
mod bad_tasks;
mod batch_store;
mod broker_restart;
mod cancel;
mod capacity;
mod clients;
mod deploy_files;
mod device_sampling;
mod dlq_cli;
mod failures;
mod group_commit;
mod hostile_payloads;
mod logprobs;
mod no_work_twice;
mod operations;
mod prefix_cache;
mod retry_to_full_queue;
mod stalls;
mod task_file;
mod throughput;
mod topology_and_cli;
mod worker_e2e;
