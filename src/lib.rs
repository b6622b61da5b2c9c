//! warren: a RabbitMQ worker that serves llama.cpp inference from durable queues.
//!
//! The flow of a task, one module per step:
//! [`config`] (typed settings) → [`protocol`] (wire contract: parse and validate a task,
//! shape a reply) → [`broker`] (connection, topology, confirmed publishing) → [`worker`]
//! (delivery → validate → engine → reply → ack / retry / dead-letter; reconnect and shutdown)
//! → [`retry`] (the policy: what is retried, after how long) → [`engine`] (the llama.cpp
//! thread and its slots). [`client`] is the upstream side of the contract, which
//! [`gateway`] (the OpenAI HTTP API) builds on; [`dlq`] inspects and replays dead letters; [`bulk`] decides what a task file still needs;
//! [`telemetry`] sets up logs and readiness; `cli` holds the `warren` subcommands and `bench`
//! the load generator behind `warren bench` (both private to the binary).

// No unsafe code, with one reviewed exception: engine/grammar.rs installs llama.cpp's log
// callback (an FFI function pointer), so a refused grammar can say why.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod bench;
pub mod broker;
pub mod bulk;
mod cli;
pub mod client;
pub mod config;
pub mod dlq;
pub mod engine;
pub mod gateway;
pub mod kv;
pub mod protocol;
pub mod retry;
pub mod telemetry;
pub mod worker;

pub use cli::main as run_cli;
