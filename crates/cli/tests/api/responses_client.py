"""Drives a running `ingot api`'s Responses API with the official openai client and with the
openai-agents SDK's default (Responses) model class (see tests/api.rs).

Usage: python responses_client.py BASE_URL MODEL GREEDY_FIXTURE.json
Greedy and short; the expected texts come from the shared reference fixture (llama.cpp's
greedy run of the same GGUF).
"""

import json
import os

import openai
from checks import WEATHER_FUNCTION, check, command_line, report

BASE, MODEL, cases = command_line()
client = openai.OpenAI(base_url=BASE + "/v1", api_key="test-key", max_retries=0, timeout=300)
capital = cases["capital"]
WEATHER = {"type": "function", **WEATHER_FUNCTION}
WEATHER_Q = "What is the weather like in Paris right now?"


def create(**kw):
    return client.responses.create(model=MODEL, temperature=0, **kw)


@check
def plain_text_matches_reference():
    r = create(input=capital["messages"][0]["content"], max_output_tokens=16)
    assert r.status == "completed", r
    assert r.output_text == capital["text"], r.output_text
    assert r.usage.input_tokens == len(capital["prompt_ids"]), r.usage
    assert r.usage.output_tokens == len(capital["new_ids"]), r.usage
    # Content parts and a cut reply.
    r = create(input=[{"role": "user", "content": [{"type": "input_text", "text": "What is the capital of France?"}]}], max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens", r
    assert capital["text"].startswith(r.output_text), r.output_text


@check
def instructions_and_previous_response():
    case = cases["multiturn_apples"]
    first = create(input=case["messages"][0]["content"], max_output_tokens=16)
    assert first.output_text, first
    again = client.responses.retrieve(first.id)
    assert again.id == first.id and again.output_text == first.output_text, again
    # The history of the first response, then the next turn: the fixture's conversation when
    # the first reply is the fixture's.
    second = create(input=case["messages"][2]["content"], previous_response_id=first.id, max_output_tokens=16)
    if first.output_text == case["messages"][1]["content"]:
        assert second.output_text == case["text"], second.output_text
    assert second.usage.input_tokens > first.usage.input_tokens, (first.usage, second.usage)
    try:
        create(input="x", previous_response_id="resp_unknown", max_output_tokens=2)
        raise AssertionError("an unknown previous_response_id should be refused")
    except openai.BadRequestError as e:
        assert e.body["param"] == "previous_response_id", e.body
    pirate = cases["pirate_system"]
    r = create(instructions=pirate["messages"][0]["content"], input=pirate["messages"][1]["content"], max_output_tokens=4)
    assert r.usage.input_tokens == len(pirate["prompt_ids"]), r.usage


@check
def streaming_equals_non_streaming():
    plain = create(input=capital["messages"][0]["content"], max_output_tokens=16)
    kinds, text, done = [], "", None
    with create(input=capital["messages"][0]["content"], max_output_tokens=16, stream=True) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type == "response.completed":
                done = event.response
    assert text == plain.output_text, text
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    for k in ["response.output_item.added", "response.content_part.added", "response.output_text.done",
              "response.content_part.done", "response.output_item.done"]:
        assert k in kinds, (k, kinds)
    assert kinds[-1] == "response.completed" and done.output_text == plain.output_text, kinds
    assert done.usage.output_tokens == plain.usage.output_tokens, done.usage


@check
def function_tool_round_trip():
    first = create(input=WEATHER_Q, tools=[WEATHER], max_output_tokens=48)
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather", first.output
    assert isinstance(json.loads(calls[0].arguments)["city"], str), calls[0]
    # Streamed, the same call arrives through the function_call events.
    args, names = "", []
    for event in create(input=WEATHER_Q, tools=[WEATHER], max_output_tokens=48, stream=True):
        if event.type == "response.function_call_arguments.delta":
            args += event.delta
        if event.type == "response.output_item.done" and event.item.type == "function_call":
            names.append(event.item.name)
    assert names == ["get_weather"] and args == calls[0].arguments, (names, args)
    # The output goes back as the next input.
    items = [{"role": "user", "content": WEATHER_Q}] + [o.model_dump(exclude_none=True) for o in first.output]
    items.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temperature_c": 22, "sky": "sunny"}'})
    final = create(input=items, tools=[WEATHER], max_output_tokens=32)
    assert final.output_text and not [o for o in final.output if o.type == "function_call"], final.output
    # A forced call.
    forced = create(input="Write one sentence about why the sky is blue.", tools=[WEATHER],
                    tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=48)
    assert [o.name for o in forced.output if o.type == "function_call"] == ["get_weather"], forced.output


@check
def json_schema_format():
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = create(input=cases["json_person"]["messages"][0]["content"], max_output_tokens=48,
               text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}})
    value = json.loads(r.output_text)
    assert isinstance(value["name"], str) and isinstance(value["age"], int), value
    assert r.text.format.type == "json_schema", r.text


@check
def unsupported_fields_are_refused():
    try:
        create(input="x", tools=[{"type": "web_search"}], max_output_tokens=2)
        raise AssertionError("a built-in tool should be refused")
    except openai.BadRequestError as e:
        assert e.body["param"] == "tools[0].type", e.body


@check
def agents_sdk_agent_calls_a_function_tool():
    os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    seen = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(city)
        return "sunny, 22 C"

    model = OpenAIResponsesModel(model=MODEL, openai_client=openai.AsyncOpenAI(base_url=BASE + "/v1", api_key="test-key", max_retries=0))
    agent = Agent(name="weather", instructions="Use the weather tool, then answer in one short sentence.", tools=[get_weather], model=model,
                  model_settings=ModelSettings(temperature=0, max_tokens=128, tool_choice="required"),
                  reset_tool_choice=True)
    result = Runner.run_sync(agent, WEATHER_Q, max_turns=3)
    assert seen and isinstance(seen[0], str), seen
    assert isinstance(result.final_output, str) and result.final_output, result.final_output


report()
