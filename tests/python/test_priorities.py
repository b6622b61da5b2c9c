"""Priority tiers on quorum queues: batch work (the Batch API, `warren submit --file`,
`service_tier: "flex"`, tasks published to `<queue>.batch`) waits in its own queue, which a
worker takes from only when a slot would otherwise stay free; interactive tasks overtake a
batch backlog. Real worker and gateway processes, the real model, the local RabbitMQ."""

import json
import subprocess
import time

import openai
import pytest

from conftest import PATIENCE, WARREN, Amqp, Names, management, queue_depth, sdk, start_gateway, start_worker


def wait_for_depth(queue, expected, seconds=30):
    deadline = time.monotonic() + seconds
    while queue_depth(queue) != expected:
        assert time.monotonic() < deadline, f"{queue} holds {queue_depth(queue)} tasks, not {expected}"
        time.sleep(0.5)


def wait_final(client, response_id):
    deadline = time.monotonic() + PATIENCE
    while (response := client.responses.retrieve(response_id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"{response_id} never finished"
        time.sleep(0.2)
    return response


def test_batch_work_waits_in_the_batch_queue_and_bad_tiers_are_refused(tmp_path):
    names = Names("tiers")
    batch_queue = f"{names.requests}.batch"
    gateway = start_gateway(names)
    worker = None
    try:
        client = sdk(gateway.base_url)
        # No worker yet: where each kind of work waits is plain to see.
        flex = client.responses.create(model="m", input="Say hi", max_output_tokens=2, background=True,
                                       service_tier="flex")
        assert flex.service_tier == "flex"
        wait_for_depth(batch_queue, 1)
        default = client.responses.create(model="m", input="Say hi", max_output_tokens=2, background=True,
                                          service_tier="default")
        assert default.service_tier == "default"
        wait_for_depth(names.requests, 1)

        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}}
        uploaded = client.files.create(file=("in.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_for_depth(batch_queue, 2)

        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text(json.dumps({"prompt": "One", "max_tokens": 2}) + "\n" + json.dumps({"prompt": "Two", "max_tokens": 2}) + "\n")
        env = {"PATH": "/usr/bin:/bin", **names.env()}
        # No worker runs yet: both are published, then left unanswered after a second (exit 1).
        submitted = subprocess.run(
            [str(WARREN), "submit", "--file", str(tasks), "--out", str(tmp_path / "out.jsonl"), "--wait", "1"],
            env=env, capture_output=True, text=True, timeout=60)
        assert submitted.returncode == 1, submitted.stderr
        assert "2 of 2 tasks without an ok result" in submitted.stderr, submitted.stderr
        wait_for_depth(batch_queue, 4)
        assert queue_depth(names.requests) == 1

        for bad in ("turbo", 7):
            with pytest.raises(openai.BadRequestError) as refused:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                               max_tokens=2, service_tier=bad)
            assert refused.value.body["param"] == "service_tier"
        # The gateway keeps serving, and a worker drains both tiers.
        worker = start_worker(names, engine__slots=1)
        # Two tokens asked for: `incomplete` is an answer too.
        assert wait_final(client, flex.id).status in ("completed", "incomplete")
        assert wait_final(client, default.id).status in ("completed", "incomplete")
        deadline = time.monotonic() + PATIENCE
        while client.batches.retrieve(batch.id).status != "completed":
            assert time.monotonic() < deadline, "the batch never completed"
            time.sleep(0.5)
        wait_for_depth(batch_queue, 0, seconds=PATIENCE)
    finally:
        gateway.stop()
        if worker:
            worker.stop()
        names.delete()


@pytest.fixture(scope="module")
def one_slot(request):
    names = Names("tiers-backlog")
    # Unbounded: the backlog below is larger than the default bound.
    worker = start_worker(names, engine__slots=1, topology__queue_bound=0, worker__fault_injection="true",
                          retry__initial_delay_ms=200, retry__jitter=0)
    yield type("Stack", (), {"names": names, "worker": worker})
    worker.stop()
    names.delete()


def test_a_batch_task_retries_through_the_batch_tier_s_delay_queues(one_slot):
    names = one_slot.names
    amqp = Amqp(names)
    try:
        task_id = amqp.send({"prompt": "[[warren-fault:fail-attempts=1]] Hi", "max_tokens": 2},
                            queue=f"{names.requests}.batch")
        reply = amqp.reply(task_id, seconds=PATIENCE * 3)
    finally:
        amqp.connection.close()
    assert reply["status"] == "ok" and reply["attempt"] == 2
    delay = f"queues/%2F/{names.retry_prefix}.batch.200ms"
    assert management("GET", delay).json()["arguments"]["x-dead-letter-routing-key"] == f"{names.requests}.batch"
    deadline = time.monotonic() + 30
    while management("GET", delay).json().get("message_stats", {}).get("publish", 0) < 1:
        assert time.monotonic() < deadline, "the retry did not wait in the batch tier's delay queue"
        time.sleep(1)


def test_interactive_tasks_overtake_a_batch_backlog(one_slot):
    names = one_slot.names
    amqp = Amqp(names)
    task = {"prompt": "Count: one, two,", "max_tokens": 8, "temperature": 0}
    try:
        batch_ids = [amqp.send(task, queue=f"{names.requests}.batch") for _ in range(1000)]
        # The slot is busy with batch work.
        amqp.reply(batch_ids[0], seconds=PATIENCE)
        batch_answered = lambda: sum(1 for i in batch_ids if i in amqp.arrived)  # noqa: E731
        for _ in range(5):
            # The batch replies already in the queue are not ahead of the task about to go.
            amqp.take_waiting()
            before = batch_answered()
            reply = amqp.reply(amqp.send(task), seconds=PATIENCE)
            assert reply["status"] == "ok"
            # Replies come in the order the worker published them: the batch tasks answered
            # ahead of this one are those the worker ran while it waited. It waited for the
            # running batch task to free the slot (and one more it may have taken), no more.
            ahead = batch_answered() - before
            assert ahead <= 2, f"{ahead} batch tasks were answered ahead of an interactive one"
        # Exact, unlike the management API's sampled counts.
        left = amqp.channel.queue_declare(f"{names.requests}.batch", passive=True).method.message_count
        batch_done = [amqp.arrived[i] for i in batch_ids if i in amqp.arrived]
    finally:
        amqp.connection.close()
    # Each interactive task went ahead of nearly the whole backlog.
    assert left > 900, f"only {left} batch tasks were still queued"
    assert batch_done and all(r["status"] == "ok" for r in batch_done)
