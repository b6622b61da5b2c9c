//! A worker that cannot go on with a task. A task whose handler panics (a bug; fault
//! injection stands in for one) fails its attempts as `internal` and is dead-lettered, the
//! worker serving on with its prefetch place back.
//!
//! A worker whose engine thread stalls aborts itself (`engine.stall_timeout_ms`), so that the
//! broker hands its task to another worker, and a task that stalls every worker it reaches
//! ends as poison: answered, dead-lettered, the last worker serving on. The stall is a real
//! one, no fault injection: a grammar small enough to pass warren's check on building its
//! sampler, but so ambiguous that llama.cpp's work on each token multiplies.

use serde_json::json;

use crate::common::{header, ready_count, serving, Names, Serving};
use crate::failures::run_poison_task;

/// Three levels of `{0,n}` over `"a"?`: a text of `a`s parses n³ ways, and llama.cpp keeps
/// a stack for each (see src/engine/grammar_expansion.rs).
fn ambiguous_grammar(n: u32) -> String {
    format!(
        "root ::= a3 \"b\"\na3 ::= a2{{0,{n}}}\na2 ::= a1{{0,{n}}}\na1 ::= a0{{0,{n}}}\n\
         a0 ::= \"a\"?"
    )
}

#[tokio::test]
async fn a_task_that_stalls_the_engine_is_answered_as_poison_after_its_workers_abort() {
    let names = Names::new("stall");
    let task = json!({"prompt": "aaaaaaaaaaaa", "grammar": ambiguous_grammar(8), "max_tokens": 8});
    let settings = [("WARREN__ENGINE__STALL_TIMEOUT_MS", "2000")];
    let (reply, ended, mut worker) = run_poison_task(&names, &settings, &task).await;

    assert_eq!(
        ended.len(),
        3,
        "worker.max_redeliveries (3) stalls, then parked"
    );
    for log in &ended {
        assert!(
            log.contains("past engine.stall_timeout_ms (2000 ms)"),
            "{log}"
        );
    }
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "internal", "{reply}");
    assert_eq!(reply["error"]["retryable"], false, "{reply}");
    assert_eq!(ready_count(&names.dead).await, 1);
    assert!(
        worker.is_running(),
        "the last worker answered without running it"
    );
}

#[tokio::test]
async fn a_task_whose_handler_panics_fails_as_internal_and_frees_its_delivery() {
    let Serving {
        mut upstream,
        mut worker,
        names,
    } = serving(
        "panics",
        &[
            ("WARREN__WORKER__FAULT_INJECTION", "true"),
            ("WARREN__BROKER__PREFETCH", "1"),
            ("WARREN__RETRY__MAX_ATTEMPTS", "2"),
            ("WARREN__RETRY__INITIAL_DELAY_MS", "200"),
        ],
    )
    .await;

    let task = json!({"prompt": "[[warren-fault:panic]] Hello", "max_tokens": 2});
    let correlation_id = upstream.send(&names.requests, &task).await;
    let reply = upstream.reply(&correlation_id).await;
    assert_eq!(reply["status"], "error", "{reply}");
    assert_eq!(reply["error"]["code"], "internal", "{reply}");
    assert_eq!(reply["attempt"], 2, "retried as `internal` is: {reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("a bug in warren: fault injection: the handler panics"),
        "{reply}"
    );
    let (properties, _) = upstream.take_from(&names.dead, &correlation_id).await;
    assert_eq!(
        header(&properties, "x-warren-error-code").as_deref(),
        Some("internal")
    );

    // With one delivery in flight at most, a held delivery would keep this one from running.
    let after = json!({"prompt": "Hello", "max_tokens": 2});
    assert_eq!(
        upstream.request(&names.requests, &after).await["status"],
        "ok"
    );
    assert!(worker.is_running());
}
