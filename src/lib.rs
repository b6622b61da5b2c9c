//! warren: a RabbitMQ worker that serves llama.cpp inference from durable queues.
//!
//! The flow of a task, one module per step:
//! [`config`] (typed settings) → [`protocol`] (wire contract: parse and validate a task,
//! shape a reply) → [`broker`] (connection, topology, confirmed publishing) → [`worker`]
//! (delivery → validate → engine → reply → ack, or error reply + dead letter) →
//! [`engine`] (the llama.cpp thread and its slots). [`telemetry`] sets up logs; [`cli`]
//! holds the `warren` subcommands.

pub mod broker;
pub mod cli;
pub mod config;
pub mod engine;
pub mod protocol;
pub mod telemetry;
pub mod worker;
