"""Sharding (`topology.shards`): one model's traffic spread over several queues through a
consistent-hash exchange. Synthetic workers (the path is what is tested, not a model) serve a
model with four shards behind the tasks exchange; pika and the official `openai` SDK publish
as under plain routing by model. Every task is answered once and each shard carries a share;
a retry and a replayed dead letter land in a shard; cancels and the batch tier work; a worker
killed with kill -9 loses no task and answers none twice; a worker whose shard count
contradicts the broker's routes refuses to start. (Stopping the node that leads a shard is
test_cluster.py's, which owns the three-node cluster.)"""

import json
import os
import subprocess
import time
import uuid

import pika
import pytest

from conftest import AMQP_URL, WARREN, Names, management, queue_depth, sdk, start_gateway, start_worker


MODEL = "synth"
SHARDS = 4


def sharded_settings(names, shards=SHARDS, **extra):
    return {
        "topology__tasks_exchange": f"{names.base}.tasks",
        "topology__shards": shards,
        "engine__model_name": MODEL,
        "engine__backend": "synthetic",
        "engine__model_path": "/nonexistent.gguf",
        "engine__slots": 8,
        "engine__synthetic__tokens_per_second": 200,
        "worker__fault_injection": "true",
        **extra,
    }


def shard_queues(names, tier=""):
    return [f"{names.requests}.{MODEL}{tier}.shard-{i}" for i in range(SHARDS)]


def delete_exchanges(names):
    for exchange in (f"{names.base}.tasks", f"{names.base}.tasks.{MODEL}", f"{names.base}.tasks.{MODEL}.batch"):
        management("DELETE", f"exchanges/%2F/{exchange}")


@pytest.fixture(scope="module")
def fleet():
    names = Names("shards")
    settings = sharded_settings(names)
    workers = [start_worker(names, **settings), start_worker(names, **settings)]
    gateway = start_gateway(names, **{k: v for k, v in settings.items() if k.startswith("topology__")},
                            gateway__models=MODEL)
    yield type("Fleet", (), {"names": names, "settings": settings, "workers": workers, "gateway": gateway})
    gateway.stop()
    for worker in workers:
        worker.stop()
    names.delete()
    delete_exchanges(names)


def take_kept_replies(urls, results, reply_to, kept):
    """Takes the replies kept in `results` (the queue where a worker keeps what it could not
    be sure it delivered) into `kept`, by task id; each must be one marked maybe delivered to
    `reply_to`. On a connection of its own: right after a node stops, a quorum queue whose
    leader it held answers with a connection error until a new leader is elected (then this
    takes nothing, and is called again later)."""
    try:
        connection = pika.BlockingConnection([pika.URLParameters(url) for url in urls])
    except pika.exceptions.AMQPError:
        return
    try:
        channel = connection.channel()
        while True:
            method, properties, body = channel.basic_get(results, auto_ack=True)
            if method is None:
                return
            headers = properties.headers or {}
            assert headers.get("x-warren-undeliverable-reply-to") == reply_to, headers
            assert headers.get("x-warren-maybe-delivered") is True, headers
            reply = json.loads(body)
            kept[reply["id"]] = reply
    except pika.exceptions.AMQPError:
        return
    finally:
        if connection.is_open:
            connection.close()


