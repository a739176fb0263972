#!/usr/bin/env python3
"""Markdown table of a run_parity.py --json summary (for docs/parity.md).

Skipped cases (the library refused the checkpoint's version) get a row saying so and are counted
separately: a summary with skips is never reported as PASS."""
import json
import sys

d = json.load(open(sys.argv[1]))
worst = d.get("worst_rel")
worst_s = f"{worst:.2e}" if isinstance(worst, float) else "n/a (a case failed to run)"
cases = d["cases"]
status = lambda c: c.get("status", "pass" if c.get("ok") else "fail")
n_pass = sum(status(c) == "pass" for c in cases)
n_fail = sum(status(c) == "fail" for c in cases)
n_skip = sum(status(c) == "skip" for c in cases)
verdict = d.get("verdict") or ("PASS" if d["ok"] else "FAIL")
print(f"backend `{d['backend']}` vs PyTorch reference on `{d['ref_device']}` in {d['ref_dtype']}; "
      f"tolerance {d['tol']:g}; worst relative error {worst_s}; {n_pass} passed, {n_fail} failed, "
      f"{n_skip} skipped; {verdict}\n")
print("| case | configuration | logits rel | loss rel | worst gradient rel (tensor) | gradients |")
print("|---|---|---:|---:|---|---:|")
for c in cases:
    if status(c) == "skip":
        print(f"| {c['case']} | {c.get('what', '')} | — | — | SKIP: the library does not support "
              f"RWKV-{c.get('version', '?')} yet | 0 |")
        continue
    if not c.get("rows"):
        print(f"| {c['case']} | {c.get('what', '')} | — | — | did not run | 0 |")
        continue
    rows = {r["tensor"]: r for r in c["rows"]}
    grads = [r for r in c["rows"] if r["tensor"].startswith("grad.")]
    def rel(r):  # None/NaN (non-finite output) sorts as the worst
        v = r.get("rel")
        return float("inf") if v is None or v != v else v
    worst = max(grads, key=rel)
    f = lambda v: f"{v:.1e}" if isinstance(v, float) else "non-finite"
    print(f"| {c['case']} | {c['what']} | {f(rows['logits']['rel'])} | {f(rows['loss']['rel'])} | "
          f"{f(rel(worst))} ({worst['tensor'][5:]}) | {len(grads)} |")
