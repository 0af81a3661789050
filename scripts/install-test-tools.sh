#!/usr/bin/env bash
# Installs what the API server's end-to-end tests drive it with, beside the repository:
#   .test-venv/    Python venv with the official `openai` client, and the client libraries
#                  tests/clients.rs drives the server with (langchain-openai, openai-agents,
#                  pydantic-ai-slim[openai], litellm: ~375 MB, ~2 min to install)
#   .test-node/    playwright-core (no browser download: it drives Debian's chromium)
#   /usr/bin/chromium  Debian's package (apt-get; needs root, as on CI)
# Idempotent: each part is skipped when already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .test-venv/bin/python ] || ! .test-venv/bin/python -c 'import openai' 2>/dev/null; then
    python3 -m venv .test-venv
    .test-venv/bin/pip install --quiet --disable-pip-version-check 'openai>=1.40,<3'
fi
if ! .test-venv/bin/python -c 'import langchain_openai, agents, pydantic_ai, litellm' 2>/dev/null; then
    .test-venv/bin/pip install --quiet --disable-pip-version-check \
        'langchain-openai>=0.3' 'openai-agents>=0.2' 'pydantic-ai-slim[openai]>=1.0' 'litellm>=1.60'
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
