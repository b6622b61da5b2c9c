"""Background responses (OpenAI's Responses API, background mode) through the gateway, with the
official SDK: accepted at once, polled to the end, cancelled while queued or running,
idempotent, answered by any replica and after a gateway restart, with signed webhooks that
are retried. Real worker, real model, real RabbitMQ, real Redis."""

import json
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest

from conftest import Names, metric, sdk, start_gateway, start_worker

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STORY = "Write a long story about a lighthouse keeper."


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def certificate_authority(folder, name):
    """A CA of our own: its certificate and key, as PEM files in `folder`."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=warren test CA {name}",
            "-keyout", f"{folder}/{name}-ca.key", "-out", f"{folder}/{name}-ca.pem")
    return f"{folder}/{name}-ca.pem", f"{folder}/{name}-ca.key"


def server_certificate(folder, name, ca):
    """A certificate for localhost and 127.0.0.1 signed by `ca`: (certificate, key) paths."""
    ca_pem, ca_key = ca
    Path(f"{folder}/{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", f"{folder}/{name}.key", "-out", f"{folder}/{name}.csr")
    openssl("x509", "-req", "-in", f"{folder}/{name}.csr", "-CA", ca_pem, "-CAkey", ca_key, "-CAcreateserial",
            "-days", "2", "-extfile", f"{folder}/{name}.ext", "-out", f"{folder}/{name}.pem")
    return f"{folder}/{name}.pem", f"{folder}/{name}.key"


CERTS = tempfile.mkdtemp(prefix="warren-certs-")
TRUSTED_CA = certificate_authority(CERTS, "trusted")
UNKNOWN_CA = certificate_authority(CERTS, "unknown")


@pytest.fixture(scope="module")
def fleet():
    """One worker with one slot, so that tasks queue behind each other, and two gateway
    replicas sharing Redis and the results queue, trusting our own CA for https webhooks."""
    names = Names("background")
    common = {"gateway__webhook_secret": SECRET, "gateway__webhook_initial_delay_ms": 200,
              "gateway__webhook_ca_file": TRUSTED_CA[0]}
    worker = start_worker(names, engine__slots=1)
    first = start_gateway(names, **common)
    second = start_gateway(names, **common)
    yield type("Fleet", (), {"names": names, "worker": worker, "first": first, "second": second, "common": common})
    for process in (first, second, worker):
        process.stop()
    names.delete()


def wait_until_final(client, response_id, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.responses.retrieve(response_id, extra_query={"wait": 5})
        if response.status not in ("queued", "in_progress"):
            return response
    pytest.fail(f"{response_id} did not finish within {seconds} s")


def test_a_background_response_is_queued_at_once_and_completes(fleet):
    client = sdk(fleet.first.base_url)
    created = client.responses.create(model="gemma3-270m", input="The capital of France is", max_output_tokens=24, background=True, metadata={"ticket": "42"})
    assert created.id.startswith("resp_")
    assert created.status == "queued"
    assert created.metadata == {"ticket": "42"}
    done = wait_until_final(client, created.id)
    assert done.status in ("completed", "incomplete")
    assert done.output_text
    assert done.usage.output_tokens >= 1
    assert done.metadata == {"ticket": "42"}


def test_a_response_cut_at_max_output_tokens_is_incomplete(fleet):
    client = sdk(fleet.first.base_url)
    created = client.responses.create(model="m", input=STORY, max_output_tokens=3, background=True)
    done = wait_until_final(client, created.id)
    assert done.status == "incomplete"
    assert done.incomplete_details.reason == "max_output_tokens"
    assert done.usage.output_tokens == 3


def test_without_background_the_finished_response_is_the_answer(fleet):
    client = sdk(fleet.first.base_url)
    response = client.responses.create(model="m", input=[{"role": "user", "content": "Hello"}], instructions="Be brief.", max_output_tokens=8)
    assert response.status in ("completed", "incomplete")
    assert response.output_text


def test_a_conversation_continues_from_stored_responses_waiting_background_and_streamed(fleet):
    client = sdk(fleet.first.base_url)
    first = client.responses.create(model="m", input="My name is Ada.", max_output_tokens=6)
    # A waiting response is stored by default: any replica retrieves it.
    assert sdk(fleet.second.base_url).responses.retrieve(first.id).output_text == first.output_text
    second = client.responses.create(model="m", input="What is my name?", previous_response_id=first.id,
                                     max_output_tokens=6, background=True)
    second = wait_until_final(client, second.id)
    # The stored input and output came before the new input.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    # (At max_output_tokens the stream ends with response.incomplete, as OpenAI's.)
    events = list(client.responses.create(model="m", input="And again?", previous_response_id=second.id,
                                          max_output_tokens=6, stream=True))
    third = events[-1].response
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    assert client.responses.retrieve(third.id).output_text == third.output_text
    # The conversation the third answered, newest first, a page of two at a time (the SDK
    # follows `after`); the instructions are not input items.
    items = list(sdk(fleet.second.base_url).responses.input_items.list(third.id, limit=2))
    said = [(item.role, item.content[0].text) for item in items]
    assert said == [("user", "And again?"), ("assistant", second.output_text), ("user", "What is my name?"),
                    ("assistant", first.output_text), ("user", "My name is Ada.")], said
    assert len({item.id for item in items}) == 5
    oldest = client.responses.input_items.list(first.id, order="asc")
    assert [item.content[0].text for item in oldest.data] == ["My name is Ada."] and not oldest.has_more
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.input_items.list(third.id, include=["message.input_image.image_url"])
    assert caught.value.body["param"] == "include"
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_doesnotexist")


def test_a_response_not_stored_cannot_be_retrieved_or_continued(fleet):
    client = sdk(fleet.first.base_url)
    unstored = client.responses.create(model="m", input="Hello", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="m", input="x", max_output_tokens=2, previous_response_id=unstored.id)
    assert caught.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m", input="x", max_output_tokens=2, background=True, store=False)
    assert caught.value.body["param"] == "store"


def test_logprobs_asked_with_include_are_kept_with_the_background_response(fleet):
    client = sdk(fleet.first.base_url)
    created = client.responses.create(
        model="m", input="The capital of France is", max_output_tokens=6, background=True,
        include=["message.output_text.logprobs"], top_logprobs=2,
    )
    done = wait_until_final(client, created.id)
    part = done.output[0].content[0]
    assert len(part.logprobs) == done.usage.output_tokens
    assert "".join(entry.token for entry in part.logprobs) == part.text
    for entry in part.logprobs:
        assert len(entry.top_logprobs) == 2 and entry.top_logprobs[0].token == entry.token
    again = client.responses.retrieve(created.id)
    assert [e.logprob for e in again.output[0].content[0].logprobs] == [e.logprob for e in part.logprobs]
    plain = client.responses.create(model="m", input="Hello", max_output_tokens=2)
    assert plain.output[0].content[0].logprobs is None
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="m", input="Hi", top_logprobs=21)
    assert "top_logprobs" in raised.value.message
    # Streamed, each delta carries the entries of its own tokens, as the final object holds.
    events = list(client.responses.create(
        model="m", input="The capital of France is", max_output_tokens=12, stream=True,
        include=["message.output_text.logprobs"], top_logprobs=2,
    ))
    streamed = [entry.token for e in events if e.type == "response.output_text.delta" for entry in e.logprobs]
    final = events[-1].response.output[0].content[0]
    assert streamed == [entry.token for entry in final.logprobs] and streamed


def test_a_deleted_response_is_neither_retrieved_nor_continued(fleet):
    client = sdk(fleet.first.base_url)
    kept = client.responses.create(model="m", input="Hello", max_output_tokens=2)
    assert client.responses.delete(kept.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="m", input="x", max_output_tokens=2, previous_response_id=kept.id)
    assert caught.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(kept.id)
    # The answer the SDK does not read, as OpenAI's; a method the path does not take is a
    # 405 in OpenAI's envelope.
    again = client.responses.create(model="m", input="Hello", max_output_tokens=2)
    deleted = httpx.delete(f"{fleet.first.base_url}/responses/{again.id}", timeout=10)
    assert deleted.json() == {"id": again.id, "object": "response", "deleted": True}
    put = httpx.put(f"{fleet.first.base_url}/responses/{again.id}", json={}, timeout=10)
    assert put.status_code == 405 and put.json()["error"]["code"] == "method_not_allowed", put.text
    # A running response deleted: its task is cancelled, and the reply the worker still sends
    # for it does not bring the record back.
    cancelled = lambda: metric(fleet.worker.metrics_url, "warren_tasks_total", outcome="cancelled")
    before = cancelled()
    running = client.responses.create(model="m", input=STORY, max_output_tokens=600, background=True)
    deadline = time.monotonic() + 60
    while client.responses.retrieve(running.id).status != "in_progress":
        assert time.monotonic() < deadline, "the response did not start"
        time.sleep(0.1)
    client.responses.delete(running.id)
    while cancelled() < before + 1:
        assert time.monotonic() < deadline, "the worker did not cancel the deleted response's task"
        time.sleep(0.2)
    time.sleep(1)
    record = subprocess.run(["redis-cli", "EXISTS", f"warren:response:{running.id}"], capture_output=True, text=True)
    assert record.stdout.strip() == "0", "the worker's reply brought the deleted response back"


def test_an_unknown_response_is_a_404(fleet):
    with pytest.raises(openai.NotFoundError):
        sdk(fleet.first.base_url).responses.retrieve("resp_doesnotexist")


def test_any_replica_answers_for_any_response(fleet):
    created = sdk(fleet.first.base_url).responses.create(model="m", input="Hello", max_output_tokens=4, background=True)
    done = wait_until_final(sdk(fleet.second.base_url), created.id)
    assert done.status in ("completed", "incomplete")
    assert done.id == created.id


def test_cancelling_a_running_and_a_queued_response_frees_the_slot_for_the_next(fleet):
    client = sdk(fleet.first.base_url)
    cancelled = lambda: metric(fleet.worker.metrics_url, "warren_tasks_total", outcome="cancelled")
    before = cancelled()
    running = client.responses.create(model="m", input=STORY, max_output_tokens=600, background=True)
    queued = client.responses.create(model="m", input=STORY, max_output_tokens=600, background=True)
    short = client.responses.create(model="m", input="Hello", max_output_tokens=2, background=True)
    deadline = time.monotonic() + 60
    while client.responses.retrieve(running.id).status != "in_progress":
        assert time.monotonic() < deadline, "the first task never started"
        time.sleep(0.2)
    assert client.responses.retrieve(queued.id).status == "queued"
    assert client.responses.cancel(queued.id).status == "cancelled"
    assert sdk(fleet.second.base_url).responses.cancel(running.id).status == "cancelled"
    done = wait_until_final(client, short.id, seconds=60)
    assert done.status in ("completed", "incomplete")
    # Both long tasks were stopped by the workers, not run to the end.
    deadline = time.monotonic() + 60
    while cancelled() < before + 2:
        assert time.monotonic() < deadline, "the worker did not cancel both tasks"
        time.sleep(0.2)
    assert client.responses.retrieve(running.id).status == "cancelled"
    assert client.responses.retrieve(queued.id).status == "cancelled"
    # Cancelling a finished response returns it unchanged.
    assert client.responses.cancel(short.id).status == done.status


def test_the_same_idempotency_key_creates_one_response_even_when_racing(fleet):
    client = sdk(fleet.first.base_url)
    attempts = lambda: metric(fleet.worker.metrics_url, "warren_attempts_total")
    before = attempts()
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = client.responses.create(model="m", input="Hello", max_output_tokens=2, background=True, extra_headers=key)
    again = sdk(fleet.second.base_url).responses.create(model="m", input="Hello", max_output_tokens=2, background=True, extra_headers=key)
    assert again.id == first.id

    racing_key = {"Idempotency-Key": f"race-{time.time_ns()}"}
    ids, errors = [], []

    def create():
        try:
            ids.append(client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True, extra_headers=racing_key).id)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(set(ids)) == 1, ids
    wait_until_final(client, first.id)
    wait_until_final(client, ids[0])
    time.sleep(1)
    assert attempts() - before == 2, "one task per idempotency key reached the worker"


def test_a_repeat_waits_for_the_first_request_and_takes_over_a_key_it_gives_up(fleet):
    """The first request with a key records a response, then publishes its task. A repeat in
    between waits until the task is confirmed; should the first be refused (its record
    deleted, its key released), the repeat claims the key and is accepted itself. Redis is
    put here in the state of a first request caught between its record and its publish."""
    client = sdk(fleet.first.base_url)
    key = f"pending-{time.time_ns()}"
    probe = client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True,
                                    extra_headers={"Idempotency-Key": key})
    claim = subprocess.run(["redis-cli", "--scan", "--pattern", f"warren:idempotency:*:{key}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(claim) == 1, claim
    record = f"warren:response:{probe.id}"
    assert subprocess.run(["redis-cli", "HGET", record, "accepted"], capture_output=True, text=True).stdout.strip() == "1"
    # A first request still being accepted: its claim and its record, not yet marked.
    pending = claim[0].replace(key, f"{key}-2")
    subprocess.run(["redis-cli", "SET", pending, "resp_pending"], check=True, capture_output=True)
    subprocess.run(["redis-cli", "HSET", "warren:response:resp_pending", "status", "queued", "object", "{}",
                    "accepted", "0"], check=True, capture_output=True)
    answers = []
    repeat = threading.Thread(target=lambda: answers.append(client.responses.create(
        model="m", input="Hi", max_output_tokens=2, background=True, extra_headers={"Idempotency-Key": f"{key}-2"})))
    repeat.start()
    time.sleep(1)
    assert repeat.is_alive() and not answers, "the repeat waits for the first request's outcome"
    # The first is refused: it deletes its record, then releases its key.
    subprocess.run(["redis-cli", "DEL", "warren:response:resp_pending", pending], check=True, capture_output=True)
    repeat.join(timeout=30)
    assert answers and answers[0].id != "resp_pending", answers
    assert wait_until_final(client, answers[0].id).status in ("completed", "incomplete")


def test_a_repeat_takes_over_a_key_whose_first_request_was_abandoned(fleet):
    """A gateway that stops between claiming a key and its broker's confirm leaves a claim
    for a response that is never accepted. Past a bounded accept, a repeat takes the key
    over: its response runs, and the abandoned one is gone. Redis is put here in the state
    such a gateway leaves: a claim made a minute ago, with or without its record."""
    client = sdk(fleet.first.base_url)
    key = f"abandoned-{time.time_ns()}"
    client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True,
                            extra_headers={"Idempotency-Key": key})
    claim = subprocess.run(["redis-cli", "--scan", "--pattern", f"warren:idempotency:*:{key}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert len(claim) == 1, claim
    ttl = int(subprocess.run(["redis-cli", "TTL", claim[0]], capture_output=True, text=True).stdout)
    assert ttl > 120, ttl
    redis = lambda *args: subprocess.run(["redis-cli", *args], capture_output=True, text=True, check=True).stdout.strip()
    for case, recorded in (("recorded", True), ("unrecorded", False)):
        name = claim[0].replace(key, f"{key}-{case}")
        abandoned = f"resp_abandoned{time.time_ns()}"
        redis("SET", name, abandoned, "EX", str(ttl - 60))
        if recorded:
            redis("HSET", f"warren:response:{abandoned}", "status", "queued", "object", "{}", "accepted", "0")
        repeat = client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True,
                                         extra_headers={"Idempotency-Key": f"{key}-{case}"})
        assert repeat.id != abandoned, case
        assert redis("GET", name) == repeat.id, case
        assert redis("EXISTS", f"warren:response:{abandoned}") == "0", case
        assert wait_until_final(client, repeat.id).status in ("completed", "incomplete"), case
        again = client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True,
                                        extra_headers={"Idempotency-Key": f"{key}-{case}"})
        assert again.id == repeat.id, case
    # A claim as old whose response a worker has started was accepted (its gateway stopped
    # after the broker's confirm): a repeat answers with it.
    started = claim[0].replace(key, f"{key}-started")
    redis("SET", started, "resp_started", "EX", str(ttl - 60))
    redis("HSET", "warren:response:resp_started", "status", "in_progress", "object",
          '{"id": "resp_started", "object": "response", "status": "in_progress"}', "accepted", "0")
    repeat = httpx.post(f"{fleet.first.base_url}/responses", headers={"Idempotency-Key": f"{key}-started"},
                        json={"model": "m", "input": "Hi", "max_output_tokens": 2, "background": True}, timeout=30)
    assert repeat.json()["id"] == "resp_started", repeat.text
    assert redis("GET", started) == "resp_started"
    redis("DEL", "warren:response:resp_started")
    # A claim as young as a live request's is not taken over: the repeat waits for it.
    young = claim[0].replace(key, f"{key}-young")
    redis("SET", young, "resp_young", "EX", str(ttl))
    with pytest.raises(openai.InternalServerError, match="still being accepted"):
        client.responses.create(
            model="m", input="Hi", max_output_tokens=2, background=True, extra_headers={"Idempotency-Key": f"{key}-young"})
    assert redis("GET", young) == "resp_young"


def test_a_result_that_arrives_while_the_gateway_is_down_is_reported_after_its_restart(fleet):
    gateway = start_gateway(fleet.names, **fleet.common)
    client = sdk(gateway.base_url)
    created = client.responses.create(model="m", input="Hello", max_output_tokens=16, background=True)
    gateway.kill()
    # The other replicas go down too: nobody consumes the results while the worker finishes.
    fleet.first.kill()
    fleet.second.kill()
    time.sleep(5)
    gateway.start()
    fleet.first.start()
    fleet.second.start()
    try:
        done = wait_until_final(client, created.id)
        assert done.status in ("completed", "incomplete")
        assert done.output_text
    finally:
        gateway.stop()


def test_a_record_that_cannot_be_read_is_a_500_not_a_store_outage(fleet):
    client = sdk(fleet.first.base_url)
    created = client.responses.create(model="m", input="Hello", max_output_tokens=2, background=True)
    wait_until_final(client, created.id)
    subprocess.run(["redis-cli", "HSET", f"warren:response:{created.id}", "status", "bogus"],
                   check=True, capture_output=True)
    # Not 503 `state_unavailable` ("Redis is down"): Redis answered, this build cannot read
    # what it holds.
    with pytest.raises(openai.InternalServerError) as broken:
        client.responses.retrieve(created.id)
    assert broken.value.body["code"] == "internal", broken.value.body
    assert "cannot be read" in broken.value.body["message"]
    # The other records are served as ever.
    other = client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True)
    assert wait_until_final(client, other.id).status in ("completed", "incomplete")


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that fails its first `failures` deliveries."""

    failures = 0
    received = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append((body, dict(self.headers)))
        status = 500 if len(Receiver.received) <= Receiver.failures else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_signed_webhook_is_retried_until_the_receiver_takes_it(fleet):
    Receiver.failures, Receiver.received = 2, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    client = sdk(fleet.first.base_url)
    try:
        created = client.responses.create(model="m", input="Hello", max_output_tokens=4, background=True, metadata={"callback_url": url})
        deadline = time.monotonic() + 90
        while len(Receiver.received) < 3:
            assert time.monotonic() < deadline, f"got {len(Receiver.received)} deliveries"
            time.sleep(0.2)
        time.sleep(1)
        assert len(Receiver.received) == 3, "no delivery after the one that succeeded"
        bodies = {body for body, _ in Receiver.received}
        assert len(bodies) == 1, "every retry carries the same event"
        body, headers = Receiver.received[-1]
        client.webhooks.verify_signature(body.decode(), headers, secret=SECRET)
        with pytest.raises(Exception):
            client.webhooks.verify_signature(body.decode(), headers, secret="whsec_" + "A" * 32)
        event = json.loads(body)
        assert event["type"] in ("response.completed", "response.incomplete")
        assert event["data"]["id"] == created.id
        # Every attempt and its outcome are kept in the response's state.
        stored = subprocess.run(["redis-cli", "HGET", f"warren:response:{created.id}", "meta"], capture_output=True, text=True).stdout
        meta = json.loads(stored)
        assert [a["outcome"] for a in meta["webhook_attempts"]] == ["500", "500", "200"]
        assert meta["webhook_delivered"] is True
        assert metric(fleet.first.metrics_url, "warren_gateway_webhook_attempts_total", result="failed") + metric(
            fleet.second.metrics_url, "warren_gateway_webhook_attempts_total", result="failed"
        ) >= 2
    finally:
        server.shutdown()


