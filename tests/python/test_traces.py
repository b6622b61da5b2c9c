"""Traces across the queue: a real worker and gateway export their spans over OTLP/HTTP to a
receiver built from the OpenTelemetry project's protobuf definitions, and each test follows
one request's trace: from the caller's W3C `traceparent` (HTTP or AMQP header) through the
gateway, the queue and the worker, and back on the reply."""

import json
import os
import secrets
import time

import pytest

from conftest import PATIENCE, Amqp, Names, sdk, start_gateway, start_worker
from otlp_receiver import Receiver

# The exporters send what they have every 200 ms instead of every 5 s.
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "200"}


def caller_context(sampled=True):
    """A caller's trace id, span id and `traceparent`."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


@pytest.fixture(scope="module")
def traced(request):
    receiver = Receiver()
    names = Names("traces")
    os.environ.update(FAST_EXPORT)
    try:
        worker = start_worker(names, engine__slots=2, worker__fault_injection="true",
                              retry__initial_delay_ms=200, retry__jitter=0, trace__endpoint=receiver.endpoint)
        gateway = start_gateway(names, trace__endpoint=receiver.endpoint)
    finally:
        for key in FAST_EXPORT:
            os.environ.pop(key, None)
    yield type("Traced", (), {"names": names, "worker": worker, "gateway": gateway, "receiver": receiver})
    gateway.stop()
    worker.stop()
    names.delete()
    receiver.close()


def one(spans, **match):
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one span with {match}, found {[(s.service, s.name, s.kind) for s in found]}"
    return found[0]


def assert_connected(spans, root_parent):
    """Every span's parent is the caller's span or another span of the trace."""
    ids = {s.span_id for s in spans} | {root_parent}
    orphans = [(s.service, s.name) for s in spans if s.parent_id not in ids]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}"


def worker_done(spans):
    return any(s.service == "warren-worker" and s.name == "commit" for s in spans)


def both_done(spans):
    """The worker committed and the gateway's request span ended (each exports on its own)."""
    return worker_done(spans) and any(s.service == "warren-gateway" and s.kind == "server" for s in spans)


def test_one_chat_request_is_one_trace_across_gateway_and_worker(traced):
    trace_id, caller_span, traceparent = caller_context()
    raw = sdk(traced.gateway.base_url).chat.completions.with_raw_response.create(
        model="gemma3-270m", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6,
        temperature=0, extra_headers={"traceparent": traceparent})
    assert raw.parse().choices[0].message.content is not None
    # The response names the request's span in the caller's trace.
    assert raw.headers["traceresponse"].split("-")[1] == trace_id

    spans = traced.receiver.wait_for(trace_id, both_done)
    assert {s.service for s in spans} == {"warren-gateway", "warren-worker"}
    request = one(spans, service="warren-gateway", kind="server")
    assert request.name == "POST /v1/chat/completions"
    assert request.parent_id == caller_span
    assert request.attributes["http.response.status_code"] == 200
    assert raw.headers["traceresponse"].split("-")[2] == request.span_id

    publish = one(spans, service="warren-gateway", kind="producer")
    assert publish.parent_id == request.span_id
    assert publish.name == f"publish {traced.names.requests}"

    task = one(spans, service="warren-worker", kind="consumer")
    assert task.name == f"process {traced.names.requests}"
    assert task.parent_id == publish.span_id, "the worker continues the trace from the task's headers"
    assert task.attributes["outcome"] == "ok"
    queue_wait = one(spans, name="queue wait")
    assert queue_wait.parent_id == publish.span_id
    # It starts when the gateway sent the task (x-warren-published-us), inside the publish
    # span (which lasts until the broker's confirm), give or take the two clocks' reading.
    assert publish.start_ns - 1_000_000 <= queue_wait.start_ns <= publish.end_ns
    assert queue_wait.start_ns <= queue_wait.end_ns <= task.end_ns
    for phase in ("prompt", "generation", "commit"):
        assert one(spans, service="warren-worker", name=phase).parent_id == task.span_id
    assert one(spans, name="prompt").attributes["gen_ai.usage.input_tokens"] > 0
    assert_connected(spans, caller_span)


