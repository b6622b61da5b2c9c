//! Shared-prefix reuse, end to end on the real model: a task whose prompt starts with what a
//! slot's KV cells already hold reads only the rest of it, and nobody can tell from the
//! output. Every text is compared with the same task run by a worker without the cache.

use std::collections::HashMap;

use crate::common::{Names, WorkerProcess, PATIENCE};
use warren::client::{Client, Incoming, Pending};
use warren::protocol::TaskBody;
use warren::protocol::{Reply, ReplyStatus};

/// A system prompt of a hundred and some tokens (more than two default prompt chunks), as
/// upstream services put before every question. Its length is what the batch-size-1 tests
/// spend their time reading, token by token.
fn system_prompt() -> String {
    let rules: Vec<String> = (1..=5)
        .map(|n| {
            format!(
                "Rule {n}: when a customer asks about order number {}, answer politely, \
                 name the warehouse in {}, and never promise delivery before day {}.",
                1000 + n * 37,
                ["Lyon", "Oslo", "Porto", "Graz"][n % 4],
                n % 7 + 2
            )
        })
        .collect();
    format!(
        "You are the support assistant of a small shop.\n{}\n",
        rules.join("\n")
    )
}

const QUESTIONS: [&str; 6] = [
    "Question: where is order 1037 shipped from?\nAnswer:",
    "Question: can you promise delivery tomorrow?\nAnswer:",
    "Question: which rule covers order 1111?\nAnswer:",
    "Question: how should I greet a customer?\nAnswer:",
    "Question: what happens on day 3?\nAnswer:",
    "Question: list two warehouses.\nAnswer:",
];

/// llama.cpp's CPU kernels compute a token's matrix products with a 4-row GEMM or a 1-row
/// GEMV depending on its row in the batch, and the two round differently: a greedy text can
/// change with how its prompt was cut into batches, cache or no cache (and with its batch
/// neighbours). Batches of at most 2 tokens (batch size 1, 2 slots) always take the GEMV,
/// so any difference left would be the cache's own.
const ONE_TOKEN_ROWS: (&str, &str) = ("WARREN__ENGINE__BATCH_SIZE", "1");

fn task(question: &str) -> TaskBody {
    TaskBody {
        max_tokens: Some(24),
        ..TaskBody::prompt(format!("{}\n{question}", system_prompt()))
    }
}

async fn client(names: &Names) -> Client {
    names.client("warren-test-prefix").await
}

/// The final reply of `pending`, which must be `ok`.
async fn ok_answer(pending: Pending) -> Reply {
    let answer = tokio::time::timeout(PATIENCE, pending.reply())
        .await
        .expect("a reply in time")
        .expect("a reply");
    assert_eq!(answer.reply.status, ReplyStatus::Ok, "{:?}", answer.reply);
    answer.reply
}

async fn ok_reply(client: &Client, body: &TaskBody) -> Reply {
    let id = uuid::Uuid::new_v4().to_string();
    ok_answer(client.submit(&id, body).await.expect("submitted")).await
}

fn cached(reply: &Reply) -> u32 {
    reply.usage.map_or(0, |u| u.cached_prompt_tokens)
}

/// Every question's greedy text from a worker that never reuses a prefix, computed once for
/// every test that compares with it (reading each prompt a token at a time is slow).
async fn reference_texts() -> HashMap<&'static str, String> {
    static TEXTS: tokio::sync::OnceCell<HashMap<&'static str, String>> =
        tokio::sync::OnceCell::const_new();
    TEXTS.get_or_init(compute_reference_texts).await.clone()
}

async fn compute_reference_texts() -> HashMap<&'static str, String> {
    let names = Names::new("prefixref");
    let worker = WorkerProcess::start(
        &names,
        &[("WARREN__ENGINE__PREFIX_CACHE", "false"), ONE_TOKEN_ROWS],
    )
    .await;
    let client = client(&names).await;
    let mut texts = HashMap::new();
    for question in QUESTIONS {
        let reply = ok_reply(&client, &task(question)).await;
        assert_eq!(cached(&reply), 0, "nothing is reused without the cache");
        texts.insert(question, reply.text.unwrap_or_default());
    }
    client.close().await;
    drop(worker);
    texts
}

