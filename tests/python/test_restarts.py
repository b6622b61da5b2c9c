"""The gateway through restarts: of the gateway itself (kill -9) and of RabbitMQ, while
requests are open. Each open request ends with an answer or an error, never a hang, and the
gateway serves again afterwards without being restarted by hand. The broker that restarts is
a node of the test's own (`private_broker`), so the other modules run beside this one."""

import subprocess
import threading
import time

import openai
import pytest

from conftest import Names, free_port, metric, sdk, start_gateway, start_redis, start_worker, wait_for

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse."}]


def open_requests(client, count, **options):
    """Starts `count` requests in threads; returns (threads, outcomes)."""
    outcomes = []

    def ask():
        try:
            outcomes.append(client.chat.completions.create(model="m", messages=PROMPT, **options))
        except Exception as e:  # noqa: BLE001 - every outcome is recorded and checked
            outcomes.append(e)

    threads = [threading.Thread(target=ask) for _ in range(count)]
    for t in threads:
        t.start()
    return threads, outcomes


def join_all(threads, seconds=120):
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a request hung"


def test_a_gateway_killed_mid_request_fails_its_callers_and_a_new_one_serves(stack):
    gateway = start_gateway(stack.names)
    client = sdk(gateway.base_url, timeout=60)
    threads, outcomes = open_requests(client, 2, max_tokens=150)
    time.sleep(1.0)
    gateway.kill()
    join_all(threads)
    assert all(isinstance(o, openai.APIConnectionError) for o in outcomes), outcomes
    gateway.start()
    try:
        answer = client.completions.create(model="m", prompt="Hi", max_tokens=2)
        assert answer.usage.completion_tokens >= 1
    finally:
        gateway.stop()


def test_a_broker_restart_ends_open_requests_and_the_gateway_reconnects(private_broker):
    names = Names("restarts-broker", private_broker)
    worker = start_worker(names, engine__slots=2)
    gateway = start_gateway(names)
    try:
        client = sdk(gateway.base_url, timeout=90)
        # Long enough that the two generating cannot finish between the check and the stop;
        # a fixed sleep before the stop let all three finish on a fast run.
        threads, outcomes = open_requests(client, 3, max_tokens=400)
        wait_for(lambda: metric(worker.metrics_url, "warren_slots_busy") == 2, "the worker generating",
                 seconds=60, every=0.05)
        private_broker.ctl(0, "stop_app")
        try:
            join_all(threads)
        finally:
            private_broker.ctl(0, "start_app")
        # The third waits in the queue behind two slots: at least it was open at the stop.
        assert any(isinstance(o, Exception) for o in outcomes), outcomes
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                assert isinstance(outcome, openai.APIStatusError), outcome
                assert outcome.status_code == 503, outcome
        # The gateway and the worker find the broker again by themselves.
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = client.completions.create(model="m", prompt="Hi", max_tokens=2)
                break
            except (openai.APIStatusError, openai.APIConnectionError) as e:
                if time.monotonic() > deadline:
                    pytest.fail(f"the gateway did not serve again after the broker restart: {e}")
                time.sleep(1)
        assert answer.usage.completion_tokens >= 1
    finally:
        gateway.stop()
        worker.stop()


def test_a_redis_restart_mid_run_loses_no_accepted_response(stack, tmp_path):
    port = free_port()
    redis = start_redis(tmp_path, port)
    # Its own results queue: the module's other gateway reads another Redis.
    gateway = start_gateway(stack.names, gateway__redis_url=f"redis://127.0.0.1:{port}",
                            gateway__results_queue=f"{stack.names.base}.results-own-redis")
    client = sdk(gateway.base_url, timeout=30)
    try:
        ids = [client.responses.create(model="m", input=f"Story number {i}:", max_output_tokens=48, background=True).id for i in range(6)]
        subprocess.run(["redis-cli", "-p", str(port), "shutdown"], capture_output=True, timeout=30)
        redis.wait(timeout=30)
        # While Redis is down, the background endpoints say so rather than hang.
        with pytest.raises(openai.InternalServerError) as raised:
            client.responses.retrieve(ids[0])
        assert raised.value.status_code == 503
        time.sleep(3)
        redis = start_redis(tmp_path, port)
        # The gateway finds Redis again by itself (no restart); until it has, 503 is its answer.
        deadline = time.monotonic() + 180
        for response_id in ids:
            while True:
                try:
                    status = client.responses.retrieve(response_id, extra_query={"wait": 5}).status
                except openai.InternalServerError as e:
                    assert e.status_code == 503, e
                    status = "503"
                    time.sleep(0.5)
                if status in ("completed", "incomplete"):
                    break
                assert time.monotonic() < deadline, f"{response_id} stayed {status}"
    finally:
        gateway.stop()
        redis.terminate()
        redis.wait(timeout=30)