def https_receiver(certificate):
    """A fresh webhook receiver over TLS with `certificate` (certificate, key)."""
    Receiver.failures, Receiver.received = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def stored_meta(response_id):
    stored = subprocess.run(["redis-cli", "HGET", f"warren:response:{response_id}", "meta"], capture_output=True, text=True).stdout
    return json.loads(stored)


def with_callback(client, url):
    return client.responses.create(model="m", input="Hello", max_output_tokens=4, background=True, metadata={"callback_url": url})


def test_a_webhook_is_delivered_over_https_to_a_receiver_of_a_configured_ca(fleet):
    server = https_receiver(server_certificate(CERTS, "good", TRUSTED_CA))
    client = sdk(fleet.first.base_url)
    try:
        created = with_callback(client, f"https://localhost:{server.server_address[1]}/hook")
        deadline = time.monotonic() + 90
        while not Receiver.received:
            assert time.monotonic() < deadline, "no delivery over https"
            time.sleep(0.2)
        body, headers = Receiver.received[0]
        client.webhooks.verify_signature(body.decode(), headers, secret=SECRET)
        assert json.loads(body)["data"]["id"] == created.id
        wait_until_final(client, created.id)
        deadline = time.monotonic() + 10
        while not stored_meta(created.id).get("webhook_delivered"):
            assert time.monotonic() < deadline, stored_meta(created.id)
            time.sleep(0.2)
        assert [a["outcome"] for a in stored_meta(created.id)["webhook_attempts"]] == ["200"]
    finally:
        server.shutdown()


