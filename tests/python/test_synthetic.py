"""The synthetic engine (`engine.backend = "synthetic"`): a worker with no model serves the
whole path (gateway, queue, commit, reply) and cannot pass for a model. Real worker and
gateway processes, the local RabbitMQ, the official `openai` SDK and pika."""

import openai
import pytest

from conftest import Amqp, Names, metric, sdk, start_gateway, start_worker


@pytest.fixture(scope="module")
def synthetic(request):
    names = Names("synthetic")
    worker = start_worker(names, engine__backend="synthetic", engine__slots=4,
                          engine__model_path="/nonexistent.gguf", engine__synthetic__tokens_per_second=500)
    gateway = start_gateway(names)
    yield type("Stack", (), {"names": names, "worker": worker, "gateway": gateway})
    gateway.stop()
    worker.stop()
    names.delete()


def test_a_synthetic_worker_says_what_it_is(synthetic):
    assert metric(synthetic.worker.metrics_url, "warren_engine_info", backend="synthetic", model="synthetic") == 1
    assert "NO MODEL" in synthetic.worker.log()
    amqp = Amqp(synthetic.names)
    try:
        reply = amqp.reply(amqp.send({"prompt": "Hello", "max_tokens": 4}))
    finally:
        amqp.connection.close()
    assert reply["status"] == "ok" and reply["model"] == "synthetic"
    assert reply["usage"]["completion_tokens"] == 4 and reply["finish_reason"] == "length"


def test_the_gateway_path_works_streamed_and_not(synthetic):
    client = sdk(synthetic.gateway.base_url)
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=6, seed=3, temperature=0.7)
    assert answer.usage.completion_tokens == 6 and answer.choices[0].finish_reason == "length"
    again = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=6, seed=3, temperature=0.7)
    assert again.choices[0].message.content == answer.choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, seed=3, temperature=0.7,
        stream=True) if c.choices]
    assert "".join(pieces) == answer.choices[0].message.content


def test_what_needs_a_model_is_refused_by_name(synthetic):
    client = sdk(synthetic.gateway.base_url)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                       response_format={"type": "json_object"})
    assert "synthetic engine" in str(refused.value)
    amqp = Amqp(synthetic.names)
    try:
        task_id = amqp.send({"prompt": "Hi", "max_tokens": 2, "logprobs": 1})
        reply = amqp.reply(task_id)
        headers, _ = amqp.dead_letter(task_id)
    finally:
        amqp.connection.close()
    assert reply["error"]["code"] == "invalid_request" and "`logprobs`" in reply["error"]["message"]
    assert headers["x-warren-error-code"] == "invalid_request"


def test_batch_tasks_taken_between_busy_commits_keep_the_channel(synthetic):
    """Interactive and batch tasks at once on 4 slots: the worker's basic.get for batch work
    and its commits share one tx channel, and RabbitMQ closes a channel that sends a command
    during a tx.commit; every task is answered once and the worker never reconnects."""
    amqp = Amqp(synthetic.names)
    try:
        task = {"prompt": "Hi", "max_tokens": 2}
        ids = [amqp.send(task, queue=f"{synthetic.names.requests}.batch") for _ in range(200)]
        ids += [amqp.send(task) for _ in range(200)]
        replies = [amqp.reply(task_id) for task_id in ids]
    finally:
        amqp.connection.close()
    assert all(r["status"] == "ok" for r in replies)
    assert metric(synthetic.worker.metrics_url, "warren_reconnects_total") == 0
    assert metric(synthetic.worker.metrics_url, "warren_tasks_total", outcome="ok") >= 400