class Caller:
    """A pika publisher of tasks by model (mandatory, confirmed) and reader of their replies."""

    def __init__(self, names, urls=(AMQP_URL,)):
        self.names = names
        self.urls = urls
        self.connection = pika.BlockingConnection([pika.URLParameters(url) for url in urls])
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.replies = f"{names.base}.replies.{uuid.uuid4().hex[:6]}"
        self.channel.queue_declare(self.replies, durable=True, arguments={"x-queue-type": "quorum"})
        self.seen = {}
        self.kept = {}

    def send(self, task, key=MODEL):
        task_id = f"t-{uuid.uuid4().hex[:10]}"
        self.channel.basic_publish(
            f"{self.names.base}.tasks", key, json.dumps(task),
            pika.BasicProperties(message_id=task_id, correlation_id=task_id, reply_to=self.replies,
                                 delivery_mode=2, content_type="application/json"),
            mandatory=True)
        return task_id

    def collect(self, ids, seconds=120, quiet=3, kept_in=None):
        """Final replies by task id (a list per id: a second reply would show), until every id
        has one and nothing more came for `quiet` seconds. With `kept_in` (a results queue),
        a task may instead have its reply kept there, marked maybe delivered: what a worker
        does for a commit its broker node's stop cut off (docs/src/wire-contract/delivery.md)."""
        deadline, quiet_until = time.monotonic() + seconds, None
        while time.monotonic() < deadline:
            method, _, body = self.channel.basic_get(self.replies, auto_ack=True)
            if method is None:
                # At most two replies may be kept (below): looked for once that few are left.
                if kept_in and len(set(ids) - set(self.seen)) <= 2:
                    take_kept_replies(self.urls, kept_in, self.replies, self.kept)
                if set(ids) <= set(self.seen) | set(self.kept):
                    quiet_until = quiet_until or time.monotonic() + quiet
                    if time.monotonic() > quiet_until:
                        break
                time.sleep(0.1)
                continue
            reply = json.loads(body)
            if reply["status"] not in ("chunk", "started"):
                self.seen.setdefault(reply["id"], []).append(reply)
        missing = set(ids) - set(self.seen)
        assert not missing - set(self.kept), f"no reply to {len(missing - set(self.kept))} tasks"
        # One commit cut off holds at most two tasks (the tests' slot count).
        assert len(missing) <= 2, f"{len(missing)} replies only kept"
        return {task_id: self.seen.get(task_id, [self.kept.get(task_id)]) for task_id in ids}

    def close(self):
        self.channel.queue_delete(self.replies)
        self.connection.close()


def published_into(queue):
    stats = management("GET", f"queues/%2F/{queue}").json()
    return stats.get("message_stats", {}).get("publish", 0)


def test_every_task_is_answered_once_and_every_shard_carries_a_share(fleet):
    for queue in shard_queues(fleet.names) + shard_queues(fleet.names, ".batch"):
        info = management("GET", f"queues/%2F/{queue}").json()
        assert info["type"] == "quorum", info
    caller = Caller(fleet.names)
    try:
        ids = [caller.send({"prompt": "Count:", "max_tokens": 4}) for _ in range(200)]
        replies = caller.collect(ids)
        assert all(len(r) == 1 and r[0]["status"] == "ok" for r in replies.values())
        # Both workers consume every shard.
        for queue in shard_queues(fleet.names):
            declared = caller.channel.queue_declare(queue, passive=True).method
            assert declared.consumer_count == 2, queue
        # The management API's counts lag a few seconds behind: a channel reports what it
        # published every statistics interval, and what it published since its last report
        # is not counted once it closes. The publishing channel stays open until they show.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = [published_into(q) for q in shard_queues(fleet.names)]
            if sum(counts) >= 200:
                break
            time.sleep(1)
    finally:
        caller.close()
    assert sum(counts) >= 200, counts
    assert min(counts) >= 15, counts
    answer = sdk(fleet.gateway.base_url).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert answer.model == MODEL and answer.usage.completion_tokens == 3


