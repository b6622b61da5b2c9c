"""Each kind of object the gateway's endpoints answer with, validated with the `openai` SDK's
own types (`model_validate`): the SDK's usual parsing builds its objects without validating
them, so a required field the gateway leaves out would pass unseen there and fail a typed
client. (Batch output lines are validated in test_batch.py.)"""

import json

import pytest
from openai.types import Batch, Completion, FileDeleted, FileObject, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from conftest import sdk


@pytest.fixture(scope="module")
def client(stack):
    return sdk(stack.gateway.base_url)


def body(raw):
    return json.loads(raw.text)


def test_chat_and_text_completions_fit_the_sdks_types(client):
    raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                                           max_tokens=3, logprobs=True, top_logprobs=2)
    ChatCompletion.model_validate(body(raw))
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                            stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        ChatCompletionChunk.model_validate(chunk.model_dump(exclude_unset=True))
    Completion.model_validate(body(client.completions.with_raw_response.create(model="m", prompt="Hi", max_tokens=3)))


def test_responses_and_their_events_fit_the_sdks_types(client):
    created = body(client.responses.with_raw_response.create(model="m", input="Hi", max_output_tokens=3))
    Response.model_validate(created)
    Response.model_validate(body(client.responses.with_raw_response.retrieve(created["id"])))
    events = TypeAdapter(ResponseStreamEvent)
    for event in client.responses.create(model="m", input="Hi", max_output_tokens=3, stream=True):
        events.validate_python(event.model_dump(exclude_unset=True))


def test_models_files_and_batches_fit_the_sdks_types(client):
    listed = body(client.models.with_raw_response.list())
    for model in listed["data"]:
        Model.model_validate(model)
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}}
    uploaded = body(client.files.with_raw_response.create(file=("r.jsonl", json.dumps(line).encode()), purpose="batch"))
    FileObject.model_validate(uploaded)
    batch = body(client.batches.with_raw_response.create(input_file_id=uploaded["id"], endpoint="/v1/chat/completions",
                                                          completion_window="24h"))
    Batch.model_validate(batch)
    Batch.model_validate(body(client.batches.with_raw_response.cancel(batch["id"])))
    FileDeleted.model_validate(body(client.files.with_raw_response.delete(uploaded["id"])))
