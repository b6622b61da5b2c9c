"""The gateway as the official OpenAI SDK sees it: completions, streaming, errors,
a full queue and callers that go away. Real worker, real model, real RabbitMQ."""

import math
import signal
import threading
import time

import httpx
import openai
import pytest

from conftest import Names, metric, queue_depth, sdk, start_gateway, wait_for

PROMPT = [{"role": "user", "content": "Write a short story about a lighthouse."}]


def test_a_chat_completion_answers_with_text_usage_and_the_served_model_name(client):
    completion = client.chat.completions.create(model="gemma3-270m", messages=PROMPT, max_tokens=12)
    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 12
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert completion.model == "gemma3-270m"
    assert completion.created > 0


def test_every_reply_names_the_model_as_v1_models_lists_it(client):
    """Without routing by model any `model` is served by the one model: plain replies, streamed
    chunks, text completions and response objects all name it as `/v1/models` does."""
    [listed] = [m.id for m in client.models.list()]
    plain = client.chat.completions.create(model="m", messages=PROMPT, max_tokens=2)
    chunks = list(client.chat.completions.create(model="m", messages=PROMPT, max_tokens=2, stream=True))
    text = client.completions.create(model="anything", prompt="Hi", max_tokens=2)
    response = client.responses.create(model="m", input="Hi", max_output_tokens=2)
    names = {plain.model, text.model, response.model} | {c.model for c in chunks}
    assert names == {listed}, names


def test_streamed_deltas_concatenate_to_the_plain_text_then_usage_and_done(client):
    plain = client.chat.completions.create(model="m", messages=PROMPT, max_tokens=24)
    stream = client.chat.completions.create(
        model="m", messages=PROMPT, max_tokens=24, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.id == chunks[0].id for c in chunks)


def test_a_repeated_system_prompt_is_reported_as_cached_prompt_tokens(client):
    system = {"role": "system", "content": "You answer questions about lighthouses. " * 20}
    first = client.chat.completions.create(
        model="m", messages=[system, {"role": "user", "content": "Who keeps them?"}], max_tokens=4
    )
    second = client.chat.completions.create(
        model="m", messages=[system, {"role": "user", "content": "How tall are they?"}], max_tokens=4
    )
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens > 100
    assert 100 < cached < second.usage.prompt_tokens, second.usage


def test_a_stop_sequence_ends_the_text_before_it(client):
    plain = client.completions.create(model="m", prompt="The capital of France is", max_tokens=20)
    text = plain.choices[0].text
    assert len(text) > 8, text
    stop = text[4:7]
    stopped = client.completions.create(model="m", prompt="The capital of France is", max_tokens=20, stop=[stop])
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


def test_the_same_seed_gives_the_same_sampled_text(client):
    ask = lambda seed: client.chat.completions.create(
        model="m", messages=PROMPT, max_tokens=16, temperature=0.9, seed=seed
    ).choices[0].message.content
    assert ask(7) == ask(7)


def test_sampling_extensions_and_openais_penalties_are_honoured(client):
    """`top_k`, `min_p` and `repeat_penalty` in `extra_body`, as llama-server takes them: with
    top_k 1 a hot, seeded draw has one candidate, so every seed gives the greedy text; a
    repeat, frequency or presence penalty breaks a chant the greedy text repeats."""
    ask = lambda **options: client.chat.completions.create(
        model="m", messages=PROMPT, max_tokens=16, **options
    ).choices[0].message.content
    greedy = ask(temperature=0)
    assert {ask(temperature=1.5, seed=seed, extra_body={"top_k": 1}) for seed in (1, 2, 3)} == {greedy}
    assert {ask(temperature=1.5, seed=seed, extra_body={"min_p": 1.0}) for seed in (1, 2)} == {greedy}
    # OpenAI's own `top_p` at its lower bound, 0, leaves only the most likely token too.
    assert {ask(temperature=1.5, seed=seed, top_p=0) for seed in (1, 2)} == {greedy}
    chant = lambda word, **options: client.completions.create(
        model="m", prompt=f"{word} {word} {word} no {word} {word}", max_tokens=12, temperature=0, **options
    ).choices[0].text.split().count(word)
    assert chant("la") >= 10 and chant("yes") >= 10, "the greedy text repeats the chant"
    assert chant("la", extra_body={"repeat_penalty": 1.5}) < chant("la")
    # OpenAI's own penalties, by the SDK's named arguments.
    assert chant("yes", frequency_penalty=2.0) < chant("yes")
    assert chant("yes", presence_penalty=2.0) < chant("yes")
    with pytest.raises(openai.BadRequestError) as raised:
        chant("yes", frequency_penalty=2.5)
    assert "frequency_penalty" in raised.value.message
    for bad, field in [({"top_k": -1}, "top_k"), ({"min_p": 2}, "min_p"), ({"repeat_penalty": -1}, "repeat_penalty")]:
        with pytest.raises(openai.BadRequestError) as raised:
            ask(extra_body=bad)
        assert field in raised.value.message


