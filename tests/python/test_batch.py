"""OpenAI's Batch API on the gateway, driven by the official `openai` SDK against a real
worker on the real model: a JSONL file uploaded with `files.create`, run with
`batches.create`, followed with `batches.retrieve`, its output and error files downloaded
with `files.content`; malformed files and requests, cancel, and a gateway killed mid-batch."""

import json
import subprocess
import threading
import time

import httpx
import pytest
from openai import AuthenticationError, BadRequestError, NotFoundError

from conftest import PATIENCE, Names, free_port, metric, queue_depth, sdk, start_gateway, start_redis, start_worker, wait_for

FINAL = {"completed", "failed", "expired", "cancelled"}


def chat_line(custom_id, content, **body):
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gemma3-270m",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 8,
            "temperature": 0,
            **body,
        },
    }


def upload(client, lines, purpose="batch"):
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return client.files.create(file=("requests.jsonl", text.encode()), purpose=purpose)


def run_batch(client, lines, endpoint="/v1/chat/completions"):
    return client.batches.create(input_file_id=upload(client, lines).id, endpoint=endpoint, completion_window="24h")


def wait_final(client, batch_id, patience=PATIENCE * 2):
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} is still {batch.status} after {patience} s")


def wait_completed(client, batch_id, count):
    deadline = time.monotonic() + PATIENCE
    while client.batches.retrieve(batch_id).request_counts.completed < count:
        assert time.monotonic() < deadline, f"fewer than {count} requests finished"
        time.sleep(0.2)


def read_lines(client, file_id):
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def each_once(client, batch, lines):
    """custom_id -> its one result line, from either file; fails unless every request of
    `lines` has exactly one."""
    found = {}
    for line in read_lines(client, batch.output_file_id) + read_lines(client, batch.error_file_id):
        found.setdefault(line["custom_id"], []).append(line)
    assert sorted(found) == sorted(line["custom_id"] for line in lines)
    assert all(len(results) == 1 for results in found.values()), f"each request once: {found}"
    return {custom_id: results[0] for custom_id, results in found.items()}


