#!/usr/bin/env bash
# Installs what the API server's end-to-end tests drive it with, beside the repository:
#   .test-venv/    Python venv with the official `openai` and `anthropic` clients, and the client
#                  libraries tests/clients.rs drives the server with (langchain-openai,
#                  openai-agents, pydantic-ai-slim[openai], litellm: ~375 MB, ~2 min to install)
#   .test-node/    playwright-core (no browser download: it drives Debian's chromium)
#   .router-venv/  sglang-router (SGLang's Rust router, a wheel with its binary), which the
#                  replica tests put in front of two `ingot api` processes
#   .vllm-router-venv/  vllm-router (vLLM's Rust router, likewise; no GPU stack: fastapi,
#                  uvicorn, aiohttp, orjson, requests, setproctitle; ~130 MB), the same tests' other router
#   /usr/bin/chromium  Debian's package (apt-get; needs root, as on CI)
#   ffmpeg, ffprobe    Debian's `ffmpeg` package: ingot decodes video files with them, and the
#                      video tests make their MP4/WebM files with them
# Idempotent: each part is skipped when already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .test-venv/bin/python ] || ! .test-venv/bin/python -c 'import openai, agents, anthropic' 2>/dev/null; then
    [ -x .test-venv/bin/python ] || python3 -m venv .test-venv
    # openai-agents drives the Responses API (and needs openai 3); anthropic the Messages API.
    .test-venv/bin/pip install --quiet --disable-pip-version-check 'openai>=3,<4' 'openai-agents>=0.24,<1' 'anthropic>=2,<3'
fi

if [ ! -x .router-venv/bin/python ] || ! .router-venv/bin/python -c 'import sglang_router' 2>/dev/null; then
    python3 -m venv .router-venv
    .router-venv/bin/pip install --quiet --disable-pip-version-check 'sglang-router==0.3.2'
fi
if [ ! -x .vllm-router-venv/bin/vllm-router ]; then
    python3 -m venv .vllm-router-venv
    .vllm-router-venv/bin/pip install --quiet --disable-pip-version-check 'vllm-router==0.1.17'
fi
if ! .test-venv/bin/python -c 'import langchain_openai, agents, pydantic_ai, litellm' 2>/dev/null; then
    .test-venv/bin/pip install --quiet --disable-pip-version-check \
        'langchain-openai>=0.3' 'pydantic-ai-slim[openai]>=1.0' 'litellm>=1.60'
fi

if [ ! -f .test-node/node_modules/playwright-core/package.json ]; then
    mkdir -p .test-node
    npm install --silent --no-audit --no-fund --prefix .test-node 'playwright-core@1'
fi

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-tools: chromium is missing; run as root or: sudo apt-get install -y chromium" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-tools: ffmpeg is missing; run as root or: sudo apt-get install -y ffmpeg" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
fi