def test_logprobs_report_each_token_of_the_text_with_its_likeliest_alternatives(client):
    """Greedy: the chosen token is the likeliest, so it heads its own alternatives."""
    completion = client.chat.completions.create(
        model="m", messages=PROMPT, max_tokens=12, logprobs=True, top_logprobs=3
    )
    entries = completion.choices[0].logprobs.content
    assert len(entries) == completion.usage.completion_tokens == 12
    assert "".join(e.token for e in entries) == completion.choices[0].message.content
    assert b"".join(bytes(e.bytes) for e in entries).decode() == completion.choices[0].message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        ranked = [t.logprob for t in entry.top_logprobs]
        assert ranked == sorted(ranked, reverse=True) and ranked[0] <= 0
        assert sum(math.exp(lp) for lp in ranked) <= 1.0001
    plain = client.chat.completions.create(model="m", messages=PROMPT, max_tokens=12)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == completion.choices[0].message.content

    stream = client.chat.completions.create(
        model="m", messages=PROMPT, max_tokens=12, logprobs=True, top_logprobs=3, stream=True
    )
    streamed = [e for c in stream if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]


def test_text_completions_report_logprobs_in_the_legacy_columns(client):
    completion = client.completions.create(model="m", prompt="Once upon a time", max_tokens=8, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 8
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(8)]
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert 1 <= len(top) <= 2 and max(top.values()) == pytest.approx(logprob)
        assert top[token] == pytest.approx(logprob)
    streamed = client.completions.create(model="m", prompt="Once upon a time", max_tokens=8, logprobs=2, stream=True)
    tokens = [t for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert tokens == logprobs.tokens
    for bad in ({"logprobs": 21}, {"logprobs": True}):
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model="m", prompt="x", max_tokens=2, **bad)
        assert "logprobs" in raised.value.message


def test_a_logit_bias_makes_a_token_every_pick_and_must_name_real_tokens(client):
    """+100 on one token id makes it every pick, greedy or sampled; the logprobs still report
    the model's own view of it (a bias is not part of the model's distribution)."""
    for temperature in (0, 0.9):
        forced = client.completions.create(
            model="m", prompt="The capital of France is", max_tokens=4, temperature=temperature,
            logit_bias={"12345": 100}, logprobs=0,
        )
        tokens = forced.choices[0].logprobs.tokens
        assert len(tokens) == 4 and len(set(tokens)) == 1, tokens
        assert forced.choices[0].text == tokens[0] * 4
        assert forced.choices[0].logprobs.token_logprobs[0] < -1
    for bad in ({"999999999": 1}, {"abc": 1}, {"5": 500}):
        with pytest.raises(openai.BadRequestError) as raised:
            client.completions.create(model="m", prompt="x", max_tokens=2, logit_bias=bad)
        assert "logit_bias" in raised.value.message


def test_max_tokens_one_generates_one_token(client):
    completion = client.chat.completions.create(model="m", messages=PROMPT, max_completion_tokens=1)
    assert completion.usage.completion_tokens == 1
    assert completion.choices[0].finish_reason == "length"


def test_a_text_completion_and_a_streamed_one(client):
    completion = client.completions.create(model="m", prompt="Once upon a time", max_tokens=8)
    assert completion.id.startswith("cmpl-")
    assert completion.object == "text_completion"
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(model="m", prompt="Once upon a time", max_tokens=8, stream=True) if c.choices
    )
    assert streamed == completion.choices[0].text


def test_models_lists_the_configured_model(client):
    assert [m.id for m in client.models.list()] == ["gemma3-270m"]
    assert client.models.retrieve("gemma3-270m").id == "gemma3-270m"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"n": 2}, "`n`"),
        ({"max_tokens": 5000}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 7}, "top_p"),
        ({"stop": ["x"] * 20}, "stop"),
        ({"messages": [{"role": "function", "content": "x", "name": "f"}]}, "role"),
        ({"messages": []}, "messages"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_impossible_requests_raise_bad_request_error(client, options, fragment):
    request = {"model": "m", "messages": PROMPT, **options}
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(**request)
    assert raised.value.status_code == 400
    assert fragment in raised.value.message


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(
    "options, field",
    [
        ({"functions": [TOOL["function"]]}, "functions"),
        ({"store": True}, "store"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"extra_body": {"temprature": 0.5}}, "temprature"),
    ],
)
def test_a_field_the_gateway_does_not_serve_is_refused_by_name(client, options, field):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="m", messages=PROMPT, max_tokens=2, **options)
    assert raised.value.param == field
    assert raised.value.body["message"].startswith(f"`{field}` is not supported"), raised.value.body


