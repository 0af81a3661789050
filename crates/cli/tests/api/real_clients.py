"""Drives a running `ingot api` with real client libraries, unmodified (see tests/clients.rs):
the `openai` SDK (logprobs, tools with response_format, parallel_tool_calls), langchain-openai,
openai-agents, pydantic-ai and litellm (each: a streamed chat, a tool round trip, a forced tool
call, a structured output), and LLaMA Factory's two API examples (scripts/api_example/
test_toolcall.py and test_image.py) written again from their published behaviour.

Usage: python real_clients.py BASE_URL
Every request is greedy and short. Where what happens would depend on the small model's
judgement, the call is forced with tool_choice (or a grammar), so the checks are not flaky.
"""

import asyncio
import json
import math
import os
import sys

import openai
from pydantic import BaseModel

from checks import WEATHER, check, report

BASE = sys.argv[1]
V1 = BASE + "/v1"
KEY = "0"  # LLaMA Factory's examples send API_KEY or "0"; the server runs without a key
client = openai.OpenAI(base_url=V1, api_key=KEY, max_retries=0, timeout=300)

WEATHER_Q = "What is the weather like in Paris right now?"
WEATHER_RESULT = '{"temperature_c": 22, "sky": "sunny"}'


class City(BaseModel):
    city: str
    country: str


class Weather(BaseModel):
    city: str
    temperature_c: int


CITY_SCHEMA = {"type": "json_schema", "json_schema": {"name": "City", "schema": City.model_json_schema()}}


def chat(messages, **kw):
    return client.chat.completions.create(model="test", messages=messages, temperature=0, **kw)


# ---- the openai SDK: what the other clients build on ----


def check_token_logprobs(entries, top_n):
    """Greedy: each token is the most likely of its step; exp of the alternatives sums to <= 1."""
    assert entries, "no entries"
    for e in entries:
        assert len(e.top_logprobs) == top_n, e
        best = max(t.logprob for t in e.top_logprobs)
        assert abs(e.logprob - best) < 1e-6, (e.logprob, best)
        assert sum(math.exp(t.logprob) for t in e.top_logprobs) <= 1 + 1e-6, e
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token, e


@check
def openai_chat_logprobs_streamed_and_not():
    q = [{"role": "user", "content": "What is the capital of France?"}]
    r = chat(q, logprobs=True, top_logprobs=3, max_tokens=6)
    c = r.choices[0]
    check_token_logprobs(c.logprobs.content, 3)
    assert "".join(e.token for e in c.logprobs.content) == c.message.content, c
    assert len(c.logprobs.content) == r.usage.completion_tokens - (c.finish_reason == "stop"), r
    streamed = []
    for chunk in chat(q, logprobs=True, top_logprobs=3, max_tokens=6, stream=True):
        if chunk.choices and chunk.choices[0].logprobs:
            streamed += chunk.choices[0].logprobs.content or []
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in c.logprobs.content]
    assert chat(q, max_tokens=2).choices[0].logprobs is None
    try:
        chat(q, logprobs=True, top_logprobs=21, max_tokens=2)
        raise AssertionError("top_logprobs 21 must be refused")
    except openai.BadRequestError as e:
        assert e.body["param"] == "top_logprobs", e.body


@check
def openai_completions_logprobs():
    r = client.completions.create(model="test", prompt="def fib(n):", max_tokens=5, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text, (lp.tokens, r.choices[0].text)
    assert len(lp.token_logprobs) == len(lp.tokens) == len(lp.top_logprobs) == len(lp.text_offset) == 5, lp
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0, lp
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert abs(chosen - max(top.values())) < 1e-6, (chosen, top)


@check
def openai_tools_with_response_format():
    q = [{"role": "user", "content": WEATHER_Q}]
    # Forced: the call is the whole reply; the format waits for the text turn (no 400).
    forced = chat(q, tools=[WEATHER], tool_choice="required", response_format=CITY_SCHEMA, max_tokens=48)
    call = forced.choices[0].message.tool_calls[0]
    assert forced.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", forced
    turn = q + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT},
    ]
    # auto: either a call or schema-valid text; after the tool's answer this model answers.
    final = chat(turn, tools=[WEATHER], response_format=CITY_SCHEMA, max_tokens=48).choices[0]
    if final.message.tool_calls:
        assert final.message.tool_calls[0].function.name == "get_weather", final
    else:
        City.model_validate_json(final.message.content)


