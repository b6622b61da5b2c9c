"""Structured output on the real model: JSON schemas (through the OpenAI SDK's
`response_format`, the Responses API's `text.format`, and a raw AMQP task) give JSON that a
real validator accepts; a GBNF grammar gives only its language, greedy or sampled; hostile
schemas and grammars get a clear error (a 400, or an error reply and a dead letter) and the
worker keeps serving."""

import json

import jsonschema
import openai
import pytest


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
SCHEMAS = {
    "object with required fields": PERSON,
    "enum": {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "green", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    },
    "array of objects": {
        "type": "array",
        "items": PERSON,
        "minItems": 1,
        "maxItems": 3,
    },
    "nested": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "location": {
                "type": "object",
                "properties": {
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
                },
                "required": ["lat", "tags"],
                "additionalProperties": False,
            },
        },
        "required": ["city", "location"],
        "additionalProperties": False,
    },
}
YES_NO = 'root ::= "yes" | "no"'


def ask(content):
    return [{"role": "user", "content": content}]


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_json_schema_response_format_gives_json_that_validates(client, name):
    schema = SCHEMAS[name]
    completion = client.chat.completions.create(
        model="m",
        messages=ask(f"Answer in JSON ({name}). Tell me about a famous person and their city."),
        max_tokens=256,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
    )
    choice = completion.choices[0]
    # Every string, list and number in these schemas is bounded, so the model ends its JSON.
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_a_sampled_task_keeps_to_its_schema_too(client):
    for seed in range(3):
        completion = client.chat.completions.create(
            model="m", messages=ask("Describe someone."), max_tokens=256, temperature=1.0, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        )
        assert completion.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(completion.choices[0].message.content), PERSON)


def closes_to_an_object(text):
    """Whether `text` is the beginning of a JSON object: some short ending (the rest of a
    literal, string or member, then the brackets still open) makes it one."""
    stack, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if not stack or stack.pop() != char:
                return False
    closers = "".join(reversed(stack))
    fillers = ["", "0", "null", ": null", '": null', '"": null', "rue", "ue", "e", "alse", "lse", "se",
               "ull", "ll", "l", "n", "0000", "000", "00"]
    for filler in fillers:
        for quote in ("", '"'):
            try:
                if isinstance(json.loads(text + filler + quote + closers), dict):
                    return True
            except ValueError:
                pass
    return False


def test_the_object_check_tells_a_beginning_from_other_text():
    for beginning in ('{"a": [1, {"b": "x', '{"a": tr', '{"a":', '{"a": 1, ', '{"k', '{"a": 1.', '{}'):
        assert closes_to_an_object(beginning), beginning
    for other in ('["a"', '"a"', '{"a": 1}}', '{"a" 1', '{"a", ', '{"a": [1}', 'x{'):
        assert not closes_to_an_object(other), other


def test_json_object_mode_gives_a_json_object(client):
    completion = client.chat.completions.create(
        model="m", messages=ask("Give me a JSON object about cats."), max_tokens=200,
        response_format={"type": "json_object"},
    )
    text = completion.choices[0].message.content
    # The base model rarely closes the object it was made to begin (it goes on adding
    # members): a text cut at `max_tokens` is still the beginning of one.
    if completion.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert completion.choices[0].finish_reason == "length"
        assert closes_to_an_object(text), text


def test_the_responses_api_text_format_constrains_the_output(client):
    response = client.responses.create(
        model="m", input="Describe a person.", max_output_tokens=256,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
    )
    assert response.status == "completed"
    assert response.text.format.type == "json_schema"
    jsonschema.validate(json.loads(response.output_text), PERSON)


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_a_grammar_yields_only_its_language(client, temperature):
    prompts = ["Is the sky blue?", "The capital of France is", "Write a poem about the sea.", "1, 2, 3,"]
    for seed, prompt in enumerate(prompts):
        completion = client.completions.create(
            model="m", prompt=prompt, max_tokens=16, temperature=temperature, seed=seed,
            extra_body={"grammar": YES_NO},
        )
        assert completion.choices[0].text in ("yes", "no"), completion.choices[0].text
        assert completion.choices[0].finish_reason == "stop"


HOSTILE_SCHEMAS = {
    "deep nesting": {"type": "object", "properties": {"a": {"properties": {"a": {"properties": {"a": {}}}}}}},
    "huge enum": {"enum": [f"value-{i}" for i in range(5000)]},
    "invalid regex pattern": {"type": "string", "pattern": "^(unbalanced$"},
    "unresolvable ref": {"$ref": "#/definitions/missing"},
    "repetition past llama.cpp's bound": {"type": "array", "minItems": 100000},
}
for _ in range(40):
    HOSTILE_SCHEMAS["deep nesting"] = {"type": "object", "properties": {"a": HOSTILE_SCHEMAS["deep nesting"]}}