def test_a_tool_call_in_a_responses_input_item_is_refused_by_its_path(client):
    # Chat completions take calls in their history (test_tools.py); the Responses API not yet.
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "x",
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
    ]
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="m", input=history, max_output_tokens=2)
    assert raised.value.param == "input[1].tool_calls"
    named = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hi", "name": "ann"}], max_tokens=2
    )
    assert named.choices[0].message.content is not None


def test_advisory_fields_and_empty_tool_lists_change_nothing(client):
    plain = client.chat.completions.create(model="m", messages=PROMPT, max_tokens=6)
    advised = client.chat.completions.create(
        model="m", messages=PROMPT, max_tokens=6, user="u-7", metadata={"k": "v"}, service_tier="auto",
        store=False, tools=[], tool_choice="none", parallel_tool_calls=False, safety_identifier="s-1",
    )
    assert advised.choices[0].message.content == plain.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="m", prompt="x", max_tokens=2, echo=True)
    assert raised.value.param == "echo"
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="m", input="x", max_output_tokens=2, extra_body={"conversation": "conv_1"})
    assert raised.value.param == "conversation"


def test_a_prompt_longer_than_the_context_is_the_workers_400(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="m", prompt="lighthouse " * 1500, max_tokens=4)
    assert raised.value.code == "prompt_too_long"
    # A waiting response gets the same answer, not a 200 with a `failed` object.
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="m", input="lighthouse " * 1500, max_output_tokens=4)
    assert raised.value.code == "prompt_too_long"