@check
def openai_parallel_tool_calls_false_gives_one_call():
    q = [{"role": "user", "content": "What is the weather in Paris, London and Rome?"}]
    for parallel in (False, None):
        kw = {} if parallel is None else {"parallel_tool_calls": parallel}
        c = chat(q, tools=[WEATHER], tool_choice="required", max_tokens=96, **kw).choices[0]
        assert c.finish_reason == "tool_calls", c
        if parallel is False:
            assert len(c.message.tool_calls) == 1, c.message.tool_calls


# ---- langchain-openai ----


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return WEATHER_RESULT


@check
def langchain_openai():
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=V1, api_key=KEY, model="test", temperature=0, max_tokens=48, max_retries=0)
    text = "".join(chunk.content for chunk in llm.stream("Say hello in one short sentence."))
    assert text.strip(), text
    forced = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(WEATHER_Q)
    assert forced.tool_calls and forced.tool_calls[0]["name"] == "get_weather", forced
    required = llm.bind_tools([get_weather], tool_choice="required").invoke(WEATHER_Q)
    assert required.tool_calls[0]["name"] == "get_weather", required
    call = forced.tool_calls[0]
    messages = [HumanMessage(WEATHER_Q), forced, ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])]
    final = llm.bind_tools([get_weather]).invoke(messages)
    assert not final.tool_calls and "22" in final.content, final
    city = llm.with_structured_output(City, method="json_schema").invoke("Name a city in Japan.")
    assert isinstance(city, City), city
    lp = llm.bind(logprobs=True).invoke("Say hi.").response_metadata["logprobs"]
    assert lp["content"] and "logprob" in lp["content"][0], lp


# ---- openai-agents ----


@check
def openai_agents():
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    model = OpenAIChatCompletionsModel(model="test", openai_client=AsyncOpenAI(base_url=V1, api_key=KEY, max_retries=0))
    calls = []

    @function_tool
    def weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return WEATHER_RESULT

    settings = ModelSettings(temperature=0, max_tokens=64, tool_choice="required")
    # The SDK resets tool_choice after the call (reset_tool_choice), so the second turn is
    # "auto" with the output schema: a call or schema-valid JSON.
    agent = Agent(name="weather", instructions="Use the tool, then answer.", model=model, tools=[weather],
                  output_type=Weather, model_settings=settings)
    plain = Agent(name="plain", instructions="Answer briefly.", model=model,
                  model_settings=ModelSettings(temperature=0, max_tokens=24))

    async def run():
        # One event loop for both runs: the SDK's client is bound to the loop it first ran on.
        result = await Runner.run(agent, WEATHER_Q, max_turns=4)
        streamed = Runner.run_streamed(plain, "Say hello.")
        deltas = [e.data.delta async for e in streamed.stream_events()
                  if e.type == "raw_response_event" and getattr(e.data, "type", "") == "response.output_text.delta"]
        return result.final_output, "".join(deltas), streamed.final_output

    output, text, final = asyncio.run(run())
    assert calls, "the tool was not called"
    assert isinstance(output, Weather), output
    assert text and text == final, (text, final)


# ---- pydantic-ai ----


@check
def pydantic_ai():
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("test", provider=OpenAIProvider(base_url=V1, api_key=KEY))
    settings = {"temperature": 0, "max_tokens": 48}

    async def streamed():
        async with Agent(model, model_settings=settings).run_stream("Say hello in one sentence.") as run:
            return "".join([t async for t in run.stream_text(delta=True)])

    assert asyncio.run(streamed()).strip()
    # Its default structured output is a forced call of its `final_result` tool.
    forced = Agent(model, output_type=City, model_settings=settings).run_sync("Name a city in Japan.")
    assert isinstance(forced.output, City), forced.output
    native = Agent(model, output_type=NativeOutput(City), model_settings=settings).run_sync("Name a city in Italy.")
    assert isinstance(native.output, City), native.output
    calls = []
    agent = Agent(model, model_settings=settings)

    @agent.tool_plain
    def weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(city)
        return WEATHER_RESULT

    answer = agent.run_sync(WEATHER_Q)
    assert calls and "22" in answer.output, (calls, answer.output)


