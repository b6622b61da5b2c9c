"""API keys and rate limits, with the official SDK: a gateway with keys refuses a caller
without one, a spent limit is a 429 with Retry-After, a key's requests and tokens per minute
hold in total over two gateways sharing Redis, a request's token charge is corrected by what
its reply used, and a gateway whose Redis is unreachable still limits on its own."""

import contextlib
import subprocess
import time
import uuid

import httpx
import openai
import pytest

from conftest import Names, free_port, metric, sdk, start_gateway, start_worker

HI = [{"role": "user", "content": "Hi"}]
# An answer of a few tokens whatever max_tokens allows.
YES = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "string", "enum": ["yes"]}}}


@pytest.fixture(scope="module")
def worker_names():
    names = Names("limits")
    worker = start_worker(names, engine__slots=2)
    yield names
    worker.stop()
    names.delete()


@contextlib.contextmanager
def gateways(names, count, **settings):
    """`count` gateways with `settings`, stopped when the block ends."""
    started = []
    try:
        for _ in range(count):
            started.append(start_gateway(names, **settings))
        yield started
    finally:
        for gateway in started:
            gateway.stop()


def outcomes(client, count, **options):
    """`count` chat requests one after another: the statuses (200 or the error's)."""
    statuses = []
    for _ in range(count):
        try:
            client.chat.completions.create(model="m", messages=HI, max_tokens=1, **options)
            statuses.append(200)
        except openai.APIStatusError as e:
            statuses.append(e.status_code)
    return statuses


def test_a_keys_requests_per_minute_hold_in_total_over_two_gateways(worker_names):
    key = f"key-{uuid.uuid4().hex[:8]}"
    with gateways(worker_names, 2, gateway__api_keys=key, gateway__requests_per_minute=4) as (first, second):
        statuses = []
        for _ in range(3):
            statuses += outcomes(sdk(first.base_url, api_key=key), 1)
            statuses += outcomes(sdk(second.base_url, api_key=key), 1)
        assert statuses.count(200) == 4, statuses
        assert statuses.count(429) == 2, statuses
        with pytest.raises(openai.RateLimitError) as refused:
            sdk(second.base_url, api_key=key).chat.completions.create(model="m", messages=HI, max_tokens=1)
        assert int(refused.value.response.headers["retry-after"]) >= 1
        # With Redis up no replica decided alone (the series is there, at 0).
        for gateway in (first, second):
            page = httpx.get(gateway.metrics_url, timeout=5).text
            assert "warren_gateway_rate_limit_fallbacks_total 0" in page, page


def test_a_token_charge_is_corrected_by_what_the_reply_used(worker_names):
    key = f"key-{uuid.uuid4().hex[:8]}"
    with gateways(worker_names, 2, gateway__api_keys=key, gateway__tokens_per_minute=300) as (first, second):
        # Each request counts about 200 tokens when it arrives and uses a few: without the
        # correction the second would exceed 300 a minute.
        for client in (sdk(first.base_url, api_key=key), sdk(second.base_url, api_key=key),
                       sdk(first.base_url, api_key=key)):
            answer = client.chat.completions.create(model="m", messages=HI, max_tokens=200, response_format=YES)
            assert answer.usage.total_tokens < 50, answer.usage
        # A request that could never fit is a 400, not a 429, naming what made it too large.
        with pytest.raises(openai.BadRequestError) as refused:
            sdk(second.base_url, api_key=key).chat.completions.create(model="m", messages=HI, max_tokens=400)
        assert refused.value.body["param"] == "max_tokens"
        with pytest.raises(openai.BadRequestError) as refused:
            sdk(second.base_url, api_key=key).embeddings.create(model="m", input="word " * 400)
        assert refused.value.body["param"] == "input", refused.value.body


def test_without_redis_each_gateway_still_limits_on_its_own(worker_names):
    key = f"key-{uuid.uuid4().hex[:8]}"
    closed = f"redis://127.0.0.1:{free_port()}"
    with gateways(worker_names, 1, gateway__api_keys=key, gateway__requests_per_minute=2,
                  gateway__redis_url=closed) as (gateway,):
        statuses = outcomes(sdk(gateway.base_url, api_key=key), 3)
        assert statuses == [200, 200, 429], statuses
        assert "own buckets decide" in gateway.log()
        # Ops see it without reading logs: each of the three was decided by the replica alone.
        assert metric(gateway.metrics_url, "warren_gateway_rate_limit_fallbacks_total") == 3


def test_the_buckets_in_redis_are_named_by_a_hash_of_the_key_never_the_key(worker_names):
    key = f"secret-{uuid.uuid4().hex}"
    with gateways(worker_names, 1, gateway__api_keys=key, gateway__requests_per_minute=10) as (gateway,):
        assert outcomes(sdk(gateway.base_url, api_key=key), 1) == [200]
        names = subprocess.run(["redis-cli", "--scan", "--pattern", "warren:ratelimit:*"],
                               capture_output=True, text=True, check=True).stdout
        assert "warren:ratelimit:requests:" in names
        assert key not in names


