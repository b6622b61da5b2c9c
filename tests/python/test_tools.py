"""Tool calling on the real model, through the official OpenAI SDK and over AMQP with pika:
a forced call (`required` or a named function) comes back as `tool_calls` whose arguments
validate against the tool's schema, non-streamed and streamed (the SDK's own accumulator
rebuilds the call); a conversation holding an assistant's calls and the tools' results is
answered; `auto` leaves the choice to the model, and beside an answer format the answer comes
back as content that fits it (the format is offered as one more function); bad tools get a 400 (or an error reply and a
dead letter) that names what is wrong, and the worker keeps serving.

The default model is a base model: it does not decide to call tools, so these tests force
the call (a grammar then guarantees it) and pass explicit token limits."""

import json

import jsonschema
import openai
import pytest

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time in a city.",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                                                     "required": ["city"], "additionalProperties": False}}},
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
QUESTION = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
WEATHER_CHOICE = {"type": "function", "function": {"name": "get_weather"}}


def check_call(call, name=None):
    assert call.type == "function"
    assert call.id.startswith("call_"), call.id
    assert name is None or call.function.name == name, call
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("choice", ["required", WEATHER_CHOICE], ids=["required", "named"])
def test_a_forced_call_comes_back_as_tool_calls_with_arguments_that_fit_the_schema(client, choice):
    completion = client.chat.completions.create(
        model="m", messages=QUESTION, tools=TOOLS, tool_choice=choice, parallel_tool_calls=False, max_tokens=100,
    )
    choice_ = completion.choices[0]
    assert choice_.finish_reason == "tool_calls", choice_
    assert len(choice_.message.tool_calls) == 1
    check_call(choice_.message.tool_calls[0], "get_weather" if choice != "required" else None)
    assert choice_.message.content is None


def test_a_named_function_is_called_once_even_when_parallel_calls_are_allowed(client):
    completion = client.chat.completions.create(
        model="m", messages=QUESTION, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=100,
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    [call] = completion.choices[0].message.tool_calls
    check_call(call, "get_time")


def test_a_streamed_call_is_rebuilt_by_the_sdks_accumulator(client):
    with client.chat.completions.stream(
        model="m", messages=QUESTION, tools=TOOLS, tool_choice=WEATHER_CHOICE, max_tokens=100,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in kinds
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    # As OpenAI's: a turn that may be calls opens with null content, not an empty text.
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    check_call(call, "get_weather")
    first = next(iter(client.chat.completions.create(model="m", messages=QUESTION, max_tokens=2, stream=True)))
    assert (first.choices[0].delta.role, first.choices[0].delta.content) == ("assistant", "")


def test_a_strict_pydantic_tool_is_parsed_by_the_sdk(client):
    from pydantic import BaseModel

    class GetTime(BaseModel):
        city: str

    completion = client.chat.completions.parse(
        model="m", messages=[{"role": "user", "content": "What time is it in Tokyo?"}],
        tools=[openai.pydantic_function_tool(GetTime)], tool_choice="required", parallel_tool_calls=False,
        max_tokens=100,
    )
    [call] = completion.choices[0].message.tool_calls
    assert call.function.name == "GetTime"
    assert isinstance(call.function.parsed_arguments, GetTime)


def test_a_conversation_with_calls_and_results_is_answered(client):
    history = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 degrees."},
    ]
    completion = client.chat.completions.create(
        model="m", messages=history, tools=TOOLS, tool_choice="none", max_tokens=12,
    )
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.tool_calls is None
    assert choice.message.content
    # The results were read: the prompt holds them (more tokens than without).
    without = client.chat.completions.create(model="m", messages=QUESTION, tools=TOOLS, tool_choice="none", max_tokens=1)
    assert completion.usage.prompt_tokens > without.usage.prompt_tokens + 20


def test_with_auto_the_model_decides_and_the_reply_says_which_it_did(client):
    completion = client.chat.completions.create(
        model="m", messages=QUESTION, tools=TOOLS, tool_choice="auto", max_tokens=40,
    )
    choice = completion.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            check_call(call)
    else:
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.content


@pytest.mark.parametrize(
    "change, says",
    [
        ({"tool_choice": {"type": "function", "function": {"name": "missing"}}}, '"missing"'),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
        ({"tools": TOOLS + TOOLS[:1]}, "tools[2].function.name"),
        ({"messages": QUESTION + [{"role": "tool", "content": "x"}]}, "tool_call_id"),
        ({"tool_choice": "auto", "response_format": {"type": "json_schema", "json_schema": {
            "name": "a", "schema": {"type": "array"}}}}, "must describe an object"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/definitions/nowhere"}}}]},
         "cannot resolve $ref"),
    ],
)
def test_bad_tool_requests_are_a_400_naming_the_problem(client, change, says):
    request = {"model": "m", "messages": QUESTION, "tools": TOOLS, "tool_choice": "required", "max_tokens": 20, **change}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert says in caught.value.body["message"], caught.value.body
    fine = client.chat.completions.create(model="m", messages=QUESTION, max_tokens=2)
    assert fine.choices[0].message.content is not None


def test_tools_on_text_completions_are_refused(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="m", prompt="x", max_tokens=2, extra_body={"tools": TOOLS})
    assert caught.value.body["param"] == "tools"


def test_over_amqp_a_forced_call_is_in_the_reply_and_streamed_in_chunks(amqp):
    task = {"messages": QUESTION, "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
            "max_tokens": 100}
    plain = amqp.send(task)
    streamed = amqp.send({**task, "stream": True})
    reply = amqp.reply(plain)
    assert reply["status"] == "ok" and reply["finish_reason"] == "tool_calls", reply
    [call] = reply["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])
    final = amqp.reply(streamed)
    chunks = amqp.chunks[streamed]
    assert final["finish_reason"] == "tool_calls"
    pieces = [piece for chunk in chunks for piece in chunk.get("tool_calls", [])]
    assert pieces[0]["id"] == final["tool_calls"][0]["id"]
    assert pieces[0]["function"]["name"] == final["tool_calls"][0]["function"]["name"]
    assert "".join(p["function"]["arguments"] for p in pieces) == final["tool_calls"][0]["function"]["arguments"]


def test_over_amqp_a_bad_tool_schema_is_an_error_reply_with_llama_cpps_reason_and_a_dead_letter(amqp):
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
            "properties": {"code": {"type": "string", "pattern": "^(unbalanced$"}}}}}
    task_id = amqp.send({"messages": QUESTION, "tools": [bad], "tool_choice": "required", "max_tokens": 10})
    reply = amqp.reply(task_id)
    assert reply["status"] == "error" and reply["error"]["code"] == "invalid_request", reply
    assert "unbalanced" in reply["error"]["message"], reply["error"]
    headers, body = amqp.dead_letter(task_id)
    assert headers["x-warren-error-code"] == "invalid_request"
    assert body["tools"] == [bad]
    fine = amqp.reply(amqp.send({"prompt": "Hello", "max_tokens": 2}))
    assert fine["status"] == "ok"


