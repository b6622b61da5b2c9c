//! OpenAI's list envelope, shared by the endpoints that list objects a page at a time
//! (files, batches, a response's input items).

use serde_json::{json, Value};

/// OpenAI's list envelope around one page of objects (`data`), each with an `id`.
pub fn list_page(data: Vec<Value>, has_more: bool) -> Value {
    let first = data.first().map(|o| o["id"].clone());
    let last = data.last().map(|o| o["id"].clone());
    json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more})
}
