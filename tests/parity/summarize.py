#!/usr/bin/env python3
"""Markdown table of a run_parity.py --json summary (for docs/parity.md)."""
import json
import sys

d = json.load(open(sys.argv[1]))
print(f"backend `{d['backend']}` vs PyTorch reference on `{d['ref_device']}` in {d['ref_dtype']}; "
      f"tolerance {d['tol']:g}; worst relative error {d['worst_rel']:.2e}; {'PASS' if d['ok'] else 'FAIL'}\n")
print("| case | configuration | logits rel | loss rel | worst gradient rel (tensor) | gradients |")
print("|---|---|---:|---:|---|---:|")
for c in d["cases"]:
    rows = {r["tensor"]: r for r in c["rows"]}
    grads = [r for r in c["rows"] if r["tensor"].startswith("grad.")]
    worst = max(grads, key=lambda r: r["rel"])
    print(f"| {c['case']} | {c['what']} | {rows['logits']['rel']:.1e} | {rows['loss']['rel']:.1e} | "
          f"{worst['rel']:.1e} ({worst['tensor'][5:]}) | {len(grads)} |")
