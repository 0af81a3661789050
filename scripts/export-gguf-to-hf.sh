#!/usr/bin/env bash
# Export the fetched Qwen2.5-Coder-0.5B-Instruct GGUF as a Hugging Face checkpoint directory
# (config.json, bf16 model.safetensors, tokenizer files), for benchmarking ingot's
# safetensors path (`ingot bench --model DIR --quantize q8_0`). See export-gguf-to-hf.py for
# what is written and what is lost (the GGUF weights were already quantized).
#
# Usage: scripts/export-gguf-to-hf.sh [GGUF] [OUT_DIR] [--force]   -> prints OUT_DIR
# Defaults: $INGOT_MODELS_DIR/qwen2.5-coder-0.5b-instruct.gguf -> .../qwen2.5-coder-0.5b-instruct-hf
# Needs: python3 with venv, PyPI. The packages go into <repo>/.export-venv (git-ignored;
# $INGOT_EXPORT_VENV to move it). No PyTorch: transformers is used for the tokenizer only.
set -euo pipefail
repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${INGOT_EXPORT_VENV:-$repo_dir/.export-venv}"
# transformers 5 imports torch for any GGUF reading; 4.57 reads GGUF metadata without it.
packages=("gguf==0.19.0" "numpy>=1.26,<3" "safetensors>=0.4,<1" "transformers==4.57.6" "tokenizers>=0.22,<0.23" "jinja2>=3.1")

die() { echo "export-gguf-to-hf: error: $*" >&2; exit 1; }

if ! [ -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import gguf, numpy, safetensors, transformers, tokenizers, jinja2; assert transformers.__version__ == '4.57.6'" 2>/dev/null; then
    python3 -m venv "$venv" >&2 || die "cannot create a virtualenv at $venv (hint: apt-get install python3-venv)"
    echo "export-gguf-to-hf: installing ${packages[*]} into $venv..." >&2
    "$venv/bin/pip" install --disable-pip-version-check -q "${packages[@]}" >&2 \
        || die "pip could not install ${packages[*]} (is PyPI reachable?)"
fi
exec "$venv/bin/python" "$repo_dir/scripts/export-gguf-to-hf.py" "$@"
