#!/usr/bin/env python3
"""Stands in for `llama-server` under llama.cpp's server test suite (its tools/server/tests
start whatever LLAMA_SERVER_BIN_PATH names, with llama-server's flags).

Both targets serve the same local GGUF ($SUITE_MODEL) instead of the suite's Hugging Face
downloads (no network to Hugging Face here), so the two pass counts compare one model:
  SUITE_TARGET=llama  runs the real llama-server ($SUITE_LLAMA_SERVER) with the suite's flags,
                      the model flags replaced;
  SUITE_TARGET=ingot  runs `$SUITE_INGOT api` with the flags that have an ingot equivalent
                      (the rest are dropped: the tests relying on them fail, which is the point).
Used by scripts/llama-server-suite.sh; not a general llama-server emulation."""
import os
import sys

# llama-server flags that name the model to load: replaced by $SUITE_MODEL.
MODEL_FLAGS = {"--hf-repo", "--hf-file", "--model", "-m", "--model-url", "-hf", "-hff", "-mu"}
# llama-server flag -> ingot api flag, for flags taking a value.
INGOT_VALUE_FLAGS = {
    "--port": "--port", "--host": "--host", "--temp": "--temperature", "--seed": "--seed",
    "--ctx-size": "--ctx-size", "-c": "--ctx-size", "--n-predict": "--max-new-tokens",
    "--api-key": "--api-key", "--alias": "--model-name", "--parallel": "--max-seqs",
    "-np": "--max-seqs", "--threads": "--threads", "-t": "--threads",
    "--chat-template-file": "--chat-template",
}
# llama-server flags taking no value (everything else is taken to carry one).
BOOL_FLAGS = {
    "--offline", "--cont-batching", "--embedding", "--reranking", "--metrics", "--kv-unified",
    "--swa-full", "--slots", "--no-slots", "--verbose", "--context-shift", "--no-ui",
    "--no-models-autoload", "--jinja", "--no-jinja", "--no-mmproj", "--no-cache-idle-slots",
    "--ui-mcp-proxy", "--backend_sampling",
}


def pairs(args):
    """The argument list as (flag, value-or-None) pairs."""
    i = 0
    while i < len(args):
        flag = args[i]
        if flag in BOOL_FLAGS or i + 1 == len(args) or args[i + 1].startswith("--"):
            yield flag, None
            i += 1
        else:
            yield flag, args[i + 1]
            i += 2


def llama_args(args, model):
    out = [os.environ["SUITE_LLAMA_SERVER"], "--model", model]
    for flag, value in pairs(args):
        if flag in MODEL_FLAGS or flag == "--offline":
            continue
        out.append(flag)
        if value is not None:
            out.append(value)
    return out


def ingot_args(args, model):
    out = [os.environ["SUITE_INGOT"], "api", "--model", model, "--max-queue-wait", "0"]
    for flag, value in pairs(args):
        if flag == "--cors-origins" and value:
            for origin in value.split(","):
                out += ["--cors-origin", origin]
        elif flag in INGOT_VALUE_FLAGS and value is not None:
            out += [INGOT_VALUE_FLAGS[flag], value]
    return out


def main():
    model = os.environ["SUITE_MODEL"]
    target = os.environ.get("SUITE_TARGET", "ingot")
    argv = (llama_args if target == "llama" else ingot_args)(sys.argv[1:], model)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
