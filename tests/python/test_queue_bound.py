"""Bounded by default: each worker (and `warren topology`) puts a policy bounding the queue it
serves (topology.queue_bound, 256 by default) through the management API, so that a full
queue refuses publishes at once (a nack over AMQP, a 429 with a Retry-After at the gateway)
instead of growing until callers time out. A policy, unlike a queue argument, applies to a
queue that already exists, without its redeclare being refused."""

import subprocess
import time
import uuid

import httpx
import pika
import pytest

from conftest import AMQP_URL, WARREN, Names, management, start_gateway, start_worker


def topology(names, **settings):
    env = {"PATH": "/usr/bin:/bin", **names.env(), **{f"WARREN__{k.upper()}": str(v) for k, v in settings.items()}}
    return subprocess.run([str(WARREN), "topology"], env=env, capture_output=True, text=True, timeout=60)


def policy(names):
    found = [p for p in management("GET", "policies/%2F").json() if p["name"] == f"warren-bound-{names.requests}"]
    return found[0] if found else None


def publish_confirmed(names, count):
    """Publishes `count` tasks with publisher confirms; how many the broker took."""
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.confirm_delivery()
    taken = 0
    for n in range(count):
        try:
            channel.basic_publish("", names.requests, f'{{"prompt": "task {n}", "max_tokens": 1}}',
                                  pika.BasicProperties(delivery_mode=2), mandatory=True)
            taken += 1
        except pika.exceptions.NackError:
            pass
    connection.close()
    return taken


def test_a_worker_on_the_default_configuration_bounds_its_queue():
    names = Names("bounddefault")
    worker = start_worker(names)
    try:
        found = policy(names)
        assert found, worker.log()
        assert found["definition"] == {"max-length": 256, "overflow": "reject-publish"}
        # The queue's own view in the management API follows at its next statistics tick.
        deadline = time.monotonic() + 20
        while management("GET", f"queues/%2F/{names.requests}").json().get("policy") != found["name"]:
            assert time.monotonic() < deadline, "the policy never applied to the queue"
            time.sleep(0.5)
        queue = management("GET", f"queues/%2F/{names.requests}").json()
        assert queue["effective_policy_definition"]["max-length"] == 256
    finally:
        worker.stop()
        names.delete()


def test_a_queue_declared_unbounded_gets_bounded_and_a_full_queue_refuses_at_once():
    names = Names("boundfull")
    try:
        # An existing deployment's queue, declared with no bound at all.
        unbounded = topology(names, topology__queue_bound=0)
        assert unbounded.returncode == 0, unbounded.stderr
        assert policy(names) is None
        # Bounding it is a policy, so the redeclare with the same arguments is accepted.
        bounded = topology(names, topology__queue_bound=3)
        assert bounded.returncode == 0, bounded.stderr
        assert f"policy   warren-bound-{names.requests}  max-length=3" in bounded.stdout
        # Nobody consumes: the broker takes the bound (a quorum queue one more) and nacks the rest.
        taken = publish_confirmed(names, 8)
        assert 3 <= taken <= 4, taken
        # The gateway answers 429 queue_full with a Retry-After; once it has polled the
        # queue's drain rate (none: no worker), the Retry-After says so.
        # A rate limit of two requests a minute: a request the full queue refused is given
        # back to the key's buckets, so a caller retrying it is never told its limit is spent.
        key = f"key-{uuid.uuid4().hex[:8]}"
        gateway = start_gateway(names, gateway__api_keys=key, gateway__requests_per_minute=2,
                                gateway__tokens_per_minute=1000)
        auth = {"authorization": f"Bearer {key}"}
        try:
            retry_afters, tries = set(), 0
            deadline = time.monotonic() + 20
            while "60" not in retry_afters or tries < 3:
                assert time.monotonic() < deadline, retry_afters
                answer = httpx.post(f"{gateway.base_url}/chat/completions", timeout=30, headers=auth, json={
                    "model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]})
                assert answer.status_code == 429, answer.text
                assert answer.json()["error"]["code"] == "queue_full", answer.text
                retry_afters.add(answer.headers["retry-after"])
                tries += 1
                time.sleep(1)
            # A background response refused by the full queue gets the same estimate.
            for _ in range(3):
                background = httpx.post(f"{gateway.base_url}/responses", timeout=30, headers=auth, json={
                    "model": "m", "input": "Hi", "max_output_tokens": 1, "background": True})
                assert background.status_code == 429, background.text
                assert background.json()["error"]["code"] == "queue_full", background.text
                assert background.headers["retry-after"] == "60", background.headers
        finally:
            gateway.stop()
        # Removing the bound removes the policy; the queue takes tasks again.
        removed = topology(names, topology__queue_bound=0)
        assert removed.returncode == 0 and policy(names) is None, removed.stderr
        assert publish_confirmed(names, 3) == 3
    finally:
        names.delete()


def test_a_worker_without_the_management_api_says_so_and_serves_anyway():
    names = Names("boundnoapi")
    worker = start_worker(names, broker__management_url="http://guest:guest@127.0.0.1:9/")
    try:
        log = worker.log()
        assert "the queue bound policy could not be set" in log
        assert "guest:guest" not in log, "the management URL's credentials leaked into the log"
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = connection.channel()
        assert channel.queue_declare(names.requests, passive=True).method.consumer_count == 1
        connection.close()
    finally:
        worker.stop()
        names.delete()


@pytest.mark.parametrize("setting, value, message", [
    ("broker__management_url", "ftp://rabbit:15672/", "broker.management_url"),
    ("topology__queue_bound", "-1", "queue_bound"),
    ("topology__queue_bound", "many", "queue_bound"),
])
def test_bad_bound_settings_are_refused_by_name(setting, value, message):
    names = Names("boundbad")
    out = topology(names, **{setting: value})
    assert out.returncode == 64, out
    assert message in out.stderr, out.stderr
