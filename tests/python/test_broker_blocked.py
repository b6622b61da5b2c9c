"""RabbitMQ's memory alarm under load: the broker blocks every publishing connection until it
clears. Nothing may be lost, and the worker and the gateway must say why nothing moves: a
warn line with the broker's reason, `warren_broker_blocked` 1, `/readyz` still 200 with the
reason in its body, and the gateway answering 503 `broker_blocked` instead of hanging (and
cancelling a response at once, its cancel message sent when the alarm clears).

On a RabbitMQ node of the test's own (`private_broker`): the alarm blocks every publisher on
its broker, and the other test modules run beside this one on the shared broker."""

import os
import subprocess
import threading
import time

import httpx
import openai
import pytest

from conftest import WARREN, Amqp, Names, metric, sdk, start_gateway, start_worker, wait_for


@pytest.fixture
def memory_alarm(private_broker):
    """Raises the node's memory alarm (a watermark far below what it uses) when called;
    restores the default watermark afterwards whatever happened."""
    original = "0.4"

    def raise_alarm():
        private_broker.ctl(0, "set_vm_memory_high_watermark", "absolute", "10000000")

    def clear_alarm():
        private_broker.ctl(0, "set_vm_memory_high_watermark", original)

    yield type("Alarm", (), {"raise_": staticmethod(raise_alarm), "clear": staticmethod(clear_alarm)})
    clear_alarm()


def test_a_blocked_broker_is_reported_and_nothing_is_lost(private_broker, memory_alarm):
    names = Names("blocked", private_broker)
    worker = start_worker(names, engine__slots=2)
    gateway = start_gateway(names)
    amqp = Amqp(names)
    client = sdk(gateway.base_url, timeout=60)
    try:
        ok = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert ok.choices[0].finish_reason in ("stop", "length")
        ready_worker = worker.ready_url
        ready_gateway = gateway.ready_url
        assert metric(worker.metrics_url, "warren_broker_blocked") == 0
        assert metric(gateway.metrics_url, "warren_broker_blocked") == 0

        # Load: streamed tasks the worker is generating when the alarm comes (each token is a
        # publish, so the first one after the alarm waits); their replies must wait too. Their
        # end tokens are biased away, so that they are still generating however long the
        # alarm's rabbitmqctl takes on a loaded machine.
        no_end = {"1": -100, "106": -100, "212": -100}
        ids = [amqp.send({"prompt": f"Verse {i}:", "max_tokens": 192, "stream": True, "logit_bias": no_end})
               for i in range(4)]
        # A background response queued behind them, to be cancelled during the alarm.
        queued = client.responses.create(model="m", input="Hi", background=True, max_output_tokens=8)
        wait_for(lambda: metric(worker.metrics_url, "warren_slots_busy") == 2, "the worker generating",
                 seconds=30, every=0.05)
        memory_alarm.raise_()
        raised = time.monotonic()

        # The worker's first commit after the alarm is blocked, and it says so.
        blocked_at = wait_for(lambda: metric(worker.metrics_url, "warren_broker_blocked") == 1,
                              "the worker's warren_broker_blocked", seconds=30, every=0.05)
        readyz = httpx.get(ready_worker, timeout=5)
        assert readyz.status_code == 200, readyz.text
        assert "blocking publishers" in readyz.text, readyz.text
        assert "RabbitMQ is blocking this connection" in worker.log()

        # The gateway: a request whose publish is blocked ends with 503, not a hang, and so
        # does every request after it while the alarm lasts.
        outcomes = []

        def ask():
            try:
                outcomes.append(client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "Hello"}], max_tokens=4))
            except Exception as e:  # noqa: BLE001 - the outcome is checked below
                outcomes.append(e)

        thread = threading.Thread(target=ask)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the gateway hung on a blocked publish"
        assert isinstance(outcomes[0], openai.InternalServerError), outcomes
        assert outcomes[0].status_code == 503
        assert outcomes[0].body["code"] == "broker_blocked", outcomes[0].body
        with pytest.raises(openai.InternalServerError) as again:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert again.value.status_code == 503
        assert metric(gateway.metrics_url, "warren_broker_blocked") == 1
        # Cancelling a response answers at once; the cancel message waits for the alarm.
        cancelled = []
        thread = threading.Thread(target=lambda: cancelled.append(client.responses.cancel(queued.id)))
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the gateway hung cancelling a response"
        assert cancelled[0].status == "cancelled", cancelled
        gateway_ready = httpx.get(ready_gateway, timeout=5)
        assert gateway_ready.status_code == 200 and "blocking publishers" in gateway_ready.text
        # `warren submit --wait` bounds the blocked publish too: exit 75, not a hang.
        submitted = subprocess.run([str(WARREN), "submit", "Hi", "--max-tokens", "2", "--wait", "3"],
                                   env={**os.environ, **names.env()}, capture_output=True, text=True,
                                   timeout=60)
        assert submitted.returncode == 75, submitted.stderr
        assert "did not confirm" in submitted.stderr, submitted.stderr

        # Cleared: the held replies go out, every task is answered once, and the gauges fall.
        memory_alarm.clear()
        for task_id in ids:
            reply = amqp.reply(task_id, seconds=120)
            assert reply["status"] == "ok", reply
        wait_for(lambda: metric(worker.metrics_url, "warren_broker_blocked") == 0, "the worker unblocked", seconds=30)
        wait_for(lambda: metric(gateway.metrics_url, "warren_broker_blocked") == 0, "the gateway unblocked", seconds=30)
        assert httpx.get(ready_worker, timeout=5).text == "ready\n"
        after = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
        assert after.choices[0].message is not None
        skipped = f'id="{queued.id}"'
        wait_for(lambda: any(skipped in line and 'outcome="cancelled"' in line for line in worker.log().splitlines()),
                 "the cancelled response's task skipped by the worker", seconds=60)
        assert client.responses.retrieve(queued.id).status == "cancelled"
        print(f"blocked reported {blocked_at - raised:.2f} s after the alarm was raised")
    finally:
        memory_alarm.clear()
        amqp.connection.close()
        gateway.stop()
        worker.stop()
        names.delete()
