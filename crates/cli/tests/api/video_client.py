"""Drives `ingot api` serving the tiny Qwen2-VL fixture with the official openai client (see
tests/video_audio.rs): `video_url` data URLs holding an MP4 (H.264) and a WebM (VP9) made from
the fixture frames give transformers' greedy text; a truncated MP4, bytes that are not a video,
an unsupported codec and a video with no frames are refused with a 400 naming the part and the
problem; the server keeps serving. A second server started with `--video-fps 1` keeps half the
frames of the 4 s clip.

Usage: python video_client.py BASE_URL MODEL EXPECTED.json
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


def read(key):
    with open(expected[key], "rb") as f:
        return f.read()


def video_url(data, mime="video/mp4"):
    return {"type": "video_url", "video_url": {"url": f"data:{mime};base64," + base64.b64encode(data).decode()}}


def ask(part, max_tokens=None):
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "Describe this video."}]}]
    return client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, max_tokens=max_tokens or expected["max_tokens"]
    )


def refused(part, *words):
    checks.refused(lambda: ask(part, max_tokens=2), 400, *words)


@check
def an_mp4_data_url_gives_the_reference_greedy_text():
    r = ask(video_url(read("mp4")))
    assert r.choices[0].message.content == expected["text"], (r.choices[0].message.content, expected["text"])
    assert r.usage.prompt_tokens == expected["prompt_tokens"], r.usage


@check
def a_webm_data_url_gives_the_same_text():
    r = ask(video_url(read("webm"), "video/webm"))
    assert r.choices[0].message.content == expected["text"], (r.choices[0].message.content, expected["text"])


@check
def the_servers_video_fps_picks_the_frames():
    slow = openai.OpenAI(base_url=expected["base_1fps"] + "/v1", api_key="none", max_retries=0, timeout=300)
    messages = [{"role": "user", "content": [video_url(read("mp4")), {"type": "text", "text": "Describe this video."}]}]
    r = slow.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=1)
    assert r.usage.prompt_tokens == expected["prompt_tokens_1fps"], r.usage


@check
def bad_videos_are_refused_naming_them_and_the_server_keeps_serving():
    mp4 = read("mp4")
    refused(video_url(mp4[: len(mp4) // 2]), "content[0].video_url", "corrupt or truncated video data")
    refused(video_url(read("png")), "content[0].video_url", "not a readable video container")
    refused(video_url(read("mjpeg"), "video/x-matroska"), "content[0].video_url", "unsupported video (codec mjpeg)")
    refused(video_url(read("empty_webm"), "video/webm"), "content[0].video_url", "the video has no frames")
    r = ask(video_url(mp4))
    assert r.choices[0].message.content == expected["text"]


sys.exit(report())