# ---- litellm ----


@check
def litellm_client():
    # No download of litellm's price list (the test machine has no general internet).
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    kw = {"model": "openai/test", "api_base": V1, "api_key": KEY, "temperature": 0, "max_tokens": 48}
    stream = litellm.completion(messages=[{"role": "user", "content": "Say hello."}], stream=True, **kw)
    assert "".join(c.choices[0].delta.content or "" for c in stream).strip()
    q = [{"role": "user", "content": WEATHER_Q}]
    forced = litellm.completion(messages=q, tools=[WEATHER], tool_choice="required", **kw).choices[0].message
    call = forced.tool_calls[0]
    assert call.function.name == "get_weather", forced
    turn = q + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function",
                                                               "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT},
    ]
    final = litellm.completion(messages=turn, tools=[WEATHER], **kw).choices[0].message
    assert not final.tool_calls and "22" in final.content, final
    city = litellm.completion(messages=[{"role": "user", "content": "Name a city in Japan."}], response_format=City, **kw)
    City.model_validate_json(city.choices[0].message.content)


# ---- LLaMA Factory's scripts/api_example, as published ----


def calculate_gpa(grades, hours):
    grade_to_score = {"A": 4, "B": 3, "C": 2}
    total_score, total_hour = 0, 0
    for grade, hour in zip(grades, hours):
        total_score += grade_to_score[grade] * hour
        total_hour += hour
    return round(total_score / total_hour, 2)


@check
def llamafactory_test_toolcall():
    tools = [{
        "type": "function",
        "function": {
            "name": "calculate_gpa",
            "description": "Calculate the Grade Point Average (GPA) based on grades and credit hours",
            "parameters": {
                "type": "object",
                "properties": {
                    "grades": {"type": "array", "items": {"type": "string"}, "description": "The grades"},
                    "hours": {"type": "array", "items": {"type": "integer"}, "description": "The credit hours"},
                },
                "required": ["grades", "hours"],
            },
        },
    }]
    messages = [{"role": "user", "content": "My grades are A, A, B, and C. The credit hours are 3, 3, 3, and 2."}]
    result = client.chat.completions.create(messages=messages, model="test", tools=tools, temperature=0, max_tokens=64)
    if result.choices[0].message.tool_calls is None:
        raise ValueError("Cannot retrieve function call from the response.")
    messages.append(result.choices[0].message)
    tool_call = result.choices[0].message.tool_calls[0].function
    name, arguments = tool_call.name, json.loads(tool_call.arguments)
    assert name == "calculate_gpa" and arguments == {"grades": ["A", "A", "B", "C"], "hours": [3, 3, 3, 2]}, tool_call
    gpa = calculate_gpa(**arguments)
    messages.append({"role": "tool", "content": json.dumps({"gpa": gpa}, ensure_ascii=False)})
    result = client.chat.completions.create(messages=messages, model="test", tools=tools, temperature=0, max_tokens=64)
    assert str(gpa) in result.choices[0].message.content, result.choices[0].message.content


@check
def llamafactory_test_image_on_a_text_model():
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Output the color and number of each box."},
        {"type": "image_url", "image_url": {"url": "https://github.com/hiyouga/LLaMA-Factory/blob/main/data/mllm_demo_data/1.jpg?raw=true"}},
    ]}]
    try:
        client.chat.completions.create(messages=messages, model="test")
        raise AssertionError("an image to a text model must be refused")
    except openai.BadRequestError as e:
        assert e.body["param"] == "messages[0].content[1].image_url", e.body
        assert "does not take images" in e.body["message"], e.body


report()