def test_a_receiver_whose_certificate_does_not_verify_is_a_recorded_failed_attempt(fleet):
    server = https_receiver(server_certificate(CERTS, "stranger", UNKNOWN_CA))
    client = sdk(fleet.first.base_url)
    try:
        created = with_callback(client, f"https://127.0.0.1:{server.server_address[1]}/hook")
        wait_until_final(client, created.id)
        deadline = time.monotonic() + 60
        while len(stored_meta(created.id).get("webhook_attempts", [])) < 5:
            assert time.monotonic() < deadline, stored_meta(created.id)
            time.sleep(0.2)
        meta = stored_meta(created.id)
        assert meta["webhook_delivered"] is False
        assert all("certificate" in a["outcome"].lower() for a in meta["webhook_attempts"]), meta
        assert not Receiver.received, "no request reaches a receiver that failed verification"
        # The gateway serves on.
        again = client.responses.create(model="m", input="Hi", max_output_tokens=2, background=True)
        assert wait_until_final(client, again.id).status in ("completed", "incomplete")
    finally:
        server.shutdown()


def test_a_callback_url_outside_the_allowed_hosts_is_refused(fleet):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(fleet.first.base_url).responses.create(model="m", input="Hi", background=True, metadata={"callback_url": "http://10.1.2.3/hook"})
    assert "webhook_allowed_hosts" in raised.value.message


def test_without_redis_background_endpoints_answer_503_and_nothing_is_published():
    names = Names("noredis")
    gateway = start_gateway(names, gateway__redis_url="redis://127.0.0.1:1")
    try:
        with pytest.raises(openai.InternalServerError) as raised:
            sdk(gateway.base_url).responses.create(model="m", input="Hi", background=True)
        assert raised.value.status_code == 503
        from conftest import queue_depth

        time.sleep(1)
        assert queue_depth(names.requests) == 0
    finally:
        gateway.stop()
        names.delete()
