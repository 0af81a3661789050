"""Drives `ingot api` serving the tiny Qwen2-Audio fixture with the official openai client (see
tests/video_audio.rs): OpenAI `input_audio` parts and `audio_url` data URLs give transformers'
greedy text; a video part, a corrupt clip, a clip over the server's duration limit and a file
outside --media-dir are refused with an error naming the part; the server keeps serving.

Usage: python audio_client.py BASE_URL MODEL EXPECTED.json
"""

import base64
import json
import sys

import openai
import checks
from checks import check, report

BASE, MODEL, EXPECTED = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="none", max_retries=0, timeout=300)
expected = json.load(open(EXPECTED))
with open(expected["wav"], "rb") as f:
    WAV = f.read()


def ask(part, max_tokens=None):
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "What do you hear?"}]}]
    return client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=max_tokens or expected["max_tokens"]
    )


def input_audio(data):
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}


def refused(part, status, *words):
    checks.refused(lambda: ask(part, max_tokens=2), status, *words)


@check
def input_audio_gives_the_reference_greedy_text():
    r = ask(input_audio(WAV))
    assert r.choices[0].message.content == expected["text"], (r.choices[0].message.content, expected["text"])
    assert r.usage.prompt_tokens == expected["prompt_tokens"], r.usage


@check
def audio_url_data_urls_give_the_same_text():
    url = "data:audio/wav;base64," + base64.b64encode(WAV).decode()
    r = ask({"type": "audio_url", "audio_url": {"url": url}})
    assert r.choices[0].message.content == expected["text"], r.choices[0].message.content


@check
def bad_parts_are_refused_naming_them_and_the_server_keeps_serving():
    refused({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}, 400, "content[0].video_url", "does not take videos")
    refused(input_audio(WAV[: len(WAV) // 3]), 400, "content[0].input_audio")
    refused(input_audio(b"<html>not audio</html>"), 400, "content[0].input_audio", "unsupported audio")
    refused({"type": "audio_url", "audio_url": {"url": expected["outside_path"]}}, 403, "content[0].audio_url")
    long = expected["long_wav"]
    with open(long, "rb") as f:
        refused(input_audio(f.read()), 400, "content[0].input_audio", "limit of 2 s")
    r = ask(input_audio(WAV))
    assert r.choices[0].message.content == expected["text"]


sys.exit(report())
