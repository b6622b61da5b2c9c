//! warren: a RabbitMQ worker that serves llama.cpp inference from durable queues.
//!
//! The flow of a task, one module per step:
//! [`config`] (typed settings) → [`protocol`] (wire contract: parse and validate a task,
//! shape a reply) → [`broker`] (connection, topology, confirmed publishing) → [`worker`]
//! (delivery → validate → engine → reply → ack / retry / dead-letter; reconnect and shutdown)
//! → [`retry`] (the policy: what is retried, after how long) → [`engine`] (the llama.cpp
//! thread and its slots). [`client`] is the caller's side of the contract (publish a task,
//! await its reply), which [`gateway`] (the OpenAI HTTP API) builds on; [`dlq`] inspects and
//! replays dead letters; [`task_file`] decides what a task file (`warren submit --file`)
//! still needs; [`redis_link`] is the time-bounded Redis connection the gateway's state and
//! the worker's finished-task marks share; [`clock`] reads wall-clock timestamps;
//! [`telemetry`] sets up logs, metrics and readiness; `cli` holds the `warren` subcommands
//! and `bench` the load generator behind `warren bench` (both private to the binary).
//! docs/src/architecture.md maps every module.

// No unsafe code outside five engine modules, each of which allows it for itself and gives
// every block a SAFETY comment: engine/chat_template/ (llama.cpp's chat code through
// native/chat.cpp: the template in mod.rs, a task's output parser in output.rs), engine/grammar.rs (llama.cpp's process-wide log callback, and the JSON
// Schema converter of native/schema_grammar.cpp), engine/grammar_rules.rs (llama.cpp's GBNF
// parser through native/grammar_rules.cpp), engine/device_sampling.rs (llama.cpp's
// per-sequence sampler API, which llama-cpp-2 does not wrap) and engine/embedding_model.rs
// (the embed role's model and context, owned through llama-cpp-sys-2's raw calls).
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod bench;
pub mod broker;
mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod dlq;
pub mod engine;
pub mod gateway;
pub mod protocol;
pub mod redis_link;
pub mod retry;
pub mod task_file;
pub mod telemetry;
pub mod tls;
pub mod worker;

pub use cli::main as run_cli;