#[tokio::test]
async fn in_one_kv_cache_a_reused_prefix_is_shared_and_tasks_at_once_are_all_answered() {
    let reference = reference_texts().await;
    let names = Names::new("prefixunified");
    let _worker = WorkerProcess::start(
        &names,
        &[
            ("WARREN__ENGINE__SLOTS", "2"),
            ("WARREN__ENGINE__KV_UNIFIED", "true"),
            ONE_TOKEN_ROWS,
        ],
    )
    .await;
    let client = client(&names).await;
    let first = ok_reply(&client, &task(QUESTIONS[0])).await;
    let system_tokens = first.usage.map_or(0, |u| u.prompt_tokens) / 2;
    // One after another, each task alone in the cache with the prefix it shares.
    for question in QUESTIONS {
        let reply = ok_reply(&client, &task(question)).await;
        assert!(cached(&reply) > system_tokens, "{:?}", reply.usage);
        assert_eq!(
            reply.text.as_deref(),
            reference.get(question).map(String::as_str),
            "{question}"
        );
    }
    // All at once: every task answered, the prefix read at most once per slot.
    let mut pending = Vec::new();
    for question in QUESTIONS {
        let id = uuid::Uuid::new_v4().to_string();
        pending.push(
            client
                .submit(&id, &task(question))
                .await
                .expect("submitted"),
        );
    }
    for answer in pending {
        let reply = ok_answer(answer).await;
        assert!(cached(&reply) > system_tokens, "{:?}", reply.usage);
        assert!(!reply.text.unwrap_or_default().is_empty());
    }
    client.close().await;
}

#[tokio::test]
async fn a_reused_prefix_changes_nothing_in_the_output_one_task_after_another() {
    let reference = reference_texts().await;
    let names = Names::new("prefixseq");
    let _worker =
        WorkerProcess::start(&names, &[("WARREN__ENGINE__SLOTS", "2"), ONE_TOKEN_ROWS]).await;
    let client = client(&names).await;

    let first = ok_reply(&client, &task(QUESTIONS[0])).await;
    assert_eq!(cached(&first), 0, "the first task finds an empty cache");
    let system_tokens = first.usage.map_or(0, |u| u.prompt_tokens) / 2;
    // Each question after another one: the slot holds the system prompt and a question that
    // differs from the one asked.
    for question in QUESTIONS.iter().skip(1).chain(QUESTIONS.first()) {
        let reply = ok_reply(&client, &task(question)).await;
        assert!(
            cached(&reply) > system_tokens,
            "the system prompt is reused: {:?}",
            reply.usage
        );
        assert_eq!(
            reply.text.as_deref(),
            reference.get(question).map(String::as_str),
            "{question}"
        );
    }
    let last = QUESTIONS[0]; // the last one asked
    let same_again = ok_reply(&client, &task(last)).await;
    assert_eq!(
        same_again.text.as_deref(),
        reference.get(last).map(String::as_str),
        "an identical prompt reused whole"
    );
    let prompt_tokens = same_again.usage.map_or(0, |u| u.prompt_tokens);
    // Prompts are cut into pieces of 2 here (the batch holds 2 tokens): an identical prompt
    // reuses every whole piece before its last token.
    assert_eq!(
        cached(&same_again),
        (prompt_tokens - 1) / 2 * 2,
        "an identical prompt reads again only its last token and what follows its last piece"
    );
    client.close().await;
}