# An answer's shape, given as the format beside tools.
SUMMARY = {"type": "object", "properties": {"summary": {"type": "string", "maxLength": 60}},
           "required": ["summary"], "additionalProperties": False}
SUMMARY_FORMAT = {"type": "json_schema", "json_schema": {"name": "summary", "schema": SUMMARY, "strict": True}}


# The base model calls the first function it is offered when its name is a likely
# continuation (`get_weather`), and the answer function (listed last) when it is not
# (`lookup`): the same request then exercises either side of the choice.
LOOKUP = [{"type": "function", "function": {**TOOLS[0]["function"], "name": "lookup"}}]


def test_beside_tools_with_auto_an_answer_format_is_the_content_or_a_call_is_made(client):
    request = dict(model="m", messages=QUESTION, tool_choice="auto", response_format=SUMMARY_FORMAT, max_tokens=120,
                   temperature=0)
    answered = client.chat.completions.create(**request, tools=LOOKUP).choices[0]
    assert answered.finish_reason == "stop" and answered.message.tool_calls is None, answered
    jsonschema.validate(json.loads(answered.message.content), SUMMARY)
    with client.chat.completions.stream(**request, tools=LOOKUP) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion().choices[0]
    assert "content.delta" in kinds and "tool_calls.function.arguments.delta" not in kinds, kinds
    jsonschema.validate(json.loads(final.message.content), SUMMARY)
    # A call is the turn: the answer the model began after it (before its result) is dropped.
    called = client.chat.completions.create(**request, tools=TOOLS[:1]).choices[0]
    assert called.finish_reason == "tool_calls" and called.message.content is None, called
    [call] = called.message.tool_calls
    check_call(call, "get_weather")