def test_a_batch_answers_every_request_once_in_its_output_and_error_files(client, stack):
    ended = metric(stack.gateway.metrics_url, "warren_gateway_batches_ended_total", status="completed")
    published = metric(stack.gateway.metrics_url, "warren_gateway_batch_tasks_published_total")
    lines = [
        chat_line("greeting", "Say hello."),
        chat_line("colour", "Name a colour."),
        chat_line("too-cold", "Hi", temperature=-1),
        chat_line("number", "Count to three."),
    ]
    batch = client.batches.create(
        input_file_id=upload(client, lines).id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.status == "in_progress" and batch.metadata == {"job": "nightly"}
    batch = wait_final(client, batch.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (4, 3, 1)
    assert batch.completed_at and batch.finalizing_at and batch.in_progress_at

    outputs = read_lines(client, batch.output_file_id)
    assert [line["custom_id"] for line in outputs] == ["greeting", "colour", "number"], "in file order"
    for line in outputs:
        assert line["error"] is None and line["response"]["status_code"] == 200
        body = line["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["finish_reason"] in ("stop", "length")
        assert body["usage"]["completion_tokens"] >= 1
    errors = read_lines(client, batch.error_file_id)
    assert [line["custom_id"] for line in errors] == ["too-cold"]
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["type"] == "invalid_request_error"

    # The same greedy request sent on its own gets the same text.
    alone = client.chat.completions.create(**lines[0]["body"])
    assert outputs[0]["response"]["body"]["choices"][0]["message"]["content"] == alone.choices[0].message.content

    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    # Ops see it: one batch ended completed, three tasks published (the refused line is not).
    assert metric(stack.gateway.metrics_url, "warren_gateway_batches_ended_total", status="completed") == ended + 1
    assert metric(stack.gateway.metrics_url, "warren_gateway_batch_tasks_published_total") == published + 3
    assert batch.id in [b.id for b in client.batches.list(limit=100).data]
    # A page after a batch starts past it; after an id that names none of the caller's, a 404.
    assert batch.id not in [b.id for b in client.batches.list(limit=100, after=batch.id).data]
    with pytest.raises(NotFoundError):
        client.batches.list(after="batch_nowhere")


def test_a_completions_batch_gets_text_completion_objects(client):
    line = {"custom_id": "c1", "method": "POST", "url": "/v1/completions",
            "body": {"model": "gemma3-270m", "prompt": "The sky is", "max_tokens": 4, "temperature": 0}}
    batch = run_batch(client, [line], endpoint="/v1/completions")
    batch = wait_final(client, batch.id)
    assert batch.status == "completed" and batch.error_file_id is None
    [output] = read_lines(client, batch.output_file_id)
    assert output["response"]["body"]["object"] == "text_completion"
    assert isinstance(output["response"]["body"]["choices"][0]["text"], str)


def test_a_responses_batch_gets_response_objects_the_sdk_reads(client):
    from openai.types.responses import Response

    def line(custom_id, **body):
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses",
                "body": {"model": "gemma3-270m", "input": "The sky is", "max_output_tokens": 4, "temperature": 0,
                         **body}}

    lines = [line("r1", instructions="Be brief."), line("streamed", stream=True)]
    batch = wait_final(client, run_batch(client, lines, endpoint="/v1/responses").id)
    assert batch.status == "completed" and batch.request_counts.failed == 1, batch
    results = each_once(client, batch, lines)
    body = results["r1"]["response"]["body"]
    response = Response.model_validate(body)
    assert response.id.startswith("resp_") and response.status in ("completed", "incomplete")
    assert response.instructions == "Be brief." and response.service_tier == "flex"
    alone = client.responses.create(**lines[0]["body"])
    assert response.output_text == alone.output_text
    refused = results["streamed"]["response"]
    assert refused["status_code"] == 400 and refused["body"]["error"]["param"] == "stream"


def test_a_malformed_file_fails_the_batch_naming_its_lines(client):
    lines = [chat_line("a", "hi"), "this is not json", chat_line("a", "hi again"),
             {**chat_line("d", "hi"), "url": "/v1/completions"}]
    batch = run_batch(client, lines)
    assert batch.status == "failed" and batch.failed_at
    problems = [(error.code, error.line) for error in batch.errors.data]
    assert problems == [("invalid_json_line", 2), ("duplicate_custom_id", 3), ("mismatched_url", 4)]
    assert client.batches.retrieve(batch.id).status == "failed"


def test_impossible_requests_are_openai_errors_and_the_gateway_keeps_serving(client):
    good = upload(client, [chat_line("a", "hi")])
    with pytest.raises(BadRequestError) as endpoint:
        client.batches.create(input_file_id=good.id, endpoint="/v1/moderations", completion_window="24h")
    assert endpoint.value.body["param"] == "endpoint"
    with pytest.raises(BadRequestError):
        client.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="1h")
    with pytest.raises(NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(BadRequestError) as purpose:
        upload(client, [chat_line("a", "hi")], purpose="fine-tune")
    assert purpose.value.body["param"] == "purpose"
    with pytest.raises(NotFoundError):
        client.files.retrieve("file-nope")
    with pytest.raises(NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(NotFoundError):
        client.batches.cancel("batch_nope")
    assert client.models.list().data, "still serving"


def test_a_file_over_the_limit_is_a_413(stack):
    gateway = start_gateway(stack.names, gateway__max_file_bytes=1024)
    try:
        small = sdk(gateway.base_url)
        with pytest.raises(Exception) as too_large:
            upload(small, [chat_line(str(i), "x" * 100) for i in range(20)])
        assert getattr(too_large.value, "status_code", None) == 413
        assert upload(small, [chat_line("a", "hi")]).bytes > 0
    finally:
        gateway.stop()


def test_files_can_be_listed_downloaded_and_deleted(client):
    lines = [chat_line("a", "hi")]
    uploaded = upload(client, lines)
    assert uploaded.purpose == "batch" and uploaded.filename == "requests.jsonl"
    # Kept the completion window plus gateway.state_ttl_s (24 h here): it says when it goes.
    assert uploaded.expires_at == uploaded.created_at + 2 * 24 * 3600
    assert uploaded.id in [f.id for f in client.files.list().data]
    # OpenAI's list parameters: purpose, order, limit, after.
    older = upload(client, lines)
    newest_first = [f.id for f in client.files.list(purpose="batch").data]
    assert newest_first.index(older.id) < newest_first.index(uploaded.id)
    page = client.files.list(purpose="batch", order="asc", limit=1, after=uploaded.id)
    assert [f.id for f in page.data] == [newest_first[newest_first.index(uploaded.id) - 1]]
    # The module's first batch left output files among this key's files; the filter drops them.
    assert "batch_output" in {f.purpose for f in client.files.list().data}
    assert {f.purpose for f in client.files.list(purpose="batch").data} == {"batch"}
    with pytest.raises(BadRequestError):
        client.files.list(limit=0)
    assert json.loads(client.files.content(uploaded.id).text) == lines[0]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(NotFoundError):
        client.files.retrieve(uploaded.id)


def redis(*args):
    return subprocess.run(["redis-cli", *args], capture_output=True, text=True, check=True).stdout.strip()


def test_files_are_kept_as_long_as_their_expiration_policy_says(client):
    """OpenAI's policies: `expires_after` of an upload and `output_expires_after` of a batch,
    an hour to 30 days from the file's creation. The file objects' `expires_at` say when, and
    Redis's keys go then (their TTLs are read here; an hour is not waited for)."""
    hour, month = 3600, 30 * 24 * 3600
    lines = [chat_line("a", "hi")]
    text = (json.dumps(lines[0]) + "\n").encode()
    kept = client.files.create(file=("r.jsonl", text), purpose="batch",
                               expires_after={"anchor": "created_at", "seconds": month})
    assert kept.expires_at == kept.created_at + month
    assert month - 10 <= int(redis("TTL", f"warren:file:{kept.id}")) <= month
    owner = redis("HGET", f"warren:file:{kept.id}", "owner")
    # A file kept an hour, uploaded after it, does not shorten the list that finds both.
    short = client.files.create(file=("r.jsonl", text), purpose="batch",
                                expires_after={"anchor": "created_at", "seconds": hour})
    assert short.expires_at == short.created_at + hour
    assert hour - 10 <= int(redis("TTL", f"warren:file:{short.id}")) <= hour
    assert int(redis("TTL", f"warren:files:{owner}")) >= month - 10
    assert {kept.id, short.id} <= {f.id for f in client.files.list().data}

    batch = client.batches.create(input_file_id=short.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  output_expires_after={"anchor": "created_at", "seconds": 2 * hour})
    batch = wait_final(client, batch.id)
    assert batch.status == "completed", batch
    output = client.files.retrieve(batch.output_file_id)
    assert output.expires_at == output.created_at + 2 * hour
    assert 2 * hour - 10 <= int(redis("TTL", f"warren:file:{output.id}")) <= 2 * hour

    # A file whose key expired (deleted here, as its TTL would) leaves the listing and the list.
    redis("DEL", f"warren:file:{short.id}")
    assert short.id not in {f.id for f in client.files.list().data}
    assert short.id not in redis("LRANGE", f"warren:files:{owner}", "0", "-1").split()

    # Outside the bounds, or anchored elsewhere: a 400 naming the part.
    for policy, param in [({"anchor": "created_at", "seconds": 60}, "expires_after.seconds"),
                          ({"anchor": "created_at", "seconds": month + 1}, "expires_after.seconds"),
                          ({"anchor": "last_active_at", "seconds": hour}, "expires_after.anchor")]:
        with pytest.raises(BadRequestError) as refused:
            client.files.create(file=("r.jsonl", text), purpose="batch", expires_after=policy)
        assert refused.value.body["param"] == param
        with pytest.raises(BadRequestError) as refused:
            client.batches.create(input_file_id=kept.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  output_expires_after=policy)
        assert refused.value.body["param"] == f"output_{param}"
    with pytest.raises(BadRequestError) as refused:
        client.files.create(file=("r.jsonl", text), purpose="batch", extra_body={"expires_after[anchor]": "created_at"})
    assert refused.value.body["param"] == "expires_after[seconds]"


def test_a_file_is_served_while_redis_answers_slowly_within_its_bound(tmp_path):
    """Redis busy for a second (a slow disk, a large neighbour's call): the gateway's calls
    wait for it within their own bound (2 s; 120 s for a file's content), not the redis
    crate's default of half a second."""
    names = Names("batch-slow-redis")
    port = free_port()
    redis_server = start_redis(tmp_path, port, "--enable-debug-command", "yes")
    gateway = start_gateway(names, gateway__redis_url=f"redis://127.0.0.1:{port}")
    try:
        client = sdk(gateway.base_url)
        lines = [chat_line(f"r{i}", "x" * 1000) for i in range(2000)]
        uploaded = upload(client, lines)
        sleeping = threading.Thread(target=lambda: subprocess.run(
            ["redis-cli", "-p", str(port), "DEBUG", "SLEEP", "1.2"], capture_output=True, timeout=30))
        sleeping.start()
        # Redis asleep: a PING no longer answers at once.
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "DEBUG SLEEP never took hold"
            try:
                subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, timeout=0.3)
            except subprocess.TimeoutExpired:
                break
        content = client.files.content(uploaded.id).text
        sleeping.join()
        assert [json.loads(line)["custom_id"] for line in content.splitlines()] == [f"r{i}" for i in range(2000)]
    finally:
        gateway.stop()
        redis_server.terminate()
        redis_server.wait(timeout=30)
        names.delete()


def test_files_and_batches_belong_to_the_key_that_made_them(stack):
    gateway = start_gateway(stack.names, gateway__api_keys="key-one,key-two")
    try:
        one, two = sdk(gateway.base_url, api_key="key-one"), sdk(gateway.base_url, api_key="key-two")
        uploaded = upload(one, [chat_line("a", "hi")])
        with pytest.raises(NotFoundError):
            two.files.retrieve(uploaded.id)
        with pytest.raises(NotFoundError):
            two.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        with pytest.raises(AuthenticationError):
            sdk(gateway.base_url, api_key="wrong").files.list()
        batch = one.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        with pytest.raises(NotFoundError):
            two.batches.retrieve(batch.id)
        assert wait_final(one, batch.id).status == "completed"
    finally:
        gateway.stop()


def test_a_cancelled_batch_stops_and_accounts_for_every_request(stack):
    gateway = start_gateway(stack.names, gateway__batch_in_flight=1)
    try:
        client = sdk(gateway.base_url)
        lines = [chat_line(f"r{i}", f"Write a long story about the number {i}.", max_tokens=48) for i in range(12)]
        batch = run_batch(client, lines)
        wait_completed(client, batch.id, 1)
        assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
        batch = wait_final(client, batch.id)
        assert batch.status == "cancelled" and batch.cancelled_at
        assert 1 <= batch.request_counts.completed < 12
        found = each_once(client, batch, lines)
        not_run = [r for r in found.values() if r["error"] is not None]
        assert not_run and all(r["error"]["code"] == "batch_cancelled" for r in not_run)
        # A cancelled batch stays cancelled.
        assert client.batches.cancel(batch.id).status == "cancelled"
    finally:
        gateway.stop()


def test_a_cancelled_batchs_counts_stay_as_its_files_say_when_late_replies_come():
    """No worker while the batch is cancelled: its cancels reach nobody, and the worker that
    starts later runs its queued tasks. Their replies come after the batch ended and must not
    change its counts."""
    names = Names("batch-late")
    gateway = start_gateway(names, gateway__batch_in_flight=2)
    worker = None
    try:
        client = sdk(gateway.base_url)
        lines = [chat_line(f"r{i}", f"Tell me about {i}.") for i in range(3)]
        batch = run_batch(client, lines)
        wait_for(lambda: queue_depth(f"{names.requests}.batch") == 2, "two tasks queued")
        client.batches.cancel(batch.id)
        # The batch waits for its cancelled tasks (30 s at most), then ends with what it has.
        batch = wait_final(client, batch.id)
        assert batch.status == "cancelled"
        ended = batch.request_counts
        assert (ended.completed, ended.failed) == (0, 0)
        worker = start_worker(names)
        wait_for(lambda: queue_depth(f"{names.requests}.batch") == 0, "the late tasks run")
        wait_for(lambda: metric(worker.metrics_url, "warren_tasks_total", outcome="ok") == 2, "both answered")
        # The gateway's results consumer takes the replies: once nothing waits in its queue,
        # the counts are looked at for a few seconds more.
        wait_for(lambda: queue_depth(names.gateway_results) == 0, "the replies taken")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert client.batches.retrieve(batch.id).request_counts == ended
            time.sleep(0.2)
        found = each_once(client, batch, lines)
        assert all(r["error"]["code"] == "batch_cancelled" for r in found.values()), found
    finally:
        for process in (worker, gateway):
            if process is not None:
                process.stop()
        names.delete()


def test_an_expired_batch_stops_and_reports_what_did_not_run(stack):
    """The 24 h completion window cannot be waited for: the test moves the batch's
    `expires_at` (stored in Redis, read by the gateway at each round) into the past, as time
    would."""
    gateway = start_gateway(stack.names, gateway__batch_in_flight=1)
    try:
        client = sdk(gateway.base_url)
        lines = [chat_line(f"r{i}", f"Write a long story about the number {i}.", max_tokens=48) for i in range(12)]
        batch = run_batch(client, lines)
        assert batch.expires_at >= batch.created_at + 24 * 3600 - 5
        wait_completed(client, batch.id, 1)
        key = f"warren:batch:{batch.id}"
        stored = json.loads(subprocess.run(["redis-cli", "HGET", key, "object"], capture_output=True, text=True, check=True).stdout)
        stored["expires_at"] = int(time.time()) - 1
        subprocess.run(["redis-cli", "HSET", key, "object", json.dumps(stored)], capture_output=True, check=True)
        batch = wait_final(client, batch.id)
        assert batch.status == "expired" and batch.expired_at, batch
        assert 1 <= batch.request_counts.completed < 12
        found = each_once(client, batch, lines)
        ran = [r for r in found.values() if r["error"] is None]
        not_run = [r for r in found.values() if r["error"] is not None]
        answered = [r for r in ran if r["response"]["status_code"] == 200]
        assert len(answered) == batch.request_counts.completed
        # The one request in flight at the expiry (batch_in_flight 1) was cancelled.
        cut_short = [r for r in ran if r["response"]["status_code"] != 200]
        assert len(cut_short) <= 1, cut_short
        assert all(r["response"]["status_code"] == 504 and r["response"]["body"]["error"]["code"] == "cancelled" for r in cut_short), cut_short
        assert not_run and all(r["error"]["code"] == "batch_expired" and r["response"] is None for r in not_run), not_run
        # An expired batch cannot be cancelled into anything else.
        assert client.batches.cancel(batch.id).status == "expired"
    finally:
        gateway.stop()


def test_a_batch_outlives_the_gateway_that_accepted_it():
    names = Names("batch-restart")
    worker = start_worker(names, engine__slots=2)
    # The shortest lease: the killed gateway's batch is taken over within about 7 s, not 20.
    lease = {"gateway__batch_lease_ms": 5000}
    # The first gateway refuses the last line (over its cap) when the batch is created; the
    # second, with the default cap, would take it: it must not publish it then (its reply
    # could not count beside the refusal, and the batch would never end).
    first = start_gateway(names, gateway__batch_in_flight=2, limits__max_tokens_cap=16, **lease)
    second = None
    try:
        client = sdk(first.base_url)
        lines = [chat_line(f"r{i}", f"Tell me about {i}.", max_tokens=16) for i in range(10)]
        lines.append(chat_line("over-the-cap", "Tell me more.", max_tokens=32))
        batch = run_batch(client, lines)
        # Deleting the input file takes nothing from the batch: it keeps a copy, which the
        # gateway that takes it over reads.
        assert client.files.delete(batch.input_file_id).deleted
        wait_completed(client, batch.id, 2)
        first.kill()
        second = start_gateway(names, **lease)
        client = sdk(second.base_url)
        batch = wait_final(client, batch.id)
        assert batch.status == "completed"
        assert (batch.request_counts.completed, batch.request_counts.failed) == (10, 1)
        found = each_once(client, batch, lines)
        assert found["over-the-cap"]["response"]["status_code"] == 400, found["over-the-cap"]
    finally:
        for process in (second, first, worker):
            if process is not None:
                process.stop()
        names.delete()


def test_a_batch_finished_by_a_gateway_with_other_limits_keeps_its_answers_shape():
    """A rolling change of `limits.max_tokens_cap`: the gateway that takes a Responses batch
    over would refuse its lines, but those that ran are still written as response objects
    (they were an internal error each), and those it has yet to publish are refused."""
    names = Names("batch-limits")
    worker = start_worker(names, engine__slots=2)
    lease = {"gateway__batch_lease_ms": 5000}
    first = start_gateway(names, gateway__batch_in_flight=2, **lease)
    second = None
    try:
        client = sdk(first.base_url)
        lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/responses",
                  "body": {"model": "gemma3-270m", "input": f"Tell me about {i}.", "max_output_tokens": 16,
                           "temperature": 0}} for i in range(24)]
        batch = run_batch(client, lines, endpoint="/v1/responses")
        wait_completed(client, batch.id, 1)
        first.kill()
        second = start_gateway(names, limits__max_tokens_cap=8, **lease)
        client = sdk(second.base_url)
        batch = wait_final(client, batch.id)
        assert batch.status == "completed", batch
        found = each_once(client, batch, lines)
        answered = [r for r in found.values() if r["response"]["status_code"] == 200]
        refused = [r for r in found.values() if r["response"]["status_code"] != 200]
        assert len(answered) == batch.request_counts.completed >= 1, found
        # Two lines in flight at once: the first gateway had published a few of the 24 when it
        # was killed; the rest came to the second, whose cap refuses them.
        assert refused and len(answered) + len(refused) == len(lines), found
        for result in answered:
            body = result["response"]["body"]
            assert body["object"] == "response" and body["status"] in ("completed", "incomplete"), body
            assert body["max_output_tokens"] == 16 and body["output"], body
        for result in refused:
            error = result["response"]["body"]["error"]
            assert result["response"]["status_code"] == 400 and "max_tokens" in error["message"], error
    finally:
        for process in (second, first, worker):
            if process is not None:
                process.stop()
        names.delete()