def test_a_retry_and_a_replayed_dead_letter_come_back_through_a_shard(fleet):
    caller = Caller(fleet.names)
    try:
        retried = caller.send({"prompt": "[[warren-fault:fail-attempts=1]] go", "max_tokens": 2})
        refused = caller.send({"prompt": "x", "max_tokens": 2, "temperature": -1})
        replies = caller.collect([retried, refused], quiet=1)
        assert replies[retried][0]["status"] == "ok" and replies[retried][0]["attempt"] == 2, replies
        assert replies[refused][0]["error"]["code"] == "invalid_request", replies
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("WARREN")}, **fleet.names.env(),
               **{f"WARREN__{k.upper()}": str(v) for k, v in fleet.settings.items()}}
        deadline = time.monotonic() + 30
        while queue_depth(fleet.names.dead) < 1:
            assert time.monotonic() < deadline, "the refused task was not dead-lettered"
            time.sleep(0.5)
        replay = subprocess.run([str(WARREN), "dlq", "replay", "--id", refused], env=env,
                                capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stderr
        assert f"replayed 1 to exchange {fleet.names.base}.tasks with key {MODEL}" in replay.stdout, replay.stdout
        assert " ERROR " not in replay.stderr, replay.stderr
        caller.seen.pop(refused)
        again = caller.collect([refused], quiet=1)[refused]
        assert len(again) == 1 and again[0]["error"]["code"] == "invalid_request", again
    finally:
        caller.close()


def test_cancels_and_the_batch_tier_work_sharded(fleet):
    caller = Caller(fleet.names)
    try:
        long_task = caller.send({"prompt": "Go on:", "max_tokens": 900})
        batch_task = caller.send({"prompt": "Later:", "max_tokens": 3}, key=f"{MODEL}.batch")
        time.sleep(1.0)
        caller.channel.basic_publish(
            fleet.names.control, "", json.dumps({"type": "cancel", "id": long_task}),
            pika.BasicProperties(type="warren.cancel", content_type="application/json"))
        replies = caller.collect([long_task, batch_task], seconds=60, quiet=1)
    finally:
        caller.close()
    assert replies[long_task][0]["error"]["code"] == "cancelled", replies[long_task]
    assert replies[batch_task][0]["status"] == "ok", replies[batch_task]


def redelivered(names):
    return sum(management("GET", f"queues/%2F/{q}").json().get("message_stats", {}).get("redeliver", 0)
               for q in shard_queues(names))


def test_a_worker_killed_with_kill_9_loses_no_task_and_answers_none_twice(fleet):
    dead_before = queue_depth(fleet.names.dead)
    redelivered_before = redelivered(fleet.names)
    caller = Caller(fleet.names)
    try:
        # About half a second each, 16 at a time over two workers: the kill finds tasks in flight.
        ids = [caller.send({"prompt": "Count:", "max_tokens": 100}) for _ in range(64)]
        time.sleep(1.5)
        victim = fleet.workers[0]
        victim.kill()
        replies = caller.collect(ids, seconds=180, quiet=3)
        victim.start()
    finally:
        caller.close()
    twice = {task_id: r for task_id, r in replies.items() if len(r) > 1}
    assert not twice, twice
    assert all(r[0]["status"] == "ok" for r in replies.values()), replies
    assert queue_depth(fleet.names.dead) == dead_before
    # The kill found tasks held: the broker gave them to the other worker (its counts lag).
    deadline = time.monotonic() + 30
    while redelivered(fleet.names) == redelivered_before and time.monotonic() < deadline:
        time.sleep(1)
    assert redelivered(fleet.names) > redelivered_before


def test_a_worker_whose_shard_count_contradicts_the_broker_refuses_to_start(fleet):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WARREN")}, **fleet.names.env(),
           **{f"WARREN__{k.upper()}": str(v) for k, v in fleet.settings.items()},
           "WARREN__METRICS__LISTEN": ""}
    shard = f"{fleet.names.requests}.{MODEL}.shard"
    for shards, stale in (("1", [f"queue `{shard}-0`", f"queue `{shard}-3`",
                                 f"shard exchange `{fleet.names.base}.tasks.{MODEL}`"]),
                          ("2", [f"queue `{shard}-2`", f"queue `{shard}-3`"])):
        started = subprocess.run([str(WARREN), "worker"], env={**env, "WARREN__TOPOLOGY__SHARDS": shards},
                                 capture_output=True, text=True, timeout=60)
        assert started.returncode == 64, started.stderr[-2000:]
        for says in stale:
            assert says in started.stderr, started.stderr[-2000:]
        assert f"queue `{shard}-1`" not in started.stderr or shards == "1"
    # Nothing was bound meanwhile: the model's plain queue was never declared.
    assert management("GET", f"queues/%2F/{fleet.names.requests}.{MODEL}").status_code == 404
