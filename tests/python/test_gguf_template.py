"""A model whose GGUF carries its own chat template: a copy of the default model with the
ChatML template of data/chatml-tools.jinja written into its metadata by the `gguf` package
(llama.cpp's own Python library). The worker must render with that template, not the one warren
ships for Gemma, and tool calling must work through it: a forced call comes back as
`tool_calls`, and plain chat is rendered in ChatML."""

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from conftest import MODEL, Names, sdk, start_gateway, start_worker

TEMPLATE = Path(__file__).parent / "data" / "chatml-tools.jinja"
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"],
        "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]


def model_with_template():
    """The copy with the template, written once per machine and set of inputs: rewriting the
    whole model in Python keeps a CPU core busy (docs/src/getting-started.md). Kept beside the
    model ($WARREN_CACHE_DIR, ~/.cache/warren), named after what it is made from (the model's
    contents: each clone copies the model anew)."""
    with open(MODEL, "rb") as model_file:
        model_digest = hashlib.file_digest(model_file, "sha256").digest()
    key = hashlib.sha256(b"\0".join([
        TEMPLATE.read_bytes(), model_digest, importlib.metadata.version("gguf").encode(),
    ])).hexdigest()[:16]
    cache = Path(os.environ.get("WARREN_CACHE_DIR") or Path.home() / ".cache" / "warren") / "test-models"
    model = cache / f"gemma-chatml-{key}.gguf"
    if not model.exists():
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob("gemma-chatml-*.gguf"):  # made from other inputs
            stale.unlink(missing_ok=True)
        partial = cache / f"{model.name}.{os.getpid()}.partial"
        try:
            subprocess.run(
                [Path(sys.executable).with_name("gguf-new-metadata"), str(MODEL), str(partial),
                 "--chat-template-file", str(TEMPLATE), "--force"],
                check=True, capture_output=True,
            )
            partial.rename(model)
        finally:
            partial.unlink(missing_ok=True)
    return model


@pytest.fixture(scope="module")
def chatml():
    model = model_with_template()
    names = Names("gguf_template")
    worker = start_worker(names, engine__model_path=model)
    gateway = start_gateway(names)
    yield type("Stack", (), {"worker": worker, "client": sdk(gateway.base_url)})
    gateway.stop()
    worker.stop()
    names.delete()


def test_the_worker_renders_with_the_ggufs_own_template(chatml):
    assert "chat_template=gguf" in chatml.worker.log()
    plain = chatml.client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Hello"}], max_tokens=4,
    )
    with_system = chatml.client.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=4,
    )
    # The prompts the worker read are ChatML's to the token: the same text sent raw (no
    # template) counts as many. Gemma's template would have joined the system message into the
    # user's turn, with its own turn markers.
    for answer, turns in ((plain, "<|im_start|>user\nHello<|im_end|>\n"),
                          (with_system, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n")):
        raw = chatml.client.completions.create(model="m", prompt=turns + "<|im_start|>assistant\n", max_tokens=1)
        assert answer.usage.prompt_tokens == raw.usage.prompt_tokens, (answer.usage, raw.usage)
    assert plain.choices[0].message.content is not None


def test_a_forced_call_works_through_the_ggufs_template(chatml):
    completion = chatml.client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=TOOLS,
        tool_choice="required", parallel_tool_calls=False, max_tokens=60,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), CITY)
