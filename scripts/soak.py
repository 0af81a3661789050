#!/usr/bin/env python3
"""Soak test of `ingot api` (not part of CI): N clients of mixed kinds for M minutes, in rounds.

Client i plays kind i % 5:
  stream  - a streamed chat request read to its end ([DONE])
  drop    - a streamed chat request dropped after three chunks
  plain   - a plain chat request
  long    - a chat request with a long prompt (about 1,500 tokens)
  bad     - a bad body: not JSON, wrong types, unknown fields, absurd n / stop / max_tokens,
            over the body limit

Well-behaved requests (the first four kinds) must be served or shed (429/503; the client then
waits the Retry-After the server gave, at most 10 s). The soak fails when a well-behaved
request was neither, when a bad body got anything but a 4xx, when any 5xx other than 503
appeared, when the greedy probe (run idle before the first round and after each) changed,
or when the server's RSS after the last round exceeds its RSS after the first by more than
--rss-growth-mb (the first round fills the prefix cache to its budget; a leak keeps growing).

  scripts/soak.py --model ~/.cache/ingot/models/qwen2.5-coder-0.5b-instruct.gguf \\
      --clients 64 --minutes 4 --rounds 2 [-- extra ingot api flags]
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter

PROBE = {"messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
         "temperature": 0, "max_tokens": 24}
KINDS = ["stream", "drop", "plain", "long", "bad"]
LONG_TEXT = " ".join(f"Line {i}: the quick brown fox jumps over the lazy dog." for i in range(120))


def start_server(binary, model, extra):
    cmd = [binary, "api", "--model", model, "--port", "0"] + extra
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("listening on http://"):
            host, port = line.strip().removeprefix("listening on http://").rsplit(":", 1)
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, host, int(port)
    raise SystemExit(f"ingot api did not start (exit {proc.wait()})")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Client:
    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout

    def post(self, path, body, raw=None):
        """Returns (connection, response) with the response's head read."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        data = raw if raw is not None else json.dumps(body).encode()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        return conn, conn.getresponse()

    def get(self, path):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.request("GET", path)
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        return resp.status, text


def probe(client):
    conn, resp = client.post("/v1/chat/completions", PROBE)
    text = resp.read().decode()
    conn.close()
    if resp.status != 200:
        raise SystemExit(f"the probe got {resp.status}: {text}")
    return json.loads(text)["choices"][0]["message"]["content"]


def bad_body(rng, max_body):
    choice = rng.randrange(7)
    msgs = [{"role": "user", "content": "hi"}]
    if choice == 0:
        return None, b"{not json"
    if choice == 1:
        return {"messages": "hello", "temperature": "hot"}, None
    if choice == 2:
        return {"messages": msgs, "frobnicate": 1}, None
    if choice == 3:
        return {"messages": msgs, "n": 1000}, None
    if choice == 4:
        return {"messages": msgs, "stop": [f"s{i}" for i in range(10000)]}, None
    if choice == 5:
        return {"messages": msgs, "max_tokens": 10**9}, None
    return None, json.dumps({"messages": [{"role": "user", "content": "x" * (max_body + 1)}]}).encode()


def one_request(client, kind, rng, max_body):
    """Plays one request of `kind`; returns (outcome, retry_after) with outcome one of
    served, shed, refused (bad bodies' 4xx) or a failure description."""
    if kind == "bad":
        body, raw = bad_body(rng, max_body)
        conn, resp = client.post("/v1/chat/completions", body, raw)
        resp.read()
        conn.close()
        return ("refused" if 400 <= resp.status < 500 and resp.status not in (429,) else f"bad body got {resp.status}"), 0
    content = LONG_TEXT if kind == "long" else f"Say something about the number {rng.randrange(1000)}."
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": rng.choice([8, 16, 32]),
            "temperature": 0.7, "stream": kind in ("stream", "drop")}
    conn, resp = client.post("/v1/chat/completions", body)
    try:
        if resp.status in (429, 503):
            resp.read()
            return "shed", int(resp.getheader("Retry-After") or 1)
        if resp.status != 200:
            return f"{kind} got {resp.status}: {resp.read()[:200]!r}", 0
        if kind == "plain" or kind == "long":
            v = json.loads(resp.read())
            return ("served" if v["choices"][0]["finish_reason"] in ("stop", "length") else f"{kind}: {v}"), 0
        chunks = 0
        while True:
            line = resp.readline()
            if not line:
                return f"{kind}: the stream ended without [DONE]", 0
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                return "served", 0
            if '"error"' in data:
                return f"{kind}: error event {data[:200]}", 0
            chunks += 1
            if kind == "drop" and chunks == 3:
                return "served", 0
    finally:
        conn.close()


