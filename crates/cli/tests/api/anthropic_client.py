"""Drives a running `ingot api`'s Messages API with the official anthropic client (see
tests/api.rs).

Usage: python anthropic_client.py BASE_URL MODEL GREEDY_FIXTURE.json
Greedy and short; the expected texts come from the shared reference fixture (llama.cpp's
greedy run of the same GGUF).
"""

import base64

import anthropic
from checks import WEATHER_FUNCTION, check, command_line, report

BASE, MODEL, cases = command_line()
client = anthropic.Anthropic(base_url=BASE, api_key="test-key", max_retries=0, timeout=300)
capital = cases["capital"]
WEATHER = {"name": "get_weather", "description": WEATHER_FUNCTION["description"], "input_schema": WEATHER_FUNCTION["parameters"]}
WEATHER_Q = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


# This SDK has no sampling arguments; greedy decoding goes in the body as a local server's
# extra field.
GREEDY = {"temperature": 0}


def create(**kw):
    return client.messages.create(model=MODEL, extra_body=GREEDY, **kw)


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


@check
def plain_text_matches_reference():
    m = create(messages=capital["messages"], max_tokens=16)
    assert text_of(m) == capital["text"], m
    assert m.stop_reason == "end_turn" and m.role == "assistant" and m.id.startswith("msg_"), m
    u = m.usage
    assert u.input_tokens + u.cache_read_input_tokens == len(capital["prompt_ids"]), u
    assert u.output_tokens == len(capital["new_ids"]), u
    cut = create(messages=capital["messages"], max_tokens=3)
    assert cut.stop_reason == "max_tokens" and capital["text"].startswith(text_of(cut)), cut
    n = client.messages.count_tokens(model=MODEL, messages=capital["messages"])
    assert n.input_tokens == len(capital["prompt_ids"]), n
    # The system prompt, as a string or as blocks, renders as the reference's system message.
    pirate = cases["pirate_system"]
    texts = []
    for system in (pirate["messages"][0]["content"], [{"type": "text", "text": pirate["messages"][0]["content"]}]):
        n = client.messages.count_tokens(model=MODEL, system=system, messages=pirate["messages"][1:])
        assert n.input_tokens == len(pirate["prompt_ids"]), n
        texts.append(text_of(create(system=system, messages=pirate["messages"][1:], max_tokens=8)))
    assert texts[0] == texts[1] and texts[0], texts


@check
def streaming_equals_non_streaming():
    plain = create(messages=capital["messages"], max_tokens=16)
    kinds = []
    with client.messages.stream(model=MODEL, extra_body=GREEDY, messages=capital["messages"], max_tokens=16) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    assert text_of(final) == text_of(plain), final
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == plain.usage.output_tokens, final
    assert kinds[0] == "message_start" and "content_block_start" in kinds and "content_block_stop" in kinds, kinds
    assert kinds[-1] == "message_stop" and "message_delta" in kinds, kinds


@check
def tool_use_round_trip():
    first = create(messages=WEATHER_Q, tools=[WEATHER], max_tokens=48)
    uses = [b for b in first.content if b.type == "tool_use"]
    assert first.stop_reason == "tool_use" and uses and uses[0].name == "get_weather", first
    assert isinstance(uses[0].input["city"], str), uses[0]
    with client.messages.stream(model=MODEL, extra_body=GREEDY, messages=WEATHER_Q, tools=[WEATHER], max_tokens=48) as stream:
        streamed = stream.get_final_message()
    s_uses = [b for b in streamed.content if b.type == "tool_use"]
    assert [b.input for b in s_uses] == [uses[0].input] and streamed.stop_reason == "tool_use", streamed
    messages = WEATHER_Q + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": '{"temperature_c": 22, "sky": "sunny"}'}]},
    ]
    final = create(messages=messages, tools=[WEATHER], max_tokens=32)
    assert final.stop_reason in ("end_turn", "max_tokens") and text_of(final), final
    forced = create(messages=[{"role": "user", "content": "Write one sentence about why the sky is blue."}], tools=[WEATHER],
                    tool_choice={"type": "tool", "name": "get_weather"}, max_tokens=48)
    assert [b.name for b in forced.content if b.type == "tool_use"] == ["get_weather"], forced


@check
def image_to_a_text_model_is_refused_in_anthropics_shape():
    png = base64.b64encode(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6300010000050001a5f645400000000049454e44ae426082")).decode()
    try:
        create(max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
            {"type": "text", "text": "What is this?"}]}])
        raise AssertionError("an image to a text model should be refused")
    except anthropic.BadRequestError as e:
        assert e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", e.body
        assert "messages[0].content[0].source" in e.body["error"]["message"], e.body


@check
def wrong_key_is_refused():
    bad = anthropic.Anthropic(base_url=BASE, api_key="wrong", max_retries=0)
    try:
        bad.messages.create(model=MODEL, max_tokens=2, messages=capital["messages"])
        raise AssertionError("a wrong key should be refused")
    except anthropic.AuthenticationError as e:
        assert e.body["error"]["type"] == "authentication_error", e.body


report()
