"""Drives `ingot api` serving the tiny Qwen2-VL fixture with the official openai client (see
tests/vision.rs).

Usage: python vision_client.py BASE_URL MODEL EXPECTED.json
EXPECTED.json holds, per fixture case, the image file, the messages, the reference prompt
token count and the text of transformers' greedy tokens; plus paths for the refusal checks.
"""

import base64
import json
import struct
import sys
import urllib.request
import zlib

import openai
from checks import check, report

BASE, MODEL, EXPECTED = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="none", max_retries=0, timeout=300)
expected = json.load(open(EXPECTED))


def data_url(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def openai_messages(case, url):
    """The fixture's messages with its `{"type": "image"}` part as an OpenAI image_url part."""
    out = []
    for m in case["messages"]:
        content = m["content"]
        if isinstance(content, list):
            content = [
                {"type": "image_url", "image_url": {"url": url}} if p["type"] == "image" else p for p in content
            ]
        out.append({"role": m["role"], "content": content})
    return out


def chat(messages, **kw):
    return client.chat.completions.create(model=MODEL, messages=messages, temperature=0, **kw)


@check
def data_url_images_give_the_reference_greedy_tokens():
    for case in expected["cases"]:
        r = chat(openai_messages(case, data_url(case["image_path"])), max_tokens=case["max_tokens"])
        c = r.choices[0]
        assert c.message.content == case["text"], (case["name"], c.message.content, case["text"])
        assert r.usage.prompt_tokens == case["prompt_tokens"], (case["name"], r.usage)
        assert c.finish_reason == "length", c.finish_reason


@check
def apply_template_shows_the_expanded_image_tokens():
    for case in expected["cases"]:
        body = json.dumps({"model": MODEL, "messages": openai_messages(case, data_url(case["image_path"]))}).encode()
        req = urllib.request.Request(BASE + "/apply-template", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            answer = json.load(r)
        assert answer["prompt_ids"] == case["input_ids"], (case["name"], answer)
        # The template renders the image part itself, as transformers does; the ids expand it.
        assert "<|vision_start|><|image_pad|><|vision_end|>" in answer["prompt"], answer["prompt"]


@check
def streamed_image_reply_equals_the_reference():
    case = expected["cases"][0]
    stream = chat(openai_messages(case, data_url(case["image_path"])), max_tokens=case["max_tokens"], stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == case["text"], text


@check
def a_file_inside_the_media_dir_is_read():
    case = expected["cases"][0]
    r = chat(openai_messages(case, case["image_path"]), max_tokens=case["max_tokens"])
    assert r.choices[0].message.content == case["text"], r.choices[0].message.content


def refused(url, status, words):
    case = expected["cases"][0]
    try:
        chat(openai_messages(case, url), max_tokens=2)
    except openai.APIStatusError as e:
        assert e.status_code == status, (e.status_code, e.message)
        for w in words:
            assert w in e.message, (w, e.message)
        return
    raise AssertionError(f"{url} was accepted")


@check
def a_local_path_outside_the_media_dir_is_forbidden():
    refused(expected["outside_path"], 403, ["outside the media directory"])


@check
def a_remote_url_without_the_flag_is_forbidden():
    refused("http://example.com/cat.png", 403, ["--allow-remote-media"])


@check
def an_image_count_that_does_not_match_the_placeholders_is_a_bad_request():
    case = expected["cases"][0]
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<image> and <image>?"},
                {"type": "image_url", "image_url": {"url": data_url(case["image_path"])}},
            ],
        }
    ]
    try:
        chat(messages, max_tokens=2)
    except openai.BadRequestError as e:
        assert "placeholder" in e.message, e.message
        return
    raise AssertionError("accepted")


def png_claiming(width, height):
    """A PNG whose header claims width x height, with a token of pixel data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


@check
def oversized_images_are_refused_with_the_limit():
    case = expected["cases"][0]
    # The server runs with --max-media-mb 1: a 1.5 MB payload is over it.
    big = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(1_500_000)).decode()
    refused(big, 413, ["limit"])
    # Within the byte limit, but 100000 x 100000 pixels: refused before decoding.
    huge = "data:image/png;base64," + base64.b64encode(png_claiming(100_000, 100_000)).decode()
    try:
        chat(openai_messages(case, huge), max_tokens=2)
    except openai.BadRequestError as e:
        assert "100000x100000" in e.message, e.message
        return
    raise AssertionError("a 10-gigapixel image was accepted")


@check
def corrupt_and_unsupported_images_are_bad_requests():
    case = expected["cases"][0]
    for url, words in [
        ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nnot really").decode(), ["image"]),
        ("data:image/bmp;base64," + base64.b64encode(b"BM" + bytes(60)).decode(), ["image"]),
    ]:
        try:
            chat(openai_messages(case, url), max_tokens=2)
        except openai.BadRequestError as e:
            assert all(w in e.message for w in words), e.message
            continue
        raise AssertionError(f"{url[:40]} accepted")
    # The server keeps serving.
    assert chat(openai_messages(case, data_url(case["image_path"])), max_tokens=2).choices[0].message.content


report()