def test_over_amqp_an_answer_format_beside_tools_streams_as_text(amqp):
    task = {"messages": QUESTION, "tools": LOOKUP, "tool_choice": "auto", "json_schema": SUMMARY,
            "max_tokens": 120, "stream": True}
    task_id = amqp.send(task)
    reply = amqp.reply(task_id)
    assert reply["status"] == "ok" and reply["finish_reason"] == "stop", reply
    assert "tool_calls" not in reply, reply
    jsonschema.validate(json.loads(reply["text"]), SUMMARY)
    chunks = amqp.chunks[task_id]
    assert "".join(chunk.get("delta", "") for chunk in chunks) == reply["text"]
    assert not [piece for chunk in chunks for piece in chunk.get("tool_calls", [])]


RESPONSE_TOOLS = [{"type": "function", **tool["function"]} for tool in TOOLS]


def test_the_responses_api_forces_a_call_and_takes_its_output_back(client):
    response = client.responses.create(
        model="m", input="What is the weather in Paris, in celsius?", tools=RESPONSE_TOOLS,
        tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=100,
    )
    assert response.status == "completed"
    [call] = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), SCHEMAS["get_weather"])
    assert response.tool_choice.name == "get_weather"
    # The next turn sends the call and its output back as input items.
    follow_up = client.responses.create(
        model="m", tools=RESPONSE_TOOLS, tool_choice="none", max_output_tokens=8,
        input=[{"role": "user", "content": "What is the weather in Paris, in celsius?"}, *response.output,
               {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 degrees."}],
    )
    assert follow_up.status in ("completed", "incomplete")
    assert follow_up.output_text
    assert follow_up.usage.input_tokens > response.usage.input_tokens


def test_the_responses_api_answers_in_its_text_format_beside_tools(client):
    request = dict(
        model="m", input="What is the weather in Paris, in celsius?", max_output_tokens=120, temperature=0,
        tools=[{"type": "function", **LOOKUP[0]["function"]}],
        text={"format": {"type": "json_schema", "name": "summary", "schema": SUMMARY, "strict": True}},
    )
    response = client.responses.create(**request)
    assert [item.type for item in response.output] == ["message"], response.output
    jsonschema.validate(json.loads(response.output_text), SUMMARY)
    events = list(client.responses.create(**request, stream=True))
    assert "response.function_call_arguments.delta" not in [event.type for event in events]
    final = events[-1].response
    assert [item.type for item in final.output] == ["message"]
    jsonschema.validate(json.loads(final.output_text), SUMMARY)


def test_an_input_item_type_the_gateway_does_not_serve_is_named(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m", max_output_tokens=4,
                                input=[{"type": "reasoning", "id": "rs_1", "summary": []}])
    assert caught.value.body["param"] == "input[0].type"
    assert '"reasoning"' in caught.value.body["message"]


def test_responses_parameters_are_served_or_refused_in_this_apis_terms(client):
    # A cache hint changes no output: taken; padding refused is what the events do anyway.
    answer = client.responses.create(model="m", input="Hi", max_output_tokens=2, prompt_cache_retention="24h",
                                     extra_body={"stream_options": {"include_obfuscation": False}})
    assert answer.status in ("completed", "incomplete")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m", input="Hi", max_output_tokens=2,
                                extra_body={"stream_options": {"include_obfuscation": True}})
    assert caught.value.body["param"] == "stream_options"
    # An item reference's `type` is optional: named as one, not taken for a message.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m", max_output_tokens=2, input=[{"id": "msg_1"}])
    assert caught.value.body["param"] == "input[0].type" and "item_reference" in caught.value.body["message"]
    # tool_choice shapes this gateway does not serve are refused in this API's shape.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="m", input="Hi", max_output_tokens=2, tools=RESPONSE_TOOLS,
                                tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "get_weather"}]})
    assert caught.value.body["param"] == "tool_choice" and '"name": ...' in caught.value.body["message"]
    # Streaming a stored response on retrieve is not served: refused, not answered with JSON.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.retrieve(answer.id, stream=True)
    assert caught.value.body["param"] == "stream"


def test_a_streamed_response_yields_typed_events_in_order(client):
    stream = client.responses.create(model="m", input="The capital of France is", max_output_tokens=12, stream=True)
    events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done", "response.output_item.done"):
        assert kind in kinds, kinds
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == text
    [done] = [event for event in events if event.type == "response.output_text.done"]
    assert done.text == text


def test_a_streamed_forced_call_comes_as_function_call_argument_events(client):
    with client.responses.stream(
        model="m", input="Weather in Oslo, in celsius?", tools=RESPONSE_TOOLS, max_output_tokens=100,
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [call] = [item for item in final.output if item.type == "function_call"]
    jsonschema.validate(json.loads(call.arguments), SCHEMAS["get_weather"])
