#!/usr/bin/env bash
# Install llama.cpp (the `llama-cpp-python` package from PyPI) into a private
# virtualenv, for `ingot bench --compare-llama-cpp`. Building it compiles
# llama.cpp from source: about 10 minutes on 2 cores. Not needed for tests.
#
# Usage: scripts/install-llama-cpp.sh   -> prints the venv's python path
# Location: $INGOT_BENCH_VENV, default <repo>/.bench-venv (git-ignored).
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${INGOT_BENCH_VENV:-$repo_dir/.bench-venv}"
version="0.3.36"   # the version the fixtures were produced with

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    echo "$venv/bin/python"; exit 0
fi
python3 -m venv "$venv" >&2 || { echo "install-llama-cpp: error: cannot create a virtualenv at $venv (hint: apt-get install python3-venv)" >&2; exit 1; }
echo "install-llama-cpp: building llama-cpp-python $version (compiles llama.cpp, ~10 min)..." >&2
# Native CPU build, as llama.cpp users get it by default, but without AMX: llama.cpp's AMX
# matmul crashes on this kind of VM (upstream issue #20824).
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'" \
    "$venv/bin/pip" install --disable-pip-version-check --no-cache-dir "llama-cpp-python==$version" >&2 \
    || { echo "install-llama-cpp: error: pip could not build llama-cpp-python==$version (is PyPI reachable? are gcc and cmake present?)" >&2; exit 1; }
echo "$venv/bin/python"
