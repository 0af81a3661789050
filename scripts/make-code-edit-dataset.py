#!/usr/bin/env python3
"""Writes crates/cli/tests/data/code_edit.json: a small "rewrite this text with X changed"
dataset (alpaca format) made from the fixtures' alpaca_demo, whose answers mostly copy their
inputs: the workload lookup decoding is for (`ingot infer --lookup N`).

Each row's input is three consecutive alpaca_demo rows (instruction and answer) as one
passage; the instruction asks for it back with its longest word written in capitals, and the
label is exactly that. Run from the repository root:
    python3 scripts/make-code-edit-dataset.py [FIXTURES_DIR]
"""
import json
import os
import re
import sys

fixtures = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("INGOT_FIXTURES_DIR", "../shared/fixtures")
rows = json.load(open(os.path.join(fixtures, "datasets", "alpaca_demo.json"), encoding="utf-8"))
out = []
for i in range(len(rows)):
    parts = [rows[(i + k) % len(rows)] for k in range(3)]
    passage = " ".join(f"{r['instruction']} {r['input']} {r['output']}".replace("  ", " ").strip() for r in parts)
    words = re.findall(r"[A-Za-z]+", passage)
    word = max(words, key=lambda w: (len(w), w))
    out.append({
        "instruction": f'Rewrite this text with the word "{word}" changed to "{word.upper()}". Output only the rewritten text.',
        "input": passage,
        "output": re.sub(rf"\b{word}\b", word.upper(), passage),
    })
path = os.path.join("crates", "cli", "tests", "data", "code_edit.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"{path}: {len(out)} rows")
