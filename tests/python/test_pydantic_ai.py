"""pydantic-ai (from PyPI) against the real gateway and worker: an agent whose output type is
given as the answer's format (`NativeOutput`) beside its tools, over chat completions and over
the Responses API, and one with pydantic-ai's default output mode (the output type as a
function the model must call). Its `openai` pin fits tests/python/requirements.txt, so it
runs here rather than in tests/python/agents/.

The default model is a base model: greedy, it calls the function whose name the prompt makes
likeliest. A tool named `lookup` leaves it the answer function (the format); a tool named
`get_weather` gets called, and is then withdrawn so the next turn answers."""

import pytest
from pydantic import BaseModel, Field
from pydantic_ai import Agent, NativeOutput, RunContext, ToolOutput
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import UsageLimits


class Forecast(BaseModel):
    city: str = Field(max_length=24)
    sunny: bool


SETTINGS = ModelSettings(max_tokens=80, temperature=0, parallel_tool_calls=False)
# A model that calls a tool every turn fails the run at this bound, not at pydantic-ai's 50.
LIMITS = UsageLimits(request_limit=3)


def model_of(stack, api):
    provider = OpenAIProvider(base_url=stack.gateway.base_url, api_key="unused")
    return (OpenAIResponsesModel if api == "responses" else OpenAIChatModel)("m", provider=provider)


def tool_calls(result):
    return [part.tool_name for message in result.all_messages() for part in message.parts
            if isinstance(part, ToolCallPart)]


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_native_output_beside_a_tool_is_answered_in_its_type(stack, api):
    agent = Agent(model_of(stack, api), output_type=NativeOutput(Forecast), model_settings=SETTINGS)
    asked = []

    @agent.tool_plain
    def lookup(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}."

    result = agent.run_sync("What is the weather in Lisbon?", usage_limits=LIMITS)
    assert isinstance(result.output, Forecast)
    assert asked == [] and tool_calls(result) == []


def test_a_native_output_agent_calls_its_tool_then_answers_in_its_type(stack):
    agent = Agent(model_of(stack, "chat"), output_type=NativeOutput(Forecast), model_settings=SETTINGS)
    asked = []

    async def until_called(context: RunContext, tool):
        return None if asked else tool

    @agent.tool_plain(prepare=until_called)
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}."

    result = agent.run_sync("What is the weather in Lisbon?", usage_limits=LIMITS)
    assert tool_calls(result) == ["get_weather"] and len(asked) == 1
    assert isinstance(result.output, Forecast)


def test_the_default_tool_output_mode_gets_its_type_from_a_forced_call(stack):
    agent = Agent(model_of(stack, "chat"), output_type=ToolOutput(Forecast), model_settings=SETTINGS)
    result = agent.run_sync("What is the weather in Lisbon?", usage_limits=LIMITS)
    assert isinstance(result.output, Forecast)
    assert tool_calls(result) == ["final_result"]
