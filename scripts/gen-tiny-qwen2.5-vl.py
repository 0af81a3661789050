"""tiny-qwen2.5-vl: a tiny random float32 Qwen2_5_VLForConditionalGeneration + processor + references,
written to crates/core/tests/fixtures/tiny-qwen2.5-vl/ (checked in, so the test runs without /work/shared).

Mirrors /work/shared/fixtures/_generator/gen_qwen2vl.py (tiny-qwen2-vl):
  * the same text config, tokenizer.json, tokenizer_config.json, chat_template.json, generation_config.json
    and the two images, copied from the tiny-qwen2-vl fixture at generation time (FIXTURES/tiny-qwen2-vl, FIXTURES
    = $INGOT_FIXTURES_DIR or /work/shared/fixtures);
  * a Qwen2.5-VL vision tower: depth 4, hidden_size 32, intermediate_size 48, num_heads 2, out_hidden_size 64
    (the LM width), window_size 56 (2x2 merge units), fullatt_block_indexes [1, 3], silu, patch 14, temporal 2,
    merge 2; every parameter (norm weights included) seeded non-trivially;
  * preprocessor_config.json as tiny-qwen2-vl's but min_pixels 28*28*16, max_pixels 28*28*32, so both images
    get merged grids of several 2x2 windows, some cut short at the bottom/right edges.

Reference procedure (float32, eager attention, CPU), per case:
  text   = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  inputs = processor(text=[text], images=[PIL image], return_tensors="pt")  (PIL image backend)
  vision = model.model.visual(pixel_values, grid_thw) merged output [n_pad_tokens, 64], pad-token order
  logits = model(**inputs).logits (every position)
  greedy = 10 x argmax, full recompute with pixel_values each step (== model.generate(do_sample=False))
  rope_position_ids / rope_deltas = model.model.get_rope_index(...)

Run: python3 -m venv .gen-venv && .gen-venv/bin/pip install torch torchvision transformers==5.6.0 safetensors pillow numpy
     (torchvision: the processor needs Qwen2VLVideoProcessor, which imports it)
     .gen-venv/bin/python scripts/gen-tiny-qwen2.5-vl.py
"""
import json
import os
import shutil

import torch
from safetensors.torch import save_file