@pytest.mark.parametrize("name", HOSTILE_SCHEMAS)
def test_a_hostile_schema_is_a_400_and_the_gateway_keeps_serving(client, name):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m", messages=ask("x"), max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "h", "schema": HOSTILE_SCHEMAS[name]}},
        )
    error = caught.value.body
    assert error["type"] == "invalid_request_error"
    assert "json_schema" in error["message"]
    fine = client.completions.create(model="m", prompt="Hello", max_tokens=2)
    assert fine.choices[0].text is not None


@pytest.mark.parametrize(
    "name, says",
    [("invalid regex pattern", "unbalanced parentheses"), ("unresolvable ref", "cannot resolve $ref")],
)
def test_a_schema_llama_cpp_rejects_is_a_400_with_llama_cpps_reason(client, name, says):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m", messages=ask("x"), max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "h", "schema": HOSTILE_SCHEMAS[name]}},
        )
    assert says in caught.value.body["message"], caught.value.body["message"]


@pytest.mark.parametrize(
    "grammar, says",
    [
        ('start ::= "a"', "root"),
        ('root ::= root "a" | "b"', "left recursion"),
        # Left recursion behind a rule that can match nothing: llama.cpp's own check misses
        # it and its sampler never returns (a hung worker before warren checked it).
        ('root ::= x root "a" | "b"\nx ::= "c"?', "left recursion through rule `root`"),
        # Nested repetitions of what can match nothing: some 60^3 ways to begin, which held
        # the worker about two minutes while llama.cpp built the sampler.
        (
            'root ::= a3 "b"\na3 ::= a2{0,60}\na2 ::= a1{0,60}\na1 ::= a0{0,60}\na0 ::= "a"?',
            "more parse stacks than llama.cpp can build in time (over 10000 at once",
        ),
        # The parser's own complaint goes to the worker's stderr (llama.cpp prints it there).
        ('root ::= undefined-rule', "failed to parse grammar"),
        ('root ::= ("a"', "failed to parse grammar"),
        ("root ::= " + "(" * 100 + '"a"' + ")" * 100, "deeper than 32"),
    ],
)
def test_a_grammar_llama_cpp_rejects_is_a_400_saying_why(client, grammar, says):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="m", prompt="x", max_tokens=4, extra_body={"grammar": grammar})
    assert says in caught.value.body["message"], caught.value.body["message"]


def test_over_amqp_a_schema_and_a_grammar_constrain_the_reply(amqp):
    schema_task = amqp.send({"messages": ask("Describe a person."), "json_schema": PERSON, "max_tokens": 256})
    grammar_task = amqp.send({"prompt": "Is water wet?", "grammar": YES_NO, "max_tokens": 8})
    schema_reply = amqp.reply(schema_task)
    assert schema_reply["status"] == "ok" and schema_reply["finish_reason"] == "stop", schema_reply
    jsonschema.validate(json.loads(schema_reply["text"]), PERSON)
    grammar_reply = amqp.reply(grammar_task)
    assert grammar_reply["text"] in ("yes", "no"), grammar_reply


def test_over_amqp_sampled_tasks_that_mask_every_step_keep_to_their_schema(amqp):
    """Without top-k (top_k 0) or with a repeat penalty, each token is picked from the
    grammar-masked vocabulary (narrowed by first byte), not from a scan of the best tokens."""
    settings = [{"top_k": 0, "temperature": 1.0, "seed": 3}, {"top_k": 0, "temperature": 0.7, "top_p": 0.9, "seed": 4},
                {"temperature": 0.8, "repeat_penalty": 1.3, "seed": 5}]
    sent = [amqp.send({"messages": ask("Describe a person."), "json_schema": PERSON, "max_tokens": 256, **s}) for s in settings]
    for task_id, sampling in zip(sent, settings):
        reply = amqp.reply(task_id)
        assert reply["status"] == "ok" and reply["finish_reason"] == "stop", (sampling, reply)
        jsonschema.validate(json.loads(reply["text"]), PERSON)


def test_over_amqp_a_bad_constraint_is_an_error_reply_and_a_dead_letter(amqp):
    bad_grammar = amqp.send({"prompt": "x", "grammar": 'root ::= root "a"'})
    both = amqp.send({"prompt": "x", "grammar": YES_NO, "json_schema": PERSON})
    for task_id, says in [(bad_grammar, "left recursion"), (both, "not both")]:
        reply = amqp.reply(task_id)
        assert reply["status"] == "error"
        assert reply["error"]["code"] == "invalid_request" and not reply["error"]["retryable"]
        assert says in reply["error"]["message"], reply["error"]
        headers, body = amqp.dead_letter(task_id)
        assert headers["x-warren-error-code"] == "invalid_request"
        assert body["prompt"] == "x"
    fine = amqp.reply(amqp.send({"prompt": "Hello", "max_tokens": 2}))
    assert fine["status"] == "ok"
