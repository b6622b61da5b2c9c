"""Embeddings end to end: a worker with engine.role = "embed" on the default model behind the
gateway, driven with the official `openai` SDK (`client.embeddings.create`) and over AMQP with
pika. The default model is a base model, not an embedding model: its mean-pooled states are
enough to test the machinery (same text, same vector; different texts, different vectors;
normalization, dimensions, batches), not to rank documents."""

import json
import math
import struct

import httpx
import pytest

from conftest import Amqp, metric, sdk, start_gateway, wait_for

TEXTS = [
    "The rabbit ran across the frozen field at dawn.",
    "Quarterly revenue grew by twelve percent in the northern region.",
    "def add(a, b):\n    return a + b",
]


@pytest.fixture(scope="module")
def client(embed_stack):
    return sdk(embed_stack.gateway.base_url)


def as_float32(vector):
    return [struct.unpack("f", struct.pack("f", x))[0] for x in vector]


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


def embed(client, texts, **options):
    return [d.embedding for d in client.embeddings.create(model="m", input=texts, **options).data]


def test_the_sdk_gets_one_normalized_vector_per_text_as_floats_and_as_base64(client):
    from openai.types import CreateEmbeddingResponse

    raw = client.embeddings.with_raw_response.create(model="m", input=TEXTS, encoding_format="float")
    # The SDK's own type, validated strictly (its usual parsing does not validate).
    floats = CreateEmbeddingResponse.model_validate(json.loads(raw.text))
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert floats.object == "list"
    assert floats.usage.prompt_tokens > len(TEXTS) and floats.usage.total_tokens == floats.usage.prompt_tokens
    width = len(floats.data[0].embedding)
    assert width == 640, "gemma3-270m's hidden size"
    for data in floats.data:
        assert len(data.embedding) == width
        assert abs(norm(data.embedding) - 1.0) < 1e-4
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = client.embeddings.create(model="m", input=TEXTS)
    for f, b in zip(floats.data, decoded.data):
        assert as_float32(f.embedding) == as_float32(b.embedding)


def test_an_embed_worker_measures_its_tasks_as_a_generation_worker_does(embed_stack, client):
    scrape = lambda name: metric(embed_stack.worker.metrics_url, name)
    before = {name: scrape(name) for name in ("warren_task_duration_seconds_count", "warren_queue_wait_seconds_count",
                                                "warren_prompt_tokens_total", "warren_time_to_first_token_seconds_count")}
    answer = client.embeddings.create(model="m", input=TEXTS)
    # Recorded once the reply is committed, which the caller may see first.
    wait_for(lambda: scrape("warren_task_duration_seconds_count") == before["warren_task_duration_seconds_count"] + 1,
             "the task's duration recorded")
    assert scrape("warren_queue_wait_seconds_count") == before["warren_queue_wait_seconds_count"] + 1
    assert scrape("warren_prompt_tokens_total") == before["warren_prompt_tokens_total"] + answer.usage.prompt_tokens
    # No token is generated: nothing to time a first one by.
    assert scrape("warren_time_to_first_token_seconds_count") == before["warren_time_to_first_token_seconds_count"]


def test_the_same_text_gives_the_same_vector_and_different_texts_differ(client):
    first = embed(client, TEXTS[0])[0]
    again = embed(client, TEXTS[0])[0]
    assert first == again
    vectors = embed(client, TEXTS)
    for i in range(len(TEXTS)):
        for j in range(i + 1, len(TEXTS)):
            assert cosine(vectors[i], vectors[j]) < 0.99, (i, j, cosine(vectors[i], vectors[j]))


def test_a_batch_of_texts_equals_the_texts_one_by_one(client):
    together = embed(client, TEXTS)
    alone = [embed(client, text)[0] for text in TEXTS]
    # Each input's rows are padded to whole matmul tiles, so sharing a decode changes no bit.
    assert together == alone
    # Nor does the order they come in.
    assert embed(client, TEXTS[::-1]) == together[::-1]


