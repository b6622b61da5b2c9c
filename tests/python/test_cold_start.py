"""While no worker serves a model (scaled to zero, or its first worker still starting): a
caller that sends `X-Warren-Cold-Start: refuse` is answered 503 `no_worker_ready` at once
with the configured Retry-After, and nothing of its request is queued; the gateway leaves one
wake-up message (header `x-warren-wake`) in the empty queue for a scaler to see, which a
worker acks without running or answering it. A caller without the header waits for the
worker, as before. Real gateway, worker, model and RabbitMQ; the official openai SDK, pika."""

import subprocess
import threading
import time

import httpx
import openai
import pika
import pytest

from conftest import AMQP_URL, WARREN, Names, sdk, start_gateway, start_worker

REFUSE = {"X-Warren-Cold-Start": "refuse"}


def held(queue):
    """Ready messages and consumers of `queue` now (exact: a passive declare)."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        method = connection.channel().queue_declare(queue, passive=True).method
        return method.message_count, method.consumer_count
    finally:
        connection.close()


def peek(queue):
    """The messages of `queue` (properties, body), each put back."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        seen = []
        while (got := channel.basic_get(queue))[0] is not None:
            method, properties, body = got
            seen.append((properties, body))
        if seen:
            channel.basic_recover(requeue=True)
        return seen
    finally:
        connection.close()


@pytest.fixture(scope="module")
def cold():
    names = Names("cold-start")
    # What the chart's topology Job does: the queues exist before any worker.
    for role in ("generate", "embed"):
        env = {"PATH": "/usr/bin:/bin", **names.env(), "WARREN__ENGINE__ROLE": role}
        declared = subprocess.run([str(WARREN), "topology"], env=env, capture_output=True, text=True, timeout=60)
        assert declared.returncode == 0, declared.stderr
    gateway = start_gateway(names, gateway__cold_start_retry_after_s=7)
    yield type("Cold", (), {"names": names, "gateway": gateway, "client": sdk(gateway.base_url, timeout=60)})
    gateway.stop()
    names.delete()


def test_a_caller_that_refuses_to_wait_gets_a_503_at_once_and_the_queue_one_wake_up(cold):
    chat = dict(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, extra_headers=REFUSE)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError) as refused:
            cold.client.chat.completions.create(**chat)
        assert refused.value.status_code == 503
        assert refused.value.code == "no_worker_ready", refused.value.body
        assert "X-Warren-Cold-Start" in refused.value.message
        assert refused.value.response.headers["retry-after"] == "7"
        assert refused.value.response.headers["x-should-retry"] == "false"
    for call in (
        lambda: cold.client.completions.create(model="m", prompt="Hi", max_tokens=2, extra_headers=REFUSE),
        lambda: cold.client.responses.create(model="m", input="Hi", max_output_tokens=16, extra_headers=REFUSE),
    ):
        with pytest.raises(openai.APIStatusError) as refused:
            call()
        assert (refused.value.status_code, refused.value.code) == (503, "no_worker_ready")

    # Nothing of the four requests was queued: one wake-up message, left by the first.
    messages = peek(cold.names.requests)
    assert len(messages) == 1, messages
    properties, body = messages[0]
    assert properties.headers["x-warren-wake"] is True, properties.headers
    assert body == b"{}"

    # Embeddings have their own queue, woken alike.
    with pytest.raises(openai.APIStatusError) as refused:
        cold.client.embeddings.create(model="m", input="Hi", extra_headers=REFUSE)
    assert (refused.value.status_code, refused.value.code) == (503, "no_worker_ready")
    assert held(cold.names.embeddings) == (1, 0)


def test_an_sdk_with_its_default_retries_raises_the_503_at_once(cold):
    # OpenAI's SDKs retry a 503 after its Retry-After (7 s here) unless told not to.
    sent = []
    counting = httpx.Client(event_hooks={"request": [sent.append]}, timeout=60)
    retrying = openai.OpenAI(base_url=cold.gateway.base_url, api_key="unused", http_client=counting)
    with pytest.raises(openai.APIStatusError) as refused:
        retrying.completions.create(model="m", prompt="Hi", max_tokens=2, extra_headers=REFUSE)
    assert refused.value.status_code == 503
    assert len(sent) == 1, f"the SDK retried (x-should-retry: false ignored): {sent}"


def test_a_cold_start_header_other_than_wait_or_refuse_is_a_400_naming_it(cold):
    answer = httpx.post(f"{cold.gateway.base_url}/chat/completions", headers={"X-Warren-Cold-Start": "never"},
                        json={"model": "m", "messages": [{"role": "user", "content": "Hi"}]}, timeout=30)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "X-Warren-Cold-Start"
    assert "`wait` or `refuse`" in error["message"]


def test_a_waiting_caller_is_served_once_a_worker_starts_and_the_worker_only_acks_the_wake_up(cold):
    outcome = {}

    def wait_for_answer():
        try:
            outcome["answer"] = cold.client.completions.create(
                model="m", prompt="The capital of France is", max_tokens=2,
                extra_headers={"X-Warren-Cold-Start": "wait"})
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    waiting = threading.Thread(target=wait_for_answer)
    waiting.start()
    time.sleep(2)
    assert waiting.is_alive(), f"a caller that waits is not refused: {outcome}"
    assert held(cold.names.requests) == (2, 0), "the wake-up and the waiting task"

    worker = start_worker(cold.names)
    try:
        waiting.join(timeout=120)
        assert not waiting.is_alive()
        assert "answer" in outcome, outcome
        assert outcome["answer"].usage.completion_tokens >= 1

        # With a worker consuming, a caller that refuses to wait is served.
        served = cold.client.completions.create(model="m", prompt="Hi", max_tokens=2, extra_headers=REFUSE)
        assert served.usage.completion_tokens >= 1

        # The wake-up was acked: not run, not answered, not dead-lettered.
        assert held(cold.names.requests) == (0, 1)
        assert held(cold.names.dead) == (0, 0)
        assert held(cold.names.results) == (0, 0)
        assert "a wake-up message: acked" in worker.log()
    finally:
        worker.stop()
