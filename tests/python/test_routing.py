"""Routing by model: two workers serve two different GGUF files (the default Q4_K_M model
and its Q8_0 requantization, made with llama.cpp's own quantizer) behind the tasks exchange;
each task reaches the model it named, through the gateway (the official `openai` SDK), pika
and `warren submit --model`; an unknown model is a 404 `model_not_found` over HTTP and
returned unroutable to an AMQP publisher; a worker without a model name refuses to start."""

import json
import subprocess
import time
import uuid
from pathlib import Path

import openai
import pika
import pytest

from conftest import AMQP_URL, MODEL, WARREN, Names, management, metric, sdk, start_gateway, start_worker

ROOT = Path(__file__).resolve().parents[2]
SECOND_MODEL = ROOT / "target" / "test-models" / "gemma3-270m-q8_0.gguf"
SMALL, LARGE = "gemma3-270m-q4", "gemma3-270m-q8"


def second_model():
    """The Q8_0 requantization of the default model, made once by examples/requantize.rs."""
    if SECOND_MODEL.is_file():
        return SECOND_MODEL
    tool = ROOT / "target" / "release" / "examples" / "requantize"
    if not tool.is_file():
        subprocess.run(["cargo", "build", "--release", "--locked", "--example", "requantize"], cwd=ROOT, check=True)
    SECOND_MODEL.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(tool), str(MODEL), str(SECOND_MODEL)], check=True, capture_output=True)
    return SECOND_MODEL


@pytest.fixture(scope="module")
def fleet():
    names = Names("routing")
    tasks = f"{names.base}.tasks"
    routing = {"topology__tasks_exchange": tasks}
    small = start_worker(names, engine__model_name=SMALL, **routing)
    large = start_worker(names, engine__model_name=LARGE, engine__model_path=second_model(), **routing)
    # `org/ghost`: served by no worker, and named as Hugging Face names models.
    gateway = start_gateway(names, gateway__models=f"{SMALL},{LARGE},org/ghost", **routing)
    yield type("Fleet", (), {"names": names, "tasks": tasks, "small": small, "large": large, "gateway": gateway})
    for process in (gateway, small, large):
        process.stop()
    names.delete()
    management("DELETE", f"exchanges/%2F/{tasks}")


def served(worker):
    return metric(worker.metrics_url, "warren_tasks_total", outcome="ok")


def test_the_two_workers_load_different_gguf_files():
    assert second_model().stat().st_size > MODEL.stat().st_size
    assert second_model().read_bytes()[:4] == b"GGUF"


def test_each_request_reaches_the_model_it_named(fleet):
    client = sdk(fleet.gateway.base_url)
    assert {m.id for m in client.models.list().data} == {SMALL, LARGE, "org/ghost"}
    assert client.models.retrieve("org/ghost").id == "org/ghost"
    before = {SMALL: served(fleet.small), LARGE: served(fleet.large)}
    for model in (SMALL, LARGE, LARGE, SMALL, LARGE):
        completion = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4
        )
        assert completion.model == model
    response = client.responses.create(model=LARGE, input="Say hi.", max_output_tokens=4)
    assert response.status in ("completed", "incomplete") and response.model == LARGE
    assert served(fleet.small) - before[SMALL] == 2
    assert served(fleet.large) - before[LARGE] == 4


def test_an_unknown_model_or_one_no_worker_serves_is_a_404_model_not_found(fleet):
    client = sdk(fleet.gateway.base_url)
    for model, says in (("gpt-4o", "does not exist"), ("org/ghost", "no worker serves")):
        with pytest.raises(openai.NotFoundError) as caught:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], max_tokens=2)
        assert caught.value.body["code"] == "model_not_found"
        assert says in caught.value.body["message"], caught.value.body
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="gpt-4o", input="x", max_output_tokens=2, background=True)
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_pika_publishes_by_model_and_gets_back_a_task_for_a_model_nobody_serves(fleet):
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.confirm_delivery()
    replies = channel.queue_declare("", exclusive=True).method.queue
    ids = {}
    for model in (SMALL, LARGE):
        task_id = str(uuid.uuid4())
        ids[task_id] = model
        channel.basic_publish(fleet.tasks, model, json.dumps({"prompt": "Hello", "max_tokens": 2}),
                              pika.BasicProperties(message_id=task_id, correlation_id=task_id, reply_to=replies,
                                                   delivery_mode=2, content_type="application/json"),
                              mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish(fleet.tasks, "nobody", json.dumps({"prompt": "Hello"}),
                              pika.BasicProperties(delivery_mode=2), mandatory=True)
    answered = {}
    deadline = time.monotonic() + 120
    while len(answered) < len(ids) and time.monotonic() < deadline:
        method, _, body = channel.basic_get(replies, auto_ack=True)
        if method is None:
            time.sleep(0.1)
            continue
        reply = json.loads(body)
        answered[reply["id"]] = reply["model"]
    assert answered == ids
    connection.close()


def warren(names, *args, **settings):
    env = {**names.env(), **{f"WARREN__{k.upper()}": str(v) for k, v in settings.items()}}
    return subprocess.run([str(WARREN), *args], env=env, capture_output=True, text=True, timeout=120)


def test_warren_submit_sends_to_the_model_given(fleet):
    routing = {"topology__tasks_exchange": fleet.tasks}
    ok = warren(fleet.names, "submit", "--json", "--model", LARGE, "--max-tokens", "2", "Hi", **routing)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["model"] == LARGE
    nobody = warren(fleet.names, "submit", "--model", "nobody", "Hi", **routing)
    assert nobody.returncode == 1 and "nobody" in nobody.stderr
    no_model = warren(fleet.names, "submit", "Hi", **routing)
    assert no_model.returncode == 64 and "--model" in no_model.stderr


def test_a_routed_worker_without_a_model_name_exits_64_naming_the_key():
    names = Names("routing-no-name")
    result = warren(names, "worker", topology__tasks_exchange=f"{names.base}.tasks",
                    engine__model_path=MODEL, metrics__listen="")
    assert result.returncode == 64
    assert "engine.model_name" in result.stderr