def test_a_request_without_traceparent_starts_its_own_trace(traced):
    raw = sdk(traced.gateway.base_url).completions.with_raw_response.create(
        model="gemma3-270m", prompt="One, two,", max_tokens=3, temperature=0)
    _, trace_id, span_id, _ = raw.headers["traceresponse"].split("-")
    spans = traced.receiver.wait_for(trace_id, both_done)
    request = one(spans, service="warren-gateway", kind="server")
    assert request.span_id == span_id and request.parent_id == ""
    assert_connected(spans, "")


def test_an_amqp_caller_s_trace_is_continued_and_named_on_the_reply(traced):
    trace_id, caller_span, traceparent = caller_context()
    amqp = Amqp(traced.names)
    try:
        task_id = amqp.send({"prompt": "Hello", "max_tokens": 3, "temperature": 0},
                             headers={"traceparent": traceparent})
        reply = amqp.reply(task_id)
        properties = amqp.reply_properties[task_id]
    finally:
        amqp.connection.close()
    assert reply["status"] == "ok"
    spans = traced.receiver.wait_for(trace_id, worker_done)
    task = one(spans, kind="consumer")
    assert task.parent_id == caller_span
    # The reply's traceparent is the worker's span of the task.
    assert properties.headers["traceparent"] == f"00-{trace_id}-{task.span_id}-01"


def test_a_retried_task_keeps_its_trace(traced):
    trace_id, caller_span, traceparent = caller_context()
    amqp = Amqp(traced.names)
    try:
        task_id = amqp.send(
            {"prompt": "[[warren-fault:fail-attempts=1]] Hello", "max_tokens": 3, "temperature": 0},
            headers={"traceparent": traceparent})
        reply = amqp.reply(task_id)
    finally:
        amqp.connection.close()
    assert reply["status"] == "ok" and reply["attempt"] == 2
    spans = traced.receiver.wait_for(
        trace_id, lambda s: len([x for x in s if x.kind == "consumer"]) == 2 and worker_done(s))
    attempts = sorted((s for s in spans if s.kind == "consumer"), key=lambda s: s.attributes["attempt"])
    assert [a.attributes["attempt"] for a in attempts] == [1, 2]
    assert [a.attributes["outcome"] for a in attempts] == ["retried", "ok"]
    # Both attempts continue the caller's trace: the delay queue kept its headers.
    assert all(a.parent_id == caller_span for a in attempts)
    assert_connected(spans, caller_span)


@pytest.mark.parametrize("headers", [None, {"traceparent": "00-not-a-trace-01"}], ids=["none", "malformed"])
def test_a_retried_task_that_came_without_trace_context_is_one_trace(traced, headers):
    amqp = Amqp(traced.names)
    try:
        task_id = amqp.send({"prompt": "[[warren-fault:fail-attempts=1]] Hi", "max_tokens": 3, "temperature": 0},
                            headers=headers)
        reply = amqp.reply(task_id)
        properties = amqp.reply_properties[task_id]
    finally:
        amqp.connection.close()
    assert reply["status"] == "ok" and reply["attempt"] == 2
    # The reply names the last attempt's span; the first attempt began the trace.
    _, trace_id, last_span, _ = properties.headers["traceparent"].split("-")
    spans = traced.receiver.wait_for(
        trace_id, lambda s: len([x for x in s if x.kind == "consumer"]) == 2 and worker_done(s))
    attempts = sorted((s for s in spans if s.kind == "consumer"), key=lambda s: s.attributes["attempt"])
    assert [a.attributes["attempt"] for a in attempts] == [1, 2]
    assert attempts[0].parent_id == "", "the first attempt is the trace's root"
    assert attempts[1].parent_id == attempts[0].span_id, "the retry continues the first attempt"
    assert attempts[1].span_id == last_span
    assert_connected(spans, "")


