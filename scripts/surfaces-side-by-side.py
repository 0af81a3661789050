#!/usr/bin/env python3
"""The API-surface scenarios of issue 20 run against llama.cpp's llama-server and `ingot api`
on the same GGUF, side by side: the openai SDK's Responses calls, the anthropic SDK's
Messages calls, /tokenize -> /detokenize round trips, token-id prompts, the routes without
/v1, and the llama.cpp extensions (grammar, prefill, stop word). Prints one table row per
scenario: ok, or the first line of what failed. Out of CI.

Usage: .test-venv/bin/python scripts/surfaces-side-by-side.py [--model GGUF] [--llama-server BIN] [--ingot BIN]
Defaults: the Qwen2.5 Coder 0.5B GGUF in ~/.cache/ingot/models, the binary
scripts/install-llama-server.sh prints, target/release/ingot. Greedy and short throughout.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import requests

REPO = Path(__file__).resolve().parent.parent
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
TEXTS = ["Hello, world!", "def add(a, b):\n    return a + b\n", "Ünïcödé ✓ 日本語", "<|im_start|>user\nhi<|im_end|>"]


def start(argv, port):
    log = open(f"/tmp/side-by-side-{port}.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            sys.exit(f"{argv[0]} exited at start; see {log.name}")
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"{argv[0]} did not answer /health; see {log.name}")


def post(base, path, body):
    r = requests.post(base + path, json=body, timeout=300)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:200]}"
    return r.json()


def scenarios(base):
    oai = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=300)
    ant = anthropic.Anthropic(base_url=base, api_key="x", max_retries=0, timeout=300)
    greedy = {"temperature": 0}

    def responses_plain():
        r = oai.responses.create(model="m", input="What is the capital of France?", max_output_tokens=16, temperature=0)
        assert "Paris" in r.output_text, r.output_text

    def responses_stream():
        kinds = [e.type for e in oai.responses.create(model="m", input=QUESTION, max_output_tokens=16, temperature=0, stream=True)]
        assert kinds[0] == "response.created" and "response.output_text.delta" in kinds and kinds[-1] == "response.completed", kinds

    def anthropic_plain():
        m = ant.messages.create(model="m", messages=QUESTION, max_tokens=16, extra_body=greedy)
        assert "Paris" in m.content[0].text and m.stop_reason in ("end_turn", "max_tokens"), m

    def anthropic_stream():
        with ant.messages.stream(model="m", messages=QUESTION, max_tokens=16, extra_body=greedy) as s:
            text = "".join(s.text_stream)
        assert "Paris" in text, text

    def anthropic_count_tokens():
        n = ant.messages.count_tokens(model="m", messages=QUESTION).input_tokens
        assert n > 5, n

    def tokenize_round_trip():
        for text in TEXTS:
            ids = post(base, "/tokenize", {"content": text})["tokens"]
            back = post(base, "/detokenize", {"tokens": ids})["content"]
            assert back == text, (text, back)

    def token_id_prompt():
        prompt = "def fibonacci(n):"
        ids = post(base, "/tokenize", {"content": prompt})["tokens"]
        by = [post(base, "/v1/completions", {"prompt": p, "max_tokens": 12, "temperature": 0})["choices"][0]["text"] for p in (prompt, ids)]
        assert by[0] == by[1] and by[0], by

    def unprefixed_routes():
        body = {"messages": QUESTION, "max_tokens": 12, "temperature": 0}
        a, b = (post(base, p, body)["choices"][0]["message"]["content"] for p in ("/v1/chat/completions", "/chat/completions"))
        assert a == b, (a, b)
        assert requests.get(base + "/models", timeout=30).status_code == 200

    def grammar():
        v = post(base, "/completion", {"prompt": "Is Paris in France? Answer:", "n_predict": 8, "temperature": 0, "grammar": 'root ::= " " ("yes" | "no")'})
        assert v["content"] in (" yes", " no"), v["content"]

    def prefill():
        turns = QUESTION + [{"role": "assistant", "content": "The capital of France is"}]
        text = post(base, "/v1/chat/completions", {"messages": turns, "max_tokens": 6, "temperature": 0})["choices"][0]["message"]["content"]
        assert "Paris" in text and "capital" not in text, text

    def stop_word():
        v = post(base, "/completion", {"prompt": "1, 2, 3, 4,", "n_predict": 16, "temperature": 0, "stop": [" 7"]})
        assert v["stop_type"] == "word" and v["stopping_word"] == " 7", {k: v[k] for k in ("content", "stop_type", "stopping_word")}

    return [(f.__name__, f) for f in (responses_plain, responses_stream, anthropic_plain, anthropic_stream, anthropic_count_tokens,
                                      tokenize_round_trip, token_id_prompt, unprefixed_routes, grammar, prefill, stop_word)]


def run_all(base):
    results = {}
    for name, f in scenarios(base):
        try:
            f()
            results[name] = "ok"
        except Exception as e:  # a failed scenario is a table cell, not the end of the run
            results[name] = ("FAIL: " + (str(e).splitlines() or [type(e).__name__])[0])[:70]
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(Path.home() / ".cache/ingot/models/qwen2.5-coder-0.5b-instruct.gguf"))
    p.add_argument("--llama-server")
    p.add_argument("--ingot", default=str(REPO / "target/release/ingot"))
    args = p.parse_args()
    llama = args.llama_server or subprocess.run([str(REPO / "scripts/install-llama-server.sh")], check=True,
                                                capture_output=True, text=True).stdout.strip()
    servers = {
        "llama-server": [llama, "--model", args.model, "--port", "28380", "--ctx-size", "4096", "--jinja"],
        "ingot": [args.ingot, "api", "--model", args.model, "--port", "28381"],
    }
    table = {}
    for name, argv in servers.items():
        port = argv[argv.index("--port") + 1]
        proc = start(argv, port)
        try:
            table[name] = run_all(f"http://127.0.0.1:{port}")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    rows = list(next(iter(table.values())))
    print(f"{'scenario':24} | {'llama-server':72} | ingot")
    for row in rows:
        print(f"{row:24} | {table['llama-server'][row]:72} | {table['ingot'][row]}")


if __name__ == "__main__":
    main()