def client_loop(client, kind, seed, until, max_body, tally, failures, lock):
    rng = random.Random(seed)
    while time.time() < until:
        try:
            outcome, retry = one_request(client, kind, rng, max_body)
        except Exception as e:  # a reset, a timeout: a failure, whatever its kind
            outcome, retry = f"{kind}: {type(e).__name__}: {e}", 0
        with lock:
            if outcome in ("served", "shed", "refused"):
                tally[(kind, outcome)] += 1
            else:
                tally[(kind, "failed")] += 1
                failures.append(outcome)
        if retry:
            time.sleep(min(retry, 10))


def metric_lines(client, prefix):
    _, text = client.get("/metrics")
    return [l for l in text.splitlines() if l.startswith(prefix)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "ingot"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rss-growth-mb", type=float, default=64)
    ap.add_argument("--max-body-bytes", type=int, default=1 << 20, help="the server's body limit (bad bodies go over it)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a client waits for an answer")
    ap.add_argument("extra", nargs="*", help="more `ingot api` flags (after --)")
    args = ap.parse_args()

    proc, host, port = start_server(args.binary, args.model, ["--max-body-bytes", str(args.max_body_bytes)] + args.extra)
    client = Client(host, port, args.timeout)
    failed = []
    try:
        before = probe(client)
        print(f"probe: {before!r}; RSS at start {rss_mib(proc.pid):.0f} MiB", flush=True)
        rss = []
        for r in range(1, args.rounds + 1):
            tally, failures, lock = Counter(), [], threading.Lock()
            until = time.time() + args.minutes * 60
            threads = [threading.Thread(target=client_loop, args=(client, KINDS[i % len(KINDS)], r * 100000 + i, until,
                                                                   args.max_body_bytes, tally, failures, lock))
                       for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # Let dropped streams' sequences end before measuring.
            time.sleep(5)
            rss.append(rss_mib(proc.pid))
            after = probe(client)
            served = sum(v for (k, o), v in tally.items() if o == "served")
            shed = sum(v for (k, o), v in tally.items() if o == "shed")
            refused = sum(v for (k, o), v in tally.items() if o == "refused")
            nfail = sum(v for (k, o), v in tally.items() if o == "failed")
            print(f"round {r}: served {served}, shed {shed}, bad bodies refused {refused}, failed {nfail}; "
                  f"RSS {rss[-1]:.0f} MiB; probe {'same' if after == before else 'CHANGED: ' + repr(after)}", flush=True)
            for kind in KINDS:
                print("  " + kind + ": " + ", ".join(f"{o} {tally[(kind, o)]}" for o in ("served", "shed", "refused", "failed")
                                                  if tally[(kind, o)]), flush=True)
            for f in sorted(set(failures))[:10]:
                print(f"  failure: {f}", flush=True)
            if nfail:
                failed.append(f"round {r}: {nfail} requests failed")
            if after != before:
                failed.append(f"round {r}: the greedy probe changed")
        for line in metric_lines(client, "ingot_requests_shed_total") + metric_lines(client, "ingot_queue_time_seconds_count") \
                + metric_lines(client, "ingot_queue_time_seconds_sum") + metric_lines(client, "ingot_requests_total"):
            print("  " + line)
        if len(rss) >= 2 and rss[-1] - rss[0] > args.rss_growth_mb:
            failed.append(f"RSS grew {rss[-1] - rss[0]:.0f} MiB after round 1 (bound {args.rss_growth_mb} MiB)")
        five = [l for l in metric_lines(client, "ingot_requests_total") if 'status="5' in l and 'status="503"' not in l]
        if five:
            failed.append(f"5xx answers: {five}")
    finally:
        proc.terminate()
        proc.wait()
    if failed:
        print("SOAK FAILED: " + "; ".join(failed))
        sys.exit(1)
    print("soak passed")


if __name__ == "__main__":
    main()