def test_dimensions_cut_and_renormalize_and_token_arrays_are_taken(client):
    short = embed(client, TEXTS[0], dimensions=64)[0]
    assert len(short) == 64
    assert abs(norm(short) - 1.0) < 1e-4
    full = embed(client, TEXTS[0])[0]
    scale = norm(full[:64])
    assert max(abs(s - f / scale) for s, f in zip(short, full[:64])) < 1e-5
    tokens = embed(client, [[2, 818, 25342, 5055]])[0]
    assert len(tokens) == 640 and abs(norm(tokens) - 1.0) < 1e-4


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"input": "", "model": "m"}, "empty"),
        ({"input": ["fine", ""], "model": "m"}, "`input[1]` is empty"),
        ({"input": [], "model": "m"}, "at least one"),
        ({"input": ["x"] * 2049, "model": "m"}, "more than the limit of 2048"),
        ({"input": 5, "model": "m"}, "`input`"),
        ({"input": "a", "model": "m", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "model": "m", "truncate": "END"}, "truncate"),
        ({"input": "a", "model": "m", "dimensions": 0}, "dimensions"),
    ],
)
def test_hostile_requests_get_a_400_naming_the_problem(embed_stack, body, needle):
    response = httpx.post(f"{embed_stack.gateway.base_url}/embeddings", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body, code, needle",
    [
        ({"input": "rabbit " * 2000, "model": "m"}, "prompt_too_long", "more than the 1024"),
        ({"input": [[999999999]], "model": "m"}, "invalid_request", "beyond the model's vocabulary"),
        ({"input": "a", "model": "m", "dimensions": 4096}, "invalid_request", "more than the model's 640"),
    ],
)
def test_what_only_the_worker_can_tell_is_refused_with_its_code(embed_stack, body, code, needle):
    response = httpx.post(f"{embed_stack.gateway.base_url}/embeddings", json=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and needle in error["message"], error


def test_over_amqp_a_reply_carries_the_vectors_and_a_bad_task_is_dead_lettered(embed_stack):
    amqp = Amqp(embed_stack.names)
    try:
        queue = embed_stack.names.embeddings
        good = amqp.send({"input": TEXTS[:2], "normalize": False}, queue=queue)
        reply = amqp.reply(good)
        assert reply["status"] == "ok" and reply["text"] is None, reply
        assert len(reply["embeddings"]) == 2 and len(reply["embeddings"][0]) == 640
        assert abs(norm(reply["embeddings"][0]) - 1.0) > 1e-3, "normalize: false keeps the pooled state"
        assert reply["usage"]["prompt_tokens"] > 2 and reply["usage"]["completion_tokens"] == 0
        bad = amqp.send({"input": ["ok", ""]}, queue=queue)
        failed = amqp.reply(bad)
        assert failed["status"] == "error" and failed["error"]["code"] == "invalid_request", failed
        headers, body = amqp.dead_letter(bad)
        assert headers["x-warren-error-code"] == "invalid_request"
        assert body == {"input": ["ok", ""]}
        # A generation task sent to the embeddings queue is refused by name, not run.
        wrong = amqp.send({"prompt": "Hello"}, queue=queue)
        refused = amqp.reply(wrong)
        assert "`input` is required" in refused["error"]["message"], refused
    finally:
        amqp.connection.close()


def test_without_an_embed_worker_the_gateway_says_so(embed_stack):
    # A second gateway whose embeddings queue no worker has declared.
    names = embed_stack.names
    gateway = start_gateway(names, topology__embeddings_queue=f"{names.base}.nobody")
    try:
        response = httpx.post(f"{gateway.base_url}/embeddings", json={"input": "a", "model": "m"}, timeout=30)
    finally:
        gateway.stop()
    assert response.status_code == 503, response.text
    assert "no worker embeds" in response.json()["error"]["message"]


def test_a_body_that_only_its_deadline_takes_over_the_task_limit_is_refused_at_once(embed_stack):
    # The task the gateway publishes is the input plus `version` and `deadline_ms`: 184 bytes
    # read, about 213 published, against a limit of 200.
    gateway = start_gateway(embed_stack.names, limits__max_body_bytes=200)
    try:
        response = httpx.post(f"{gateway.base_url}/embeddings", json={"input": "a" * 160, "model": "m"},
                              timeout=30)
        fits = httpx.post(f"{gateway.base_url}/embeddings", json={"input": "a" * 100, "model": "m"}, timeout=60)
    finally:
        gateway.stop()
    assert response.status_code == 400, response.text
    assert "limit of 200 bytes" in response.json()["error"]["message"], response.text
    assert fits.status_code == 200, fits.text


def test_a_batch_of_embedding_requests_writes_openais_lists_and_refuses_bad_lines(client):
    from test_batch import each_once, run_batch, wait_final

    def line(custom_id, **body):
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", **body}}

    lines = [
        line("one", input=TEXTS[0]),
        line("two", input=TEXTS[1:], dimensions=32),
        line("empty", input=""),
        line("base64", input="a", encoding_format="base64"),
    ]
    batch = wait_final(client, run_batch(client, lines, endpoint="/v1/embeddings").id)
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == 3 and batch.request_counts.failed == 1
    results = each_once(client, batch, lines)
    one = results["one"]["response"]
    assert one["status_code"] == 200 and one["body"]["object"] == "list"
    assert one["body"]["data"][0]["embedding"] == embed(client, TEXTS[0], encoding_format="float")[0]
    two = results["two"]["response"]["body"]["data"]
    assert [len(d["embedding"]) for d in two] == [32, 32]
    assert results["empty"]["response"]["status_code"] == 400
    # Asked for as base64: the float32 bytes the endpoint itself would send.
    [packed] = results["base64"]["response"]["body"]["data"]
    [alone] = embed(client, "a", encoding_format="base64")
    assert isinstance(alone, str) and packed["embedding"] == alone


def test_under_routing_by_model_a_batch_s_embeddings_still_go_to_the_embed_workers(embed_stack):
    # As a request of their own does, whatever model they name: only generations are routed.
    from test_batch import run_batch, wait_final

    names = embed_stack.names
    gateway = start_gateway(names, topology__tasks_exchange=f"{names.base}.tasks", gateway__models="chat-only")
    try:
        client = sdk(gateway.base_url)
        alone = client.embeddings.create(model="an-embedder", input="a")
        assert len(alone.data) == 1
        lines = [{"custom_id": "one", "method": "POST", "url": "/v1/embeddings",
                  "body": {"model": "an-embedder", "input": "a"}}]
        batch = wait_final(client, run_batch(client, lines, endpoint="/v1/embeddings").id)
        assert batch.status == "completed", batch
        assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 0), batch
    finally:
        gateway.stop()