def test_an_answer_carries_openai_s_rate_limit_headers(worker_names):
    key = f"key-{uuid.uuid4().hex[:8]}"
    with gateways(worker_names, 1, gateway__api_keys=key, gateway__requests_per_minute=10,
                  gateway__tokens_per_minute=10000) as (gateway,):
        client = sdk(gateway.base_url, api_key=key)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=HI, max_tokens=1)
        headers = raw.headers
        assert headers["x-ratelimit-limit-requests"] == "10"
        assert headers["x-ratelimit-remaining-requests"] == "9"
        assert headers["x-ratelimit-limit-tokens"] == "10000"
        assert 9000 < int(headers["x-ratelimit-remaining-tokens"]) < 10000
        assert headers["x-ratelimit-reset-requests"].endswith("s"), headers
        again = client.chat.completions.with_raw_response.create(model="m", messages=HI, max_tokens=1, stream=True)
        assert again.headers["x-ratelimit-remaining-requests"] == "8"
        for _ in again.parse():
            pass


def test_a_responses_api_charge_is_corrected_too(worker_names):
    key = f"key-{uuid.uuid4().hex[:8]}"
    with gateways(worker_names, 1, gateway__api_keys=key, gateway__tokens_per_minute=300) as (gateway,):
        client = sdk(gateway.base_url, api_key=key)
        schema = {"type": "json_schema", "name": "answer", "schema": {"type": "string", "enum": ["yes"]}}
        for _ in range(3):
            answer = client.responses.create(model="m", input="Hi", max_output_tokens=200, text={"format": schema})
            assert answer.usage.total_tokens < 50, answer.usage


def test_api_keys_are_required_when_configured(worker_names):
    gateway = start_gateway(worker_names, gateway__api_keys="key-one,key-two")
    try:
        with pytest.raises(openai.AuthenticationError):
            sdk(gateway.base_url, api_key="wrong").models.list()
        # The SDK never sends a request without a key; a plain HTTP client can.
        keyless = httpx.post(f"{gateway.base_url}/completions", json={"model": "m", "prompt": "Hi"}, timeout=30)
        assert keyless.status_code == 401
        assert keyless.json()["error"]["code"] == "invalid_api_key"
        answer = sdk(gateway.base_url, api_key="key-two").completions.create(model="m", prompt="Hi", max_tokens=1)
        assert answer.usage.completion_tokens == 1
    finally:
        gateway.stop()


def test_a_response_kept_from_its_reply_alone_is_no_other_key_s(worker_names):
    """Redis loses a background response's record before its reply comes: the gateway keeps
    what the reply tells, without an owner, and another key must not read it."""
    gateway = start_gateway(worker_names, gateway__api_keys="key-one,key-two")
    try:
        one = sdk(gateway.base_url, api_key="key-one")
        two = sdk(gateway.base_url, api_key="key-two")
        for _ in range(5):
            job = one.responses.create(model="m", input="Once upon a time", max_output_tokens=200, background=True)
            with pytest.raises(openai.NotFoundError):
                two.responses.retrieve(job.id)
            # The record must go while the task runs; a model that stopped at once is tried again.
            if one.responses.retrieve(job.id).status in ("queued", "in_progress"):
                break
        record = f"warren:response:{job.id}"
        subprocess.run(["redis-cli", "DEL", record], capture_output=True, check=True)
        deadline = time.monotonic() + 60
        status = ""
        while status not in ("completed", "incomplete", "failed"):
            assert time.monotonic() < deadline, f"{record} was not kept from the reply: {status!r}"
            time.sleep(0.2)
            status = subprocess.run(["redis-cli", "HGET", record, "status"],
                                    capture_output=True, text=True, check=True).stdout.strip()
        with pytest.raises(openai.NotFoundError):
            two.responses.retrieve(job.id)
    finally:
        gateway.stop()


def test_a_spent_rate_limit_is_a_429_with_retry_after(worker_names):
    # A key of this run's own: the buckets live in Redis, a minute beyond the test.
    key = f"k-{uuid.uuid4().hex[:8]}"
    gateway = start_gateway(worker_names, gateway__api_keys=key, gateway__requests_per_minute=2)
    try:
        client = sdk(gateway.base_url, api_key=key)
        for _ in range(2):
            client.completions.create(model="m", prompt="Hi", max_tokens=1)
        with pytest.raises(openai.RateLimitError) as raised:
            client.completions.create(model="m", prompt="Hi", max_tokens=1)
        assert int(raised.value.response.headers["retry-after"]) >= 1
        assert raised.value.code == "rate_limit_exceeded"
        # The refusal carries the bucket's state too, as OpenAI's 429s do.
        refused = raised.value.response.headers
        assert refused["x-ratelimit-limit-requests"] == "2", refused
        assert refused["x-ratelimit-remaining-requests"] == "0", refused
        assert refused["x-ratelimit-reset-requests"].endswith("s"), refused
    finally:
        gateway.stop()
