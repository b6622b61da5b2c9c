//! `GET /v1/responses/{id}/input_items`: the conversation a stored response answered (its
//! input and, with `previous_response_id`, the turns before it; not its instructions) as
//! OpenAI's input items, a page at a time. Items are rebuilt from the stored chat turns, so
//! their ids are positional (`msg_<response>_<n>`), stable for a response but not the ids
//! the caller's items or an earlier response's output carried.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::by_id;
use crate::gateway::errors::ApiError;
use crate::gateway::intake::ApiKey;
use crate::gateway::paging::list_page;
use crate::gateway::Shared;
use crate::protocol::{ChatMessage, Role};

/// `?limit=&order=&after=` of the list.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ItemsPage {
    limit: usize,
    ascending: bool,
    after: Option<String>,
}

impl ItemsPage {
    /// The page asked for by the query's pairs; a parameter warren does not take is refused
    /// by name (`include`: the items hold nothing more to include).
    pub(super) fn parse(pairs: &[(String, String)]) -> Result<ItemsPage, ApiError> {
        let mut page = ItemsPage {
            limit: 20,
            ascending: false,
            after: None,
        };
        for (name, value) in pairs {
            match name.as_str() {
                "limit" => {
                    page.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                format!("`limit` must be from 1 to 100, not `{value}`"),
                                Some("limit".into()),
                            )
                        })?
                }
                "order" => {
                    page.ascending = match value.as_str() {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(ApiError::invalid(
                                format!("`order` must be `asc` or `desc`, not `{value}`"),
                                Some("order".into()),
                            ))
                        }
                    }
                }
                "after" => page.after = Some(value.clone()),
                "include" | "include[]" => {
                    return Err(ApiError::invalid(
                        format!(
                            "`include` ({value}) is not supported: input items here hold text \
                             and function calls only, with nothing more to include"
                        ),
                        Some("include".into()),
                    ))
                }
                other => {
                    return Err(ApiError::invalid(
                        format!("unknown query parameter `{other}`"),
                        Some(other.to_owned()),
                    ))
                }
            }
        }
        Ok(page)
    }

    /// This page of `items` (oldest first) and whether more follow; `after` must name one
    /// of them.
    pub(super) fn of(&self, mut items: Vec<Value>) -> Result<(Vec<Value>, bool), ApiError> {
        if !self.ascending {
            items.reverse();
        }
        let start = match &self.after {
            None => 0,
            Some(after) => match items.iter().position(|item| item["id"] == after.as_str()) {
                Some(at) => at + 1,
                None => {
                    return Err(ApiError::invalid(
                        format!("`after` names no input item of this response: `{after}`"),
                        Some("after".into()),
                    ))
                }
            },
        };
        let has_more = items.len() > start + self.limit;
        Ok((
            items.into_iter().skip(start).take(self.limit).collect(),
            has_more,
        ))
    }
}

/// The input items of response `id` that answered `conversation`, oldest first: a message
/// per turn with text, a `function_call` per call an assistant turn made, a
/// `function_call_output` per tool turn.
pub(super) fn items(id: &str, conversation: &[ChatMessage]) -> Vec<Value> {
    let response = id.strip_prefix("resp_").unwrap_or(id);
    let mut items: Vec<Value> = conversation.iter().flat_map(items_of).collect();
    for (n, item) in items.iter_mut().enumerate() {
        let kind = match item["type"].as_str() {
            Some("message") => "msg",
            Some("function_call") => "fc",
            _ => "fco",
        };
        item["id"] = json!(format!("{kind}_{response}_{n}"));
    }
    items
}

/// One turn's items, without their ids.
fn items_of(turn: &ChatMessage) -> Vec<Value> {
    if turn.role == Role::Tool {
        return vec![json!({
            "type": "function_call_output",
            "call_id": turn.tool_call_id.clone().unwrap_or_default(),
            "output": turn.content,
            "status": "completed",
        })];
    }
    let mut items = Vec::new();
    if !turn.content.is_empty() || turn.tool_calls.is_empty() {
        let content = if turn.role == Role::Assistant {
            json!({"type": "output_text", "text": turn.content, "annotations": []})
        } else {
            json!({"type": "input_text", "text": turn.content})
        };
        items.push(json!({
            "type": "message",
            "role": turn.role.as_str(),
            "status": "completed",
            "content": [content],
        }));
    }
    items.extend(turn.tool_calls.iter().map(|call| {
        json!({
            "type": "function_call",
            "call_id": call.id,
            "name": call.function.name,
            "arguments": call.function.arguments,
            "status": "completed",
        })
    }));
    items
}

