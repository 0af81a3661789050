#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama-cpp-python sdist on PyPI (the same
# llama.cpp the fixtures and `ingot bench --compare-llama-cpp` use), for the side-by-side
# scripts (scripts/llama-server-suite.sh, scripts/surfaces-side-by-side.py). Out of CI:
# compiling takes 10-15 minutes on 2 cores. Idempotent: a built binary is reused.
#
# Usage: scripts/install-llama-server.sh   -> prints the llama-server binary's path
# Location: $INGOT_LLAMA_SERVER_DIR, default <repo>/.llama-server (git-ignored). The sdist's
# llama.cpp source (with its tools/server/tests) stays in <dir>/src for the suite script.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${INGOT_LLAMA_SERVER_DIR:-$repo_dir/.llama-server}"
version="0.3.36"   # the version scripts/install-llama-cpp.sh and the fixtures use
bin="$dir/build/bin/llama-server"

if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
die() { echo "install-llama-server: error: $*" >&2; exit 1; }
mkdir -p "$dir" || die "cannot create $dir"

# A private venv for pip (the sdist download) and, when the system has none, cmake from PyPI.
venv="$dir/venv"
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv" >&2 || die "cannot create a virtualenv at $venv (hint: apt-get install python3-venv)"
fi
cmake_bin="$(command -v cmake || true)"
if [ -z "$cmake_bin" ]; then
    "$venv/bin/pip" install --disable-pip-version-check -q cmake >&2 || die "no cmake on PATH and pip could not install it"
    cmake_bin="$venv/bin/cmake"
fi

src="$dir/src"
if [ ! -f "$src/CMakeLists.txt" ]; then
    echo "install-llama-server: downloading the llama-cpp-python $version sdist..." >&2
    rm -rf "$dir/sdist" && mkdir -p "$dir/sdist"
    # `--no-binary llama-cpp-python` (not `:all:`): the sdist only; pip still prepares its
    # metadata, and its build backend comes as a wheel instead of compiling from source.
    "$venv/bin/pip" download --disable-pip-version-check -q --no-binary llama-cpp-python --no-deps \
        -d "$dir/sdist" "llama-cpp-python==$version" >&2 || die "pip could not download llama-cpp-python==$version (is PyPI reachable?)"
    tar -xzf "$dir/sdist"/llama_cpp_python-"$version".tar.gz -C "$dir/sdist" || die "cannot unpack the sdist"
    rm -rf "$src" && mv "$dir/sdist/llama_cpp_python-$version/vendor/llama.cpp" "$src"
    rm -rf "$dir/sdist"
fi

echo "install-llama-server: building llama-server (compiles llama.cpp, 10-15 min on 2 cores)..." >&2
# Native CPU build, as llama.cpp users get it by default, but without AMX: llama.cpp's AMX
# matmul crashes on this kind of VM (upstream issue #20824; see install-llama-cpp.sh).
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
"$cmake_bin" -S "$src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx" -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON >&2 \
    || die "cmake could not configure llama.cpp (are gcc and g++ present?)"
"$cmake_bin" --build "$dir/build" --target llama-server -j "${CARGO_BUILD_JOBS:-2}" >&2 \
    || die "building llama-server failed (see the compiler output above)"
[ -x "$bin" ] || die "the build finished but $bin is missing"
echo "$bin"