def test_a_dead_letter_keeps_the_trace_context(traced):
    trace_id, caller_span, traceparent = caller_context()
    amqp = Amqp(traced.names)
    try:
        task_id = amqp.send({"prompt": "x", "max_tokens": -1}, headers={"traceparent": traceparent})
        reply = amqp.reply(task_id)
        headers, _ = amqp.dead_letter(task_id)
    finally:
        amqp.connection.close()
    assert reply["status"] == "error"
    kept = headers["traceparent"]
    assert (kept.decode() if isinstance(kept, bytes) else kept) == traceparent
    spans = traced.receiver.wait_for(trace_id, worker_done)
    task = one(spans, kind="consumer")
    assert task.parent_id == caller_span
    assert task.attributes["outcome"] == "error"
    assert task.attributes["code"] == "invalid_request"
    assert task.status == "error", "a failed task is an error in the trace's views"
    # Which worker ran it.
    assert task.resource["service.instance.id"].endswith(f":{traced.worker.process.pid}")
    assert task.resource["service.version"]


def test_an_unsampled_caller_trace_is_not_recorded(traced):
    unsampled_id, _, unsampled = caller_context(sampled=False)
    sampled_id, _, sampled = caller_context()
    client = sdk(traced.gateway.base_url)
    for traceparent in (unsampled, sampled):
        client.completions.create(model="gemma3-270m", prompt="Hi", max_tokens=2, temperature=0,
                                  extra_headers={"traceparent": traceparent})
    # The sampled request's spans arrive after the unsampled one's would have.
    traced.receiver.wait_for(sampled_id, both_done)
    assert traced.receiver.trace(unsampled_id) == []


def test_a_background_response_is_one_trace(traced):
    trace_id, caller_span, traceparent = caller_context()
    client = sdk(traced.gateway.base_url)
    created = client.responses.create(model="gemma3-270m", input="Say hi", max_output_tokens=4, background=True,
                                      extra_headers={"traceparent": traceparent})
    deadline = time.monotonic() + PATIENCE
    while client.responses.retrieve(created.id).status not in ("completed", "failed", "incomplete"):
        assert time.monotonic() < deadline, "the background response never finished"
        time.sleep(0.2)
    spans = traced.receiver.wait_for(trace_id, both_done)
    request = one(spans, service="warren-gateway", kind="server")
    assert request.name == "POST /v1/responses" and request.parent_id == caller_span
    assert one(spans, kind="consumer").parent_id == one(spans, kind="producer").span_id
    assert_connected(spans, caller_span)


def test_batch_requests_join_the_trace_of_the_request_that_created_the_batch(traced):
    trace_id, caller_span, traceparent = caller_context()
    client = sdk(traced.gateway.base_url)
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gemma3-270m", "messages": [{"role": "user", "content": f"Count to {i}"}],
                       "max_tokens": 3, "temperature": 0}} for i in range(2)]
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    uploaded = client.files.create(file=("requests.jsonl", text.encode()), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  extra_headers={"traceparent": traceparent})
    deadline = time.monotonic() + PATIENCE * 2
    while client.batches.retrieve(batch.id).status != "completed":
        assert time.monotonic() < deadline, "the batch never completed"
        time.sleep(0.5)
    spans = traced.receiver.wait_for(
        trace_id, lambda s: len([x for x in s if x.name == "commit"]) == 2 and both_done(s))
    create = one(spans, service="warren-gateway", kind="server")
    assert create.name == "POST /v1/batches" and create.parent_id == caller_span
    requests = [s for s in spans if s.name == "batch request"]
    assert len(requests) == 2 and all(r.parent_id == create.span_id for r in requests)
    tasks = [s for s in spans if s.kind == "consumer"]
    publishes = {s.span_id: s.parent_id for s in spans if s.kind == "producer"}
    assert len(tasks) == 2
    assert all(publishes[t.parent_id] in {r.span_id for r in requests} for t in tasks)
    assert_connected(spans, caller_span)