/// `GET /v1/responses/{id}/input_items`, for the API key that made the response only.
pub async fn list(
    State(app): State<Arc<Shared>>,
    key: ApiKey,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::invalid(e.body_text(), None))?;
    let page = ItemsPage::parse(&pairs)?;
    let record = by_id::owned(&app, &id, &key.0).await?;
    let (data, has_more) = page.of(items(&id, &record.input))?;
    Ok(Json(list_page(data, has_more)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ToolCall;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn conversation() -> Vec<ChatMessage> {
        let mut call = ChatMessage::new(Role::Assistant, "");
        let mut weather = ToolCall::new("get_weather".into(), "{\"city\":\"Rome\"}".into());
        weather.id = "call_1".into();
        call.tool_calls.push(weather);
        let mut result = ChatMessage::new(Role::Tool, "sunny");
        result.tool_call_id = Some("call_1".into());
        vec![
            ChatMessage::new(Role::User, "Weather in Rome?"),
            call,
            result,
            ChatMessage::new(Role::Assistant, "Sunny."),
        ]
    }

    #[test]
    fn each_turn_becomes_the_items_openai_lists() {
        let items = items("resp_abc", &conversation());
        let kinds: Vec<&str> = items.iter().filter_map(|i| i["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "message",
                "function_call",
                "function_call_output",
                "message"
            ]
        );
        assert_eq!(items[0]["id"], "msg_abc_0");
        assert_eq!(items[0]["content"][0]["type"], "input_text");
        assert_eq!(items[0]["role"], "user");
        assert_eq!(items[1]["id"], "fc_abc_1");
        assert_eq!(items[1]["call_id"], "call_1");
        assert_eq!(items[1]["arguments"], "{\"city\":\"Rome\"}");
        assert_eq!(items[2]["call_id"], "call_1");
        assert_eq!(items[2]["output"], "sunny");
        assert_eq!(items[3]["content"][0]["type"], "output_text");
        assert_eq!(items[3]["content"][0]["text"], "Sunny.");
    }

    #[test]
    fn pages_run_newest_first_unless_asked_and_continue_after_an_id() {
        let all = items("resp_abc", &conversation());
        let first = ItemsPage::parse(&pairs(&[("limit", "3")])).unwrap();
        let (page, more) = first.of(all.clone()).unwrap();
        let ids: Vec<&str> = page.iter().filter_map(|i| i["id"].as_str()).collect();
        assert_eq!(
            (ids, more),
            (vec!["msg_abc_3", "fco_abc_2", "fc_abc_1"], true)
        );
        let next = ItemsPage::parse(&pairs(&[("limit", "3"), ("after", "fc_abc_1")])).unwrap();
        let (page, more) = next.of(all.clone()).unwrap();
        assert_eq!(
            (page[0]["id"].as_str(), page.len(), more),
            (Some("msg_abc_0"), 1, false)
        );
        let oldest = ItemsPage::parse(&pairs(&[("order", "asc")])).unwrap();
        assert_eq!(oldest.of(all).unwrap().0[0]["id"], "msg_abc_0");
    }

    #[test]
    fn what_is_not_served_is_refused_by_name() {
        for (query, param) in [
            (("include[]", "message.input_image.image_url"), "include"),
            (("limit", "0"), "limit"),
            (("limit", "101"), "limit"),
            (("order", "newest"), "order"),
            (("before", "x"), "before"),
        ] {
            let refused = ItemsPage::parse(&pairs(&[query])).unwrap_err();
            assert_eq!(refused.param.as_deref(), Some(param), "{query:?}");
        }
        let unknown = ItemsPage::parse(&pairs(&[("after", "msg_zzz_9")])).unwrap();
        let refused = unknown.of(items("resp_abc", &conversation())).unwrap_err();
        assert_eq!(refused.param.as_deref(), Some("after"));
    }
}
