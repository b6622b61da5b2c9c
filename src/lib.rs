//! warren: a RabbitMQ worker that serves llama.cpp inference from durable queues.
//!
//! The flow of a task, one module per step:
//! [`config`] (typed settings) → [`protocol`] (wire contract: parse and validate a task,
//! shape a reply) → [`broker`] (connection, topology, confirmed publishing) → [`worker`]
//! (delivery → validate → engine → reply → ack / retry / dead-letter; reconnect and shutdown)
//! → [`retry`] (the policy: what is retried, after how long) → [`engine`] (the llama.cpp
//! thread and its slots). [`dlq`] inspects and replays dead letters; [`telemetry`] sets up
//! logs and readiness; [`cli`] holds the `warren` subcommands.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod dlq;
pub mod engine;
pub mod gateway;
pub mod protocol;
pub mod retry;
pub mod telemetry;
pub mod worker;