def test_hostile_bodies_get_openai_error_envelopes(stack):
    url = stack.gateway.base_url
    cases = [
        (b"{not json", 400),
        (b"[]", 400),
        (b'{"model": "m", "messages": "hi"}', 400),
        (b'{"model": "m", "messages": [{"role": "user", "content": "\\u0000"}]}', 400),
        (b"x" * 2_000_000, 413),
    ]
    for body, status in cases:
        response = httpx.post(f"{url}/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=30)
        assert response.status_code == status, (body[:40], response.text)
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    missing = httpx.get(f"{url}/nothing-here", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # The gateway still serves after all that.
    assert sdk(url).completions.create(model="m", prompt="Hello", max_tokens=2).choices[0].text is not None


def test_a_full_queue_is_a_429_and_nothing_is_published_twice():
    names = Names("full")
    gateway = start_gateway(names, topology__max_length=1, gateway__request_timeout_ms=1500)
    client = sdk(gateway.base_url)
    try:
        timed_out = 0
        for _ in range(4):
            try:
                client.completions.create(model="m", prompt="Hi", max_tokens=1)
            except openai.RateLimitError as e:
                assert e.code == "queue_full"
                # Nothing drains the queue (no worker): 60 s once the gateway has read its
                # drain rate, 10 s before (test_queue_bound.py waits for the former).
                assert e.response.headers["retry-after"] in ("10", "60")
                break
            except openai.InternalServerError as e:
                # No worker: the caller's wait ends with 504, the task stays queued.
                assert e.status_code == 504
                timed_out += 1
        else:
            pytest.fail("the queue never said it was full")
        assert 1 <= timed_out <= 2, "max_length 1 (a quorum queue takes one more)"
        assert queue_depth(names.requests) == timed_out, "each 504 left its task in the queue"
        # A second copy would be a publish retried after its confirm: give it time to land.
        time.sleep(2)
        assert queue_depth(names.requests) == timed_out, "a task was published twice"
    finally:
        gateway.stop()
        names.delete()


def long_story(client, **options):
    return client.chat.completions.create(model="m", messages=PROMPT, max_tokens=600, **options)


def test_a_streamed_response_is_an_open_stream_until_it_ends(stack, client):
    streams = lambda: metric(stack.gateway.metrics_url, "warren_gateway_sse_streams_open")
    events = iter(client.responses.create(model="m", input="Once upon a time", max_output_tokens=8, stream=True))
    assert next(events).type == "response.created"
    assert streams() == 1
    assert list(events)[-1].type in ("response.completed", "response.incomplete")
    wait_for(lambda: streams() == 0, "the stream's end counted")


def test_a_client_that_leaves_mid_stream_frees_the_workers_slot(stack, client):
    cancelled = lambda: metric(stack.worker.metrics_url, "warren_tasks_total", outcome="cancelled")
    before = cancelled()
    stream = long_story(client, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    wait_for(lambda: cancelled() == before + 1, "the worker cancelling the task")
    wait_for(lambda: metric(stack.worker.metrics_url, "warren_slots_busy") == 0, "the slot freeing")
    assert metric(stack.gateway.metrics_url, "warren_gateway_cancels_total") >= 1
    # The worker goes on serving.
    assert client.completions.create(model="m", prompt="Hi", max_tokens=2).usage.completion_tokens >= 1


def test_a_client_that_times_out_frees_the_workers_slot(stack):
    cancelled = lambda: metric(stack.worker.metrics_url, "warren_tasks_total", outcome="cancelled")
    left = lambda: metric(stack.gateway.metrics_url, "warren_gateway_requests_total", route="/v1/chat/completions", status="499")
    before, before_left = cancelled(), left()
    impatient = sdk(stack.gateway.base_url, timeout=1.5)
    with pytest.raises(openai.APITimeoutError):
        long_story(impatient)
    wait_for(lambda: cancelled() == before + 1, "the worker cancelling the task")
    # The gateway counts the request its caller left, and no longer counts it in flight (the
    # scrape itself is the one request in flight).
    wait_for(lambda: left() == before_left + 1, "the request counted with status 499")
    assert metric(stack.gateway.metrics_url, "warren_gateway_requests_in_flight") == 1


def test_no_reply_within_the_request_timeout_is_a_504_and_the_task_is_cancelled(stack):
    gateway = start_gateway(stack.names, gateway__request_timeout_ms=1500)
    cancelled = lambda: metric(stack.worker.metrics_url, "warren_tasks_total", outcome="cancelled")
    timed_out = lambda: metric(gateway.metrics_url, "warren_gateway_requests_total", route="/v1/chat/completions", status="504")
    before = cancelled()
    try:
        # The SDK's own retries left on: the 504 says not to (`x-should-retry: false`), so
        # the caller gets it after one wait, not three, and only one task ran.
        with pytest.raises(openai.InternalServerError) as raised:
            long_story(sdk(gateway.base_url, max_retries=2))
        assert raised.value.status_code == 504
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert timed_out() == 1, "the SDK asked once"
        wait_for(lambda: cancelled() == before + 1, "the worker cancelling the task")
        # The operator sees it in the gateway's log too, with its code.
        failed = [line for line in gateway.log().splitlines() if "request failed" in line]
        assert len(failed) == 1 and "timeout" in failed[0] and "504" in failed[0], failed
    finally:
        gateway.stop()


def test_a_stopping_gateway_finishes_the_requests_it_holds(stack):
    # A rolling update or a scale-in: SIGTERM while a stream and a waiting request are open.
    gateway = start_gateway(stack.names)
    client = sdk(gateway.base_url)
    answers, errors = [], []

    def wait_for_answer():
        try:
            answers.append(client.completions.create(model="m", prompt="Once upon a time", max_tokens=64))
        except Exception as e:  # noqa: BLE001 - the test reports whatever failed
            errors.append(e)

    try:
        stream = iter(client.completions.create(
            model="m", prompt="The lighthouse keeper", max_tokens=64, stream=True,
            stream_options={"include_usage": True}))
        first = next(stream)
        waiting = threading.Thread(target=wait_for_answer)
        waiting.start()
        # The waiting request inside the gateway (the scrape is the other one in flight).
        in_flight = lambda: metric(gateway.metrics_url, "warren_gateway_requests_in_flight")
        wait_for(lambda: in_flight() >= 2, "the waiting request taken")
        gateway.process.send_signal(signal.SIGTERM)
        rest = list(stream)
        waiting.join(timeout=60)
        assert not errors, errors
        assert len(answers) == 1 and answers[0].usage.completion_tokens >= 1
        finished = [c.choices[0].finish_reason for c in rest if c.choices and c.choices[0].finish_reason]
        assert finished in (["length"], ["stop"]), rest[-3:]
        streamed = [first, *rest]
        text_chunks = sum(1 for c in streamed if c.choices and c.choices[0].text)
        assert rest[-1].usage.completion_tokens >= text_chunks >= 1
        assert gateway.process.wait(timeout=30) == 0
    finally:
        gateway.stop()


def test_concurrent_requests_are_all_answered(client):
    results, errors = [], []

    def ask(i):
        try:
            results.append(client.completions.create(model="m", prompt=f"Number {i} is", max_tokens=4))
        except Exception as e:  # noqa: BLE001 - the test reports whatever failed
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len({r.id for r in results}) == 6