torch.set_num_threads(2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("INGOT_FIXTURES_DIR") or "/work/shared/fixtures"
SRC = os.path.join(FIXTURES, "tiny-qwen2-vl")
OUT = os.path.join(ROOT, "crates", "core", "tests", "fixtures", "tiny-qwen2.5-vl")
N_NEW = 10
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 16, 28 * 28 * 32
COPIED = ["tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json",
          "image_64x48.png", "image_40x90.png"]


def top10(vec):
    t = torch.topk(vec, 10)
    return [[int(i), float(v)] for v, i in zip(t.values, t.indices)]


def build():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    src_cfg = json.load(open(os.path.join(SRC, "config.json")))
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    for f in COPIED:
        shutil.copyfile(os.path.join(SRC, f), os.path.join(OUT, f))
        os.chmod(os.path.join(OUT, f), 0o644)
    tc = json.load(open(os.path.join(OUT, "tokenizer_config.json")))
    tc["processor_class"] = "Qwen2_5_VLProcessor"
    json.dump(tc, open(os.path.join(OUT, "tokenizer_config.json"), "w"), indent=2, ensure_ascii=False)

    text = {k: v for k, v in src_cfg["text_config"].items()
            if k not in ("model_type", "transformers_version", "dtype", "layer_types", "initializer_range",
                         "use_cache", "attention_dropout", "max_window_layers")}
    cfg = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=64,
                           window_size=56, fullatt_block_indexes=[1, 3], hidden_act="silu", patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, in_channels=3),
        image_token_id=src_cfg["image_token_id"], video_token_id=src_cfg["video_token_id"],
        vision_start_token_id=src_cfg["vision_start_token_id"], vision_end_token_id=src_cfg["vision_end_token_id"],
        tie_word_embeddings=False,
    )
    model = Qwen2_5_VLForConditionalGeneration(cfg).float()
    g = torch.Generator().manual_seed(4025)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "norm" in name or "ln_q" in name:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 1.0)
            elif name.startswith("lm_head"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif "patch_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.03)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    model.save_pretrained(OUT)
    pre = json.load(open(os.path.join(SRC, "preprocessor_config.json")))
    pre.update({"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, "processor_class": "Qwen2_5_VLProcessor"})
    json.dump(pre, open(os.path.join(OUT, "preprocessor_config.json"), "w"), indent=2)


@torch.no_grad()
def reference(cases):
    from PIL import Image
    from transformers import (AutoTokenizer, GenerationConfig, Qwen2_5_VLForConditionalGeneration,
                              Qwen2_5_VLProcessor, Qwen2VLVideoProcessor)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil.from_pretrained(OUT),
                               tokenizer=AutoTokenizer.from_pretrained(OUT),
                               video_processor=Qwen2VLVideoProcessor.from_pretrained(OUT),
                               chat_template=json.load(open(os.path.join(OUT, "chat_template.json")))["chat_template"])
    assert proc.image_processor.size == {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, \
        proc.image_processor.size
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(OUT, dtype=torch.float32,
                                                               attn_implementation="eager").eval()
    model.generation_config = GenerationConfig(pad_token_id=proc.tokenizer.pad_token_id)  # pure greedy, no eos
    visual = model.model.visual
    res, tensors = [], {}
    for case in cases:
        img = Image.open(os.path.join(OUT, case["image"])).convert("RGB")
        text = proc.apply_chat_template(case["messages"], tokenize=False, add_generation_prompt=True)
        inp = proc(text=[text], images=[img], return_tensors="pt")
        grid = inp["image_grid_thw"]
        window_index, cu_window_seqlens = visual.get_window_index(grid)
        print(case["name"], "grid_thw", grid.tolist(), "window_index", window_index.tolist(),
              "cu_window_seqlens", torch.unique_consecutive(torch.tensor(cu_window_seqlens)).tolist())
        vis = visual(inp["pixel_values"], grid_thw=grid)
        vis = getattr(vis, "pooler_output", vis)
        feats = model.model.get_image_features(inp["pixel_values"], grid)
        feats = getattr(feats, "pooler_output", feats)
        feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats
        assert torch.equal(vis, feats), "visual() and get_image_features() differ"
        out = model(**inp)
        lg = out.logits[0].float()
        ids = inp["input_ids"][0].tolist()
        mm = inp["mm_token_type_ids"][0].tolist()
        greedy, margins = [], []
        for _ in range(N_NEW):
            x = torch.tensor([ids])
            mmt = torch.tensor([mm + [0] * (len(ids) - len(mm))])
            o = model(input_ids=x, attention_mask=torch.ones_like(x), pixel_values=inp["pixel_values"],
                      image_grid_thw=grid, mm_token_type_ids=mmt).logits[0, -1]
            t2 = torch.topk(o, 2)
            margins.append(float(t2.values[0] - t2.values[1]))
            greedy.append(int(t2.indices[0]))
            ids.append(int(t2.indices[0]))
        gc = GenerationConfig(do_sample=False, max_new_tokens=N_NEW, eos_token_id=None,
                              pad_token_id=proc.tokenizer.pad_token_id)
        gen = model.generate(**inp, generation_config=gc)[0, inp["input_ids"].shape[1]:].tolist()
        assert gen == greedy, (gen, greedy)
        pos, deltas = model.model.get_rope_index(inp["input_ids"], inp["mm_token_type_ids"], grid, None,
                                                 attention_mask=inp["attention_mask"])
        name = case["name"]
        tensors[f"{name}.pixel_values"] = inp["pixel_values"].float().contiguous()
        tensors[f"{name}.image_grid_thw"] = grid.to(torch.int64).contiguous()
        tensors[f"{name}.input_ids"] = inp["input_ids"][0].to(torch.int64).contiguous()
        tensors[f"{name}.vision"] = vis.float().contiguous()
        tensors[f"{name}.logits"] = lg.contiguous()
        res.append({
            "name": name, "image": case["image"], "image_size_wh": list(img.size), "messages": case["messages"],
            "rendered_prompt": text, "input_ids": inp["input_ids"][0].tolist(),
            "mm_token_type_ids": inp["mm_token_type_ids"][0].tolist(),
            "num_image_pad_tokens": int((inp["input_ids"][0] == model.config.image_token_id).sum()),
            "image_grid_thw": grid.tolist(), "pixel_values_shape": list(inp["pixel_values"].shape),
            "window_index": window_index.tolist(),
            "cu_window_seqlens": torch.unique_consecutive(torch.tensor(cu_window_seqlens)).tolist(),
            "rope_position_ids": pos[:, 0].tolist(), "rope_deltas": deltas.flatten().tolist(),
            "last_position_top10": top10(lg[-1]), "greedy_new_ids": greedy, "min_top1_top2_margin": min(margins),
        })
    return res, tensors


PUBLIC_CASES = [
    {"name": "image1_describe", "image": "image_64x48.png", "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}]},
    {"name": "image2_system_question", "image": "image_40x90.png", "messages": [
        {"role": "system", "content": "You are a careful visual assistant."},
        {"role": "user", "content": [{"type": "text", "text": "What shapes do you see?"}, {"type": "image"}]}]},
]

if __name__ == "__main__":
    # the cases must be tiny-qwen2-vl's
    src_ref = json.load(open(os.path.join(SRC, "reference.json")))
    assert [(c["name"], c["image"], c["messages"]) for c in src_ref["cases"]] == \
        [(c["name"], c["image"], c["messages"]) for c in PUBLIC_CASES]
    build()
    res, tensors = reference(PUBLIC_CASES)
    save_file(tensors, os.path.join(OUT, "reference_tensors.safetensors"))
    json.dump({"compute_dtype": "float32", "n_new": N_NEW, "cases": res},
              open(os.path.join(OUT, "reference.json"), "w"), indent=1, ensure_ascii=False)
    for r in res:
        print(r["name"], len(r["input_ids"]), r["image_grid_thw"], r["pixel_values_shape"], r["greedy_new_ids"],
              round(r["min_top1_top2_margin"], 4))
