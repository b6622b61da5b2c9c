//! The models the gateway serves: what `/v1/models` lists, and what a request's `model`
//! becomes on the broker. Without routing by model every task goes to the one requests queue
//! and `model` is only echoed; with `topology.tasks_exchange` set, `model` is the routing key
//! on the tasks exchange, and a model the gateway does not serve, or that no worker has
//! declared a queue for, is OpenAI's 404 `model_not_found`.
//!
//! It decides names only; publishing is the client's job.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::client::ClientError;
use crate::config::{Settings, TopologySettings};
use crate::gateway::errors::ApiError;
use crate::gateway::intake::ApiKey;
use crate::gateway::Shared;

/// The served models and whether tasks are routed by them.
#[derive(Debug, Clone)]
pub struct Models {
    served: Vec<String>,
    routed: bool,
    /// The queue of every task, and under routing by model the stem of each model's.
    topology: TopologySettings,
}

impl Models {
    /// The models of the configuration: `gateway.models` (or `gateway.model_name`) when
    /// routing by model, else `gateway.model_name`.
    pub fn new(settings: &Settings) -> Models {
        let routed = settings.topology.routes_by_model();
        let served = if routed {
            settings.gateway.served_models()
        } else {
            vec![settings.gateway.model_name.clone()]
        };
        Models {
            served,
            routed,
            topology: settings.topology.clone(),
        }
    }

    /// An interactive queue a task with `routing_key` ([`Models::routing_key`]) may land in:
    /// the requests queue, or under routing by model the model's own (sharded, its first
    /// shard: every worker of the model consumes every shard). Workers consume it (a
    /// batch-tier task's queue is only polled), so it says whether any worker serves.
    pub fn task_queue(&self, routing_key: Option<&str>) -> String {
        match routing_key {
            Some(model) => {
                let consumed = self
                    .topology
                    .consumed_queues(&self.topology.model_queue(model));
                consumed.into_iter().next().unwrap_or_default()
            }
            None => self.topology.requests_queue.clone(),
        }
    }

    /// The routing key of a request for `model`: `None` (the configured route) without
    /// routing by model; the model's name with it; a 404 for a model not served.
    pub fn routing_key<'a>(&self, model: &'a str) -> Result<Option<&'a str>, ApiError> {
        if !self.routed {
            return Ok(None);
        }
        if self.served.iter().any(|m| m == model) {
            Ok(Some(model))
        } else {
            Err(not_found(format!(
                "the model `{model}` does not exist; this gateway serves {}",
                self.served.join(", ")
            )))
        }
    }

    /// The `model` every reply to a request for `requested` names: the name `/v1/models`
    /// lists for it (under routing by model the requested name, which is served; else the one
    /// served name, whatever the caller wrote), so that replies, chunks, response objects and
    /// batch results agree.
    pub fn reply_name<'a>(&'a self, requested: &'a str) -> &'a str {
        match self.served.first() {
            Some(only) if !self.routed => only,
            _ => requested,
        }
    }

    /// The answer to a failed publish for `model`: under routing by model an unroutable
    /// task means no worker has declared that model's queue.
    pub fn publish_error(&self, model: &str, error: ClientError) -> ApiError {
        match error {
            ClientError::Unroutable(_) if self.routed => not_found(format!(
                "no worker serves the model `{model}` (no queue is bound for it)"
            )),
            other => other.into(),
        }
    }

    fn listed(&self, name: &str) -> bool {
        self.served.iter().any(|m| m == name)
    }
}

fn not_found(message: String) -> ApiError {
    let mut error = ApiError::not_found(message);
    error.code = "model_not_found".into();
    error
}

fn model_object(name: &str) -> Value {
    json!({"id": name, "object": "model", "created": 0, "owned_by": "warren"})
}

/// `GET /v1/models`.
pub async fn list(State(app): State<Arc<Shared>>, _key: ApiKey) -> Response {
    let data: Vec<Value> = app.models.served.iter().map(|m| model_object(m)).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{model}`.
pub async fn one(
    State(app): State<Arc<Shared>>,
    _key: ApiKey,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    if !app.models.listed(&name) {
        return not_found(format!("the model `{name}` does not exist")).into_response();
    }
    Json(model_object(&name)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(tasks_exchange: &str, models: &str) -> Settings {
        let mut settings = Settings::defaults();
        settings.topology.tasks_exchange = tasks_exchange.into();
        settings.gateway.models = models.into();
        settings
    }

    #[test]
    fn without_routing_every_model_takes_the_configured_route() {
        let models = Models::new(&settings("", "ignored,here"));
        assert_eq!(models.routing_key("anything").unwrap(), None);
        assert!(models.listed("gemma3-270m") && !models.listed("here"));
        let unroutable = models.publish_error("m", ClientError::Unroutable("q".into()));
        assert_eq!(unroutable.status.as_u16(), 503);
    }

    #[test]
    fn with_routing_a_served_model_is_its_key_and_any_other_a_404() {
        let models = Models::new(&settings("warren.tasks", "small, large"));
        assert_eq!(models.routing_key("large").unwrap(), Some("large"));
        let unknown = models.routing_key("huge").unwrap_err();
        assert_eq!(
            (unknown.status.as_u16(), unknown.code.as_str()),
            (404, "model_not_found")
        );
        assert!(unknown.message.contains("small, large"));
        let unbound = models.publish_error("small", ClientError::Unroutable("small".into()));
        assert_eq!(
            (unbound.status.as_u16(), unbound.code.as_str()),
            (404, "model_not_found")
        );
    }

    #[test]
    fn with_routing_and_no_list_the_model_name_is_served() {
        let models = Models::new(&settings("warren.tasks", ""));
        assert_eq!(
            models.routing_key("gemma3-270m").unwrap(),
            Some("gemma3-270m")
        );
        assert!(models.routing_key("other").is_err());
    }
}