def test_hostile_uploads_and_queries_get_openais_error_envelope(stack):
    base = stack.gateway.base_url
    answers = [
        httpx.post(f"{base}/files", json={"purpose": "batch"}, timeout=10),
        httpx.post(f"{base}/files", content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data; boundary=x"}, timeout=10),
        httpx.post(f"{base}/files", files={"purpose": (None, "batch")}, timeout=10),
        httpx.get(f"{base}/batches?limit=many", timeout=10),
        httpx.get(f"{base}/batches?limit=0", timeout=10),
        httpx.get(f"{base}/batches?limit=101", timeout=10),
        httpx.post(f"{base}/batches", content=b"\xff\x00{", timeout=10),
        httpx.post(f"{base}/batches", json={"input_file_id": 7, "endpoint": "/v1/completions", "completion_window": "24h"}, timeout=10),
    ]
    for answer in answers:
        assert answer.status_code == 400, (answer.request.url, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error", answer.text
    binary = httpx.post(f"{base}/files", files={"file": ("x.jsonl", b"\xff\xfe\x00"), "purpose": (None, "batch")}, timeout=10)
    client = sdk(base)
    batch = client.batches.create(input_file_id=binary.json()["id"], endpoint="/v1/completions", completion_window="24h")
    assert batch.status == "failed" and batch.errors.data[0].code == "invalid_file"
    assert httpx.get(f"{stack.gateway.base_url.removesuffix('/v1')}/readyz", timeout=5).status_code == 200