#[tokio::test]
async fn a_reused_prefix_changes_nothing_under_slot_churn_and_a_copy_from_a_busy_slot() {
    let reference = reference_texts().await;
    let names = Names::new("prefixchurn");
    let _worker =
        WorkerProcess::start(&names, &[("WARREN__ENGINE__SLOTS", "2"), ONE_TOKEN_ROWS]).await;
    let client = client(&names).await;

    // A long task holds slot 0; once it generates, its prompt's cells are complete, and the
    // next task (slot 1 holds nothing) starts from a copy of them. It ends among the six below.
    let long = TaskBody {
        max_tokens: Some(48),
        stream: Some(true),
        ..task(QUESTIONS[0])
    };
    let mut running = client.submit("long", &long).await.expect("submitted");
    loop {
        match tokio::time::timeout(PATIENCE, running.next()).await {
            Ok(Some(Incoming::Chunk(_))) => break,
            Ok(Some(Incoming::Started)) => continue,
            other => panic!("the long task should stream first: {other:?}"),
        }
    }
    let copied = ok_reply(&client, &task(QUESTIONS[1])).await;
    assert!(
        cached(&copied) > 0,
        "a busy slot's prefix is copied: {:?}",
        copied.usage
    );
    assert_eq!(
        copied.text.as_deref(),
        reference.get(QUESTIONS[1]).map(String::as_str)
    );

    // Six at once on two slots: tasks take whichever slot frees first.
    let mut waiting = Vec::new();
    for question in QUESTIONS {
        let id = uuid::Uuid::new_v4().to_string();
        let pending = client
            .submit(&id, &task(question))
            .await
            .expect("submitted");
        waiting.push((question, pending));
    }
    for (question, pending) in waiting {
        let reply = ok_answer(pending).await;
        assert_eq!(
            reply.text.as_deref(),
            reference.get(question).map(String::as_str),
            "{question}"
        );
    }
    ok_answer(running).await;
    client.close().await;
}

/// A seeded (or greedy) task of `max_tokens` 32 after the system prompt.
fn seeded(question: &str, temperature: f64) -> TaskBody {
    TaskBody {
        max_tokens: Some(32),
        temperature: Some(temperature),
        seed: Some(1234),
        ..TaskBody::prompt(format!("{}\n{question}", system_prompt()))
    }
}

#[tokio::test]
async fn a_seeded_task_gives_the_same_text_read_cold_reused_whole_or_reused_in_part() {
    // The default configuration: one slot, the prefix cache on, the default batch and chunk.
    let names = Names::new("prefixseed");
    let _worker = WorkerProcess::start(&names, &[]).await;
    let client = client(&names).await;
    let unrelated = TaskBody {
        max_tokens: Some(2),
        ..TaskBody::prompt("Tomatoes grow best in warm soil.")
    };
    let questions = [
        "Question: where is order 1037 shipped from?\nAnswer:",
        "Question: which warehouse is in Oslo?\nAnswer:",
        "Question: who ships to Graz?\nAnswer:",
        "Question: may I promise delivery on day 2 for order 1074, please?\nAnswer:",
        "Q: hi\nA:",
        "Question: name a rule.\nAnswer:",
    ];
    let mut remainders = std::collections::BTreeSet::new();
    for (round, question) in questions.iter().enumerate() {
        // Sampled for every question, greedy for some: a near-tie flips a greedy text too.
        let temperatures: &[f64] = if round % 2 == 0 { &[0.7, 0.0] } else { &[0.7] };
        for &temperature in temperatures {
            let body = seeded(question, temperature);
            // Cold: the slot holds an unrelated prompt.
            ok_reply(&client, &unrelated).await;
            let cold = ok_reply(&client, &body).await;
            assert_eq!(cached(&cold), 0, "read cold: {:?}", cold.usage);
            let prompt_tokens = cold.usage.map_or(0, |u| u.prompt_tokens);
            remainders.insert(prompt_tokens % 4);
            // Reused whole: the slot holds this very task's prompt and text.
            let whole = ok_reply(&client, &body).await;
            // Reused in part: the slot holds another question after the same system prompt.
            // Its text is not compared: one token puts its prompt in the slot.
            let other = TaskBody {
                max_tokens: Some(1),
                ..seeded(questions[(round + 1) % questions.len()], temperature)
            };
            ok_reply(&client, &other).await;
            let part = ok_reply(&client, &body).await;
            for (how, reply) in [("reused whole", &whole), ("reused in part", &part)] {
                assert!(
                    cached(reply) >= 64,
                    "{how}: the system prompt's chunks are reused: {:?}",
                    reply.usage
                );
                assert_eq!(
                    reply.text, cold.text,
                    "{question} at temperature {temperature}, {how} ({:?})",
                    reply.usage
                );
            }
            assert!(cached(&whole) > cached(&part) || cached(&whole) == cached(&part));
        }
    }
    assert_eq!(
        remainders.len(),
        4,
        "prompt lengths cover every remainder mod 4: {remainders:?}"
    );
    client.close().await;
}
