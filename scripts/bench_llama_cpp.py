#!/usr/bin/env python3
"""llama.cpp side of `ingot bench --compare-llama-cpp`.

Usage: <bench-venv python> scripts/bench_llama_cpp.py REQUEST.json

REQUEST.json (written by ingot):
    {"model": PATH, "threads": N, "n_ctx": 2048, "prefill_ids": [...], "decode_prompt_ids": [...],
     "decode_tokens": 128, "ttft_ids": [...], "repeats": R, "concurrency": N (optional)}
Prints ONE JSON object on stdout:
    {"prefill_tok_s": f, "decode_tok_s": f, "ttft_s": f, "peak_rss_mb": f, "llama_cpp_version": str,
     "concurrent": {"streams": N, "aggregate_decode_tok_s": f} (only with "concurrency")}
On any error: one line on stderr and exit code 1 (stdout stays empty).

The measurement runs in a child process. If llama.cpp's default build crashes there (seen with
native builds on AMX-capable Xeons: a segfault in ggml_backend_amx_mul_mat, llama.cpp issue
#20824), the run is repeated once with llama.cpp's extra weight buffer types (AMX, repacking)
switched off, and a warning saying so goes to stderr.

Methodology (ingot measures itself the same way, so the numbers are comparable):
- one model load with n_batch 512, then one warm-up eval of prefill_ids (pages the weights in);
- every measurement starts from a fresh context (position 0, empty KV cache);
- prefill: time of eval(prefill_ids); tok/s = len / time;
- decode: eval(decode_prompt_ids) untimed, then decode_tokens greedy steps, each = argmax of the
  last logits + eval([token]), no EOS stop; tok/s = decode_tokens / time of the steps;
- ttft: time of eval(ttft_ids) + argmax of the first token;
- each is the best of `repeats` runs; peak RSS is the process's ru_maxrss.
- concurrency N (llama.cpp's batched decoding, as llama-batched-bench runs it): a context with N
  sequences; one llama_decode of all N prompts (decode_prompt_ids each), then decode_tokens steps
  that each decode one greedy token of every sequence in one batch; aggregate tok/s =
  N * decode_tokens / wall time of the whole (prompts included), as ingot's concurrent figure.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import time

# Child-process flag: `--extra-bufts on|off` (llama_model_params.use_extra_bufts).
EXTRA_BUFTS_FLAG = "--extra-bufts"


class BenchError(Exception):
    """A problem with the request or the environment, reported as one line on stderr."""


def load_request(path):
    try:
        with open(path, encoding="utf-8") as f:
            req = json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f"cannot read request {path}: {e}") from e
    if not isinstance(req, dict):
        raise BenchError(f"request {path} must be a JSON object")

    def field(name, kind):
        value = req.get(name)
        # bool is a subclass of int: reject it explicitly.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise BenchError(f"request field {name!r} is missing or not of type {kind.__name__}")
        return value

    def ids(name):
        value = field(name, list)
        if not value or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            raise BenchError(f"request field {name!r} must be a non-empty list of token ids")
        return value

    r = {
        "model": field("model", str),
        "threads": field("threads", int),
        "n_ctx": field("n_ctx", int),
        "prefill_ids": ids("prefill_ids"),
        "decode_prompt_ids": ids("decode_prompt_ids"),
        "decode_tokens": field("decode_tokens", int),
        "ttft_ids": ids("ttft_ids"),
        "repeats": field("repeats", int),
        "concurrency": req.get("concurrency", 0),
    }
    if not isinstance(r["concurrency"], int) or isinstance(r["concurrency"], bool) or r["concurrency"] < 0:
        raise BenchError("request field 'concurrency' must be a non-negative integer")
    for name in ("threads", "n_ctx", "decode_tokens", "repeats"):
        if r[name] < 1:
            raise BenchError(f"request field {name!r} must be >= 1, got {r[name]}")
    longest = max(
        len(r["prefill_ids"]),
        len(r["decode_prompt_ids"]) + r["decode_tokens"],
        len(r["ttft_ids"]),
    )
    if longest > r["n_ctx"]:
        raise BenchError(f"a run needs {longest} positions but n_ctx is {r['n_ctx']}")
    return r


def run(req, extra_bufts):
    if not os.path.isfile(req["model"]):
        raise BenchError(f"model file not found: {req['model']}")
    try:
        import llama_cpp
        import numpy as np
    except ImportError as e:
        raise BenchError(f"cannot import llama_cpp ({e}); run scripts/install-llama-cpp.sh") from e

    if not extra_bufts:
        # Llama() exposes no argument for this: wrap the defaults it starts from.
        lib = llama_cpp.llama_cpp
        default_params = lib.llama_model_default_params

        def params_without_extra_bufts():
            params = default_params()
            params.use_extra_bufts = False
            return params

        lib.llama_model_default_params = params_without_extra_bufts

    try:
        llm = llama_cpp.Llama(
            model_path=req["model"],
            n_ctx=req["n_ctx"],
            n_threads=req["threads"],
            n_threads_batch=req["threads"],
            n_batch=512,
            verbose=False,
            logits_all=False,
        )
    except Exception as e:  # llama_cpp raises ValueError/RuntimeError with varying messages
        raise BenchError(f"llama.cpp cannot load {req['model']}: {e}") from e

    n_vocab = llm.n_vocab()
    for name in ("prefill_ids", "decode_prompt_ids", "ttft_ids"):
        bad = [t for t in req[name] if not 0 <= t < n_vocab]
        if bad:
            raise BenchError(f"{name} holds ids outside the vocabulary [0, {n_vocab}): {bad[:5]}")

    def fresh():
        llm.reset()  # position 0 (only clears memory itself for recurrent models)
        llm._ctx.kv_cache_clear()

    def next_token():
        # With logits_all=False, 0.3.x no longer copies logits into llm.scores: read the last
        # output row straight from the context (a view, no copy).
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
        return int(np.argmax(logits))  # ties -> lowest id, like ingot's greedy

    def best_of(measure):
        return min(measure() for _ in range(req["repeats"]))

    def prefill():
        fresh()
        t0 = time.perf_counter()
        llm.eval(req["prefill_ids"])
        return time.perf_counter() - t0

    def decode():
        fresh()
        llm.eval(req["decode_prompt_ids"])
        t0 = time.perf_counter()
        for _ in range(req["decode_tokens"]):
            llm.eval([next_token()])
        return time.perf_counter() - t0

    def ttft():
        fresh()
        t0 = time.perf_counter()
        llm.eval(req["ttft_ids"])
        next_token()
        return time.perf_counter() - t0

    fresh()
    llm.eval(req["prefill_ids"])  # warm-up

    prefill_s = best_of(prefill)
    decode_s = best_of(decode)
    ttft_s = best_of(ttft)
    concurrent = None
    if req["concurrency"]:
        n = req["concurrency"]
        seconds = best_of(lambda: batched(llm, req, n_vocab, np))
        concurrent = {"streams": n, "aggregate_decode_tok_s": n * req["decode_tokens"] / seconds}
    result = {
        "prefill_tok_s": len(req["prefill_ids"]) / prefill_s,
        "decode_tok_s": req["decode_tokens"] / decode_s,
        "ttft_s": ttft_s,
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "llama_cpp_version": llama_cpp.__version__,
    }
    if concurrent:
        result["concurrent"] = concurrent
    return result


def batched(llm, req, n_vocab, np):
    """Seconds for N sequences: all prompts in one batch, then decode_tokens batched steps."""
    import llama_cpp

    n = req["concurrency"]
    prompt = req["decode_prompt_ids"]
    per_seq = len(prompt) + req["decode_tokens"]
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n * per_seq + 64
    params.n_batch = max(512, n * len(prompt))
    params.n_ubatch = 512
    params.n_seq_max = n
    params.n_threads = params.n_threads_batch = req["threads"]
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise BenchError(f"llama.cpp cannot create a context for {n} sequences")
    batch = llama_cpp.llama_batch_init(max(n * len(prompt), n), 0, n)
    try:

        def submit(entries):
            # entries: (token, position, sequence, wants logits)
            batch.n_tokens = len(entries)
            for i, (tok, pos, seq, out) in enumerate(entries):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = out
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise BenchError("llama_decode failed in the batched run")

        def argmax(i):
            return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,))))

        t0 = time.perf_counter()
        submit([(t, p, s, p == len(prompt) - 1) for s in range(n) for p, t in enumerate(prompt)])
        last = [argmax((s + 1) * len(prompt) - 1) for s in range(n)]
        for step in range(req["decode_tokens"] - 1):
            submit([(last[s], len(prompt) + step, s, True) for s in range(n)])
            last = [argmax(s) for s in range(n)]
        return time.perf_counter() - t0
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)


def error(message):
    print("bench_llama_cpp: error: " + " ".join(message.split()), file=sys.stderr)
    return 1


def child(request_path, extra_bufts):
    """Runs the benchmark in this process; prints the JSON result."""
    try:
        result = run(load_request(request_path), extra_bufts)
    except BenchError as e:
        return error(str(e))
    except Exception as e:  # llama.cpp failing mid-run, e.g. a decode error
        return error(f"{type(e).__name__}: {e}")
    print(json.dumps(result))
    return 0


def parent(request_path):
    """Runs the benchmark in a child; retries without extra buffer types if llama.cpp crashes."""
    for extra_bufts in ("on", "off"):
        cmd = [sys.executable, os.path.abspath(__file__), request_path, EXTRA_BUFTS_FLAG, extra_bufts]
        # The child's stderr (its one-line errors) passes straight through.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if proc.returncode >= 0:
            sys.stdout.write(proc.stdout)
            return proc.returncode
        number = -proc.returncode
        crash = signal.Signals(number).name if number in signal.valid_signals() else f"signal {number}"
        if extra_bufts == "on":
            print(
                f"bench_llama_cpp: warning: llama.cpp crashed ({crash}) with its default extra "
                "buffer types (AMX, llama.cpp issue #20824); measuring again without them",
                file=sys.stderr,
            )
    return error(f"llama.cpp crashed ({crash}) even without extra buffer types")


def main(argv):
    if len(argv) == 2:
        return parent(argv[1])
    if len(argv) == 4 and argv[2] == EXTRA_BUFTS_FLAG and argv[3] in ("on", "off"):
        return child(argv[1], argv[3] == "on")
    print("usage: bench_llama_cpp.py REQUEST.json", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
