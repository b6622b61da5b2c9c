"""Agent frameworks from PyPI against the real gateway and worker: langchain-openai's
`bind_tools` with a forced call and a full tool round trip (call, run the tool, send the
result back, get an answer), and instructor's default mode (TOOLS: the answer's shape as a
forced function call). They run in their own virtualenv (tests/python/agents/requirements.txt)
because they resolve to an older `openai` SDK than the other tests pin.

The default model is a base model: it follows no instructions, so every call is forced with
`tool_choice` (a grammar then guarantees a call that fits the schema)."""


import instructor
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny and 21 degrees in {city}."


def test_langchain_bind_tools_forces_a_call_and_a_round_trip_gets_an_answer(stack):
    model = ChatOpenAI(base_url=stack.gateway.base_url, api_key="unused", model="m", max_tokens=60, max_retries=0)
    with_tools = model.bind_tools([get_weather], tool_choice="get_weather")
    question = HumanMessage("What is the weather in Paris?")
    asked = with_tools.invoke([question])
    [call] = asked.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"].get("city"), str), call
    assert call["id"].startswith("call_")
    assert asked.response_metadata["finish_reason"] == "tool_calls"
    result = get_weather.invoke(call)
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    answer = model.bind(max_tokens=12).invoke([question, asked, result])
    assert answer.tool_calls == []
    assert answer.content
    assert answer.response_metadata["finish_reason"] in ("stop", "length")


def test_langchain_streams_a_forced_call_and_rebuilds_it_from_the_chunks(stack):
    model = ChatOpenAI(base_url=stack.gateway.base_url, api_key="unused", model="m", max_tokens=60, max_retries=0)
    with_tools = model.bind_tools([get_weather], tool_choice="get_weather")
    merged = None
    for chunk in with_tools.stream("What is the weather in Rome?"):
        merged = chunk if merged is None else merged + chunk
    [call] = merged.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"].get("city"), str), merged.tool_call_chunks


class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population: int = Field(ge=0)


def test_instructors_default_mode_returns_the_model_it_asked_for(stack):
    client = instructor.from_openai(OpenAI(base_url=stack.gateway.base_url, api_key="unused", max_retries=0))
    assert client.mode == instructor.Mode.TOOLS
    city = client.chat.completions.create(
        model="m", response_model=City, max_tokens=120, max_retries=0,
        messages=[{"role": "user", "content": "Tell me about Paris."}],
    )
    # Built from the forced call's arguments, which the grammar held to City's schema.
    assert isinstance(city, City)


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_an_openai_agents_function_tool_runs_through_either_api(stack, api):
    import asyncio

    from agents import (Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner,
                        function_tool, set_tracing_disabled)
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    asked = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}."

    client = AsyncOpenAI(base_url=stack.gateway.base_url, api_key="unused", max_retries=0)
    agent = Agent(
        name="forecaster", instructions="Answer with the weather.", tools=[weather],
        model=(OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel)(
            model="m", openai_client=client),
        model_settings=ModelSettings(tool_choice="weather", max_tokens=60),
        # The tool's result is the answer: a base model would not end a second turn by itself
        # (the Responses API has no stop strings), and the SDK fails an incomplete response.
        tool_use_behavior="stop_on_first_tool",
    )

    async def run(streamed):
        if not streamed:
            return await Runner.run(agent, "What is the weather in Lisbon?", max_turns=3)
        result = Runner.run_streamed(agent, "What is the weather in Lisbon?", max_turns=3)
        kinds = [event.type async for event in result.stream_events()]
        assert "raw_response_event" in kinds
        return result

    async def both():
        return [await run(False), await run(True)]

    for result in asyncio.run(both()):
        # One call and its output, and no empty message before the call (a stream that
        # opened with text content would make one).
        kinds = [item.type for item in result.new_items]
        assert kinds == ["tool_call_item", "tool_call_output_item"], result.new_items
        outputs = [item for item in result.new_items if item.type == "tool_call_output_item"]
        assert outputs[0].output.startswith("Sunny in ")
        assert result.final_output == outputs[0].output
    assert len(asked) == 2


class Forecast(BaseModel):
    city: str = Field(max_length=24)
    sunny: bool


def test_an_openai_agents_agent_with_tools_and_an_output_type_ends_with_that_type(stack):
    import asyncio

    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    asked = []

    # Offered until called once: a base model calls the first function it is offered every
    # turn, so the second turn offers none and answers in the output type's format.
    @function_tool(is_enabled=lambda context, agent: not asked)
    def weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}."

    client = AsyncOpenAI(base_url=stack.gateway.base_url, api_key="unused", max_retries=0)
    agent = Agent(
        name="forecaster", instructions="Answer with the weather.", tools=[weather], output_type=Forecast,
        model=OpenAIResponsesModel(model="m", openai_client=client),
        model_settings=ModelSettings(max_tokens=80, parallel_tool_calls=False),
    )
    # The first turn sends `tools` and `text.format` together (no longer a 400).
    result = asyncio.run(Runner.run(agent, "What is the weather in Lisbon?", max_turns=3))
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"], kinds
    assert len(asked) == 1
    assert isinstance(result.final_output, Forecast)
