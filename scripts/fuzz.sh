#!/usr/bin/env bash
# Fuzzes ingot-core on the stable toolchain (not part of CI): each target of fuzz/ runs for
# SECONDS_PER_TARGET (default 60) under a 16 GiB address-space limit, so an allocation bomb
# aborts instead of swapping. Prints one line of figures per target; crashing inputs land in
# fuzz/crashes/ (panics and timeouts by the harness, aborts by this script).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(gguf safetensors template tools image audio kernels request dataset)
cargo build --release --manifest-path fuzz/Cargo.toml --quiet || exit 1
bin="${CARGO_TARGET_DIR:-fuzz/target}/release/ingot-fuzz"
status=0
for target in "${targets[@]}"; do
    ( ulimit -v $((16 << 20)); exec "$bin" "$target" "$seconds" ) &
    pid=$!
    wait $pid
    rc=$?
    rm -rf "${TMPDIR:-/tmp}/ingot-fuzz-$pid"
    if [ $rc -gt 128 ]; then
        saved="fuzz/crashes/$target-abort-$(date +%s)"
        cp "fuzz/crashes/$target.current" "$saved"
        echo "$target: killed by signal $((rc - 128)); input saved to $saved"
    fi
    [ $rc -ne 0 ] && status=1
    rm -f "fuzz/crashes/$target.current"
done
exit $status
