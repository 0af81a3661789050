#!/usr/bin/env bash
# Installs what the API server's end-to-end tests drive it with, beside the repository:
#   .test-venv/    Python venv with the official `openai` client
#   .test-node/    playwright-core (no browser download: it drives Debian's chromium)
#   /usr/bin/chromium  Debian's package (apt-get; needs root, as on CI)
#   FFmpeg's libraries (libav*-dev), pkg-config and libclang: ingot-core's `video-files`
#                      feature builds against them; `ffmpeg` remakes the test videos
# Idempotent: each part is skipped when already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .test-venv/bin/python ] || ! .test-venv/bin/python -c 'import openai' 2>/dev/null; then
    python3 -m venv .test-venv
    .test-venv/bin/pip install --quiet --disable-pip-version-check 'openai>=1.40,<3'
fi

if [ ! -f .test-node/node_modules/playwright-core/package.json ]; then
    mkdir -p .test-node
    npm install --silent --no-audit --no-fund --prefix .test-node 'playwright-core@1'
fi

# Debian packages, installed together (one apt-get update) when any is missing.
packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
pkg-config --exists libavformat libavcodec libswscale libavutil 2>/dev/null \
    || packages+=(libavformat-dev libavcodec-dev libswscale-dev libavutil-dev pkg-config)
compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null || packages+=(clang libclang-dev)
command -v ffmpeg >/dev/null || packages+=(ffmpeg)
if [ ${#packages[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-tools: missing Debian packages; run as root or: sudo apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
