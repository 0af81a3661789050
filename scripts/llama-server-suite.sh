#!/usr/bin/env bash
# Run llama.cpp's own server test suite (tools/server/tests, pytest, from the llama-cpp-python
# 0.3.36 sdist that scripts/install-llama-server.sh unpacks) against llama-server and against
# `ingot api`, both serving the same local GGUF, and print each one's pass count. Out of CI
# (it builds llama-server the first time, 10-15 min, and runs the suite twice).
#
# Usage: scripts/llama-server-suite.sh [TARGET] [PYTEST ARGS...]
#   TARGET: both (default), llama or ingot. PYTEST ARGS default to `unit -m "not slow"`.
# Env: INGOT_LLAMA_SERVER_DIR (as install-llama-server.sh), SUITE_MODEL (default: the Qwen2.5
# Coder 0.5B GGUF in ~/.cache/ingot/models), SUITE_PORT (default 28080), INGOT (the ingot
# binary; default target/release/ingot, built if missing).
# SUITE_TAG, if set, is added to the result files' names: per-test results land in
# $INGOT_LLAMA_SERVER_DIR/suite-<target>[-<tag>].xml (JUnit XML), the output in suite-<target>[-<tag>].log.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "llama-server-suite: error: $*" >&2; exit 1; }
target="${1:-both}"; [ $# -gt 0 ] && shift
case "$target" in both|llama|ingot) ;; *) die "TARGET is both, llama or ingot, not '$target'";; esac
[ $# -gt 0 ] || set -- unit -m "not slow"

llama_server="$("$repo_dir/scripts/install-llama-server.sh")"
dir="$(cd "$(dirname "$llama_server")/../.." && pwd)"
tests="$dir/src/tools/server/tests"
[ -f "$tests/utils.py" ] || die "$tests has no test suite (the sdist should ship tools/server/tests)"
model="${SUITE_MODEL:-$HOME/.cache/ingot/models/qwen2.5-coder-0.5b-instruct.gguf}"
[ -f "$model" ] || die "no model at $model (scripts/fetch-models.sh fetches it; SUITE_MODEL overrides)"
ingot="${INGOT:-$repo_dir/target/release/ingot}"
if [ "$target" != llama ] && [ ! -x "$ingot" ]; then
    (cd "$repo_dir" && cargo build --release -p ingot >&2) || die "cannot build ingot"
fi

venv="$dir/suite-venv"
if [ ! -x "$venv/bin/pytest" ]; then
    python3 -m venv "$venv" >&2 || die "cannot create a virtualenv at $venv"
    "$venv/bin/pip" install --disable-pip-version-check -q -r "$tests/requirements.txt" >&2 \
        || die "pip could not install the suite's requirements ($tests/requirements.txt)"
fi

run() {  # run <target> <pytest args>: runs the suite, prints "<target>: N passed, ..."
    local name="$1"; shift
    local tag="$name${SUITE_TAG:+-$SUITE_TAG}"
    local xml="$dir/suite-$tag.xml"
    (cd "$tests" && SUITE_TARGET="$name" SUITE_MODEL="$model" SUITE_LLAMA_SERVER="$llama_server" \
        SUITE_INGOT="$ingot" LLAMA_SERVER_BIN_PATH="$repo_dir/scripts/llama-server-suite/server_shim.py" \
        PORT="${SUITE_PORT:-28080}" "$venv/bin/python" -m pytest -p no:cacheprovider -q \
        --junitxml="$xml" "$@" >"$dir/suite-$tag.log" 2>&1) || true
    "$venv/bin/python" - "$tag" "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
name, path = sys.argv[1], sys.argv[2]
cases = ET.parse(path).getroot().iter("testcase")
counts = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
for case in cases:
    kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
    counts[{"failure": "failed", "error": "error", "skipped": "skipped"}.get(kinds[0], "passed") if kinds else "passed"] += 1
print(f"{name}: {counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
      f"{counts['skipped']} skipped (of {sum(counts.values())}; details in {path})")
PY
}
case "$target" in
    both) run llama "$@"; run ingot "$@";;
    *) run "$target" "$@";;
esac
