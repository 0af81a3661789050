"""Drives a running `ingot api` with the official openai client (see tests/api.rs).

Usage: python openai_client.py BASE_URL MODEL GREEDY_FIXTURE.json [--remote]
With --remote the server is `ingot api --remote` (replies sampled by another engine), where a
forcing tool_choice is a 400 naming it instead of a forced call.
Each check is greedy and short; the expected texts and token counts come from the shared
reference fixture (llama.cpp's greedy run of the same GGUF), not from ingot itself.
"""

import json
import sys

import openai
from checks import WEATHER, check, report

BASE, MODEL, FIXTURE = sys.argv[1], sys.argv[2], sys.argv[3]
REMOTE = sys.argv[4:] == ["--remote"]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="test-key", max_retries=0, timeout=300)
cases = {item["name"]: item for item in json.load(open(FIXTURE))["items"]}
capital = cases["capital"]


def chat(messages, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, temperature=0, **kw)


def collect_stream(stream):
    """Per choice index: text, finish_reason, tool calls (assembled from deltas); and the usage."""
    choices, usage = {}, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            st = choices.setdefault(c.index, {"text": "", "finish": None, "calls": {}})
            if c.delta.content:
                st["text"] += c.delta.content
            for tc in c.delta.tool_calls or []:
                call = st["calls"].setdefault(tc.index, {"name": "", "arguments": ""})
                if tc.function.name:
                    call["name"] += tc.function.name
                call["arguments"] += tc.function.arguments or ""
            if c.finish_reason:
                assert st["finish"] is None, "one finish_reason per choice"
                st["finish"] = c.finish_reason
    return choices, usage


@check
def models_list():
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL], ids


@check
def chat_matches_reference_and_counts_tokens():
    r = chat(capital["messages"], max_tokens=16)
    c = r.choices[0]
    assert c.message.content == capital["text"], c.message.content
    assert c.finish_reason == "stop", c.finish_reason
    assert r.usage.prompt_tokens == len(capital["prompt_ids"]), r.usage
    # The reference's new_ids end with the end-of-turn token, which is generated (and counted).
    assert r.usage.completion_tokens == len(capital["new_ids"]), r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@check
def multiturn_history():
    case = cases["multiturn_apples"]
    r = chat(case["messages"], max_tokens=16)
    assert r.choices[0].message.content == case["text"], r.choices[0].message.content
    assert r.usage.prompt_tokens == len(case["prompt_ids"]), r.usage


@check
def streaming_equals_non_streaming():
    plain = chat(capital["messages"], max_tokens=16)
    choices, usage = collect_stream(
        chat(capital["messages"], max_tokens=16, stream=True, stream_options={"include_usage": True})
    )
    assert list(choices) == [0], choices
    assert choices[0]["text"] == plain.choices[0].message.content, choices
    assert choices[0]["finish"] == "stop", choices
    assert usage is not None and usage.prompt_tokens == plain.usage.prompt_tokens, usage
    assert usage.completion_tokens == plain.usage.completion_tokens, usage


@check
def n_two_choices():
    r = client.chat.completions.create(
        model=MODEL, messages=capital["messages"], n=2, temperature=0.9, seed=1, max_tokens=8
    )
    assert sorted(c.index for c in r.choices) == [0, 1], r.choices
    assert all(c.message.content for c in r.choices), r.choices
    assert r.usage.prompt_tokens == len(capital["prompt_ids"]), r.usage
    choices, _ = collect_stream(
        client.chat.completions.create(
            model=MODEL, messages=capital["messages"], n=2, temperature=0.9, seed=1, max_tokens=8, stream=True
        )
    )
    assert sorted(choices) == [0, 1], choices
    assert all(st["finish"] in ("stop", "length") and st["text"] for st in choices.values()), choices


@check
def stop_string_ends_the_reply():
    r = chat(capital["messages"], max_tokens=16, stop=["Paris"])
    assert r.choices[0].message.content == capital["text"].split("Paris")[0], r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


@check
def max_tokens_gives_length():
    r = chat(capital["messages"], max_tokens=3)
    assert r.choices[0].finish_reason == "length", r.choices[0]
    assert r.usage.completion_tokens == 3, r.usage
    r = chat(capital["messages"], max_completion_tokens=2)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2, r


@check
def completions_raw_prompt():
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert r.choices[0].text.strip(), r
    assert r.choices[0].finish_reason in ("stop", "length"), r
    assert r.usage.completion_tokens <= 4 and r.usage.prompt_tokens > 0, r.usage
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True
        )
        if c.choices
    )
    assert text == r.choices[0].text, (text, r.choices[0].text)


WEATHER_Q = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


@check
def tool_call_is_parsed():
    r = chat(WEATHER_Q, tools=[WEATHER], max_tokens=48)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather", call
    assert "Paris" in json.loads(call.function.arguments)["city"], call
    choices, _ = collect_stream(chat(WEATHER_Q, tools=[WEATHER], max_tokens=48, stream=True))
    st = choices[0]
    assert st["finish"] == "tool_calls", st
    assert st["calls"][0]["name"] == "get_weather", st
    assert json.loads(st["calls"][0]["arguments"]) == json.loads(call.function.arguments), st


@check
def tool_round_trip():
    first = chat(WEATHER_Q, tools=[WEATHER], max_tokens=48).choices[0].message
    assert first.tool_calls, first
    messages = WEATHER_Q + [
        {
            "role": "assistant",
            "content": first.content,
            "tool_calls": [tc.model_dump() for tc in first.tool_calls],
        },
        {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": '{"temperature_c": 22, "sky": "sunny"}'},
    ]
    final = chat(messages, tools=[WEATHER], max_tokens=32).choices[0]
    assert final.finish_reason in ("stop", "length") and not final.message.tool_calls, final
    assert "22" in final.message.content, final.message.content


SKY_Q = [{"role": "user", "content": "Write one sentence about why the sky is blue."}]


@check
def tool_choice_required_forces_a_call():
    free = chat(SKY_Q, tools=[WEATHER], max_tokens=32).choices[0]
    assert not free.message.tool_calls, free  # the model would not call on its own
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        if REMOTE:
            try:
                chat(SKY_Q, tools=[WEATHER], tool_choice=choice, max_tokens=48)
                raise AssertionError("a forcing tool_choice must be refused on remote engines")
            except openai.BadRequestError as e:
                assert "tool_choice" in str(e), e
            continue
        c = chat(SKY_Q, tools=[WEATHER], tool_choice=choice, max_tokens=48).choices[0]
        assert c.finish_reason == "tool_calls", (choice, c)
        assert c.message.tool_calls[0].function.name == "get_weather", c
        assert isinstance(json.loads(c.message.tool_calls[0].function.arguments)["city"], str), c
    try:
        chat(SKY_Q, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}, max_tokens=8)
        raise AssertionError("an unknown function must be refused")
    except openai.BadRequestError as e:
        assert "tool_choice" in str(e), e


@check
def response_format_json_schema_validates():
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    q = [{"role": "user", "content": "Tell me about Paris."}]
    for stream in (False, True):
        if stream:
            choices, _ = collect_stream(chat(q, response_format=fmt, max_tokens=48, stream=True))
            text, finish = choices[0]["text"], choices[0]["finish"]
        else:
            c = chat(q, response_format=fmt, max_tokens=48).choices[0]
            text, finish = c.message.content, c.finish_reason
        assert finish == "stop", (finish, text)
        value = json.loads(text)
        assert set(value) == {"city", "population"} and isinstance(value["population"], int), value


report()
