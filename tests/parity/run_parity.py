#!/usr/bin/env python3
"""Parity of a `parity_dump` program (librwkvpeft) against the PyTorch reference rwkv6_torch.py.

For every case: write a random checkpoint/adapter/batch (make_case.py), run

    DUMP --model model.pth --adapter adapter.pth --lora-r R --lora-alpha ALPHA --train-parts PARTS \
         --batch batch.safetensors --out out.safetensors [--backend B]

compute the reference (logits, loss without L2Wrap, gradients of every trainable tensor with L2Wrap)
and compare tensor by tensor: max |a-b| and relative error ||a-b|| / ||b||.  A case fails when a
relative error exceeds --tol, when a tensor is non-finite, has the wrong shape or dtype (must be f32),
or when a gradient is missing or extra.  Exit status 1 if any case fails.

Usage:
  python3 tests/parity/run_parity.py --dump build/tools/parity_dump [--backend cpu|cpu64|cuda]
        [--device cpu|cuda] [--dtype float64|float32] [--workdir DIR] [--cases default,bf16,...]
        [--tol 1e-4] [--json summary.json] [--quiet] [--list]
--dump is split like a shell command line, so "python3 some_script.py" works too.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rwkv6_torch as R  # noqa: E402
from make_case import make_case  # noqa: E402

# name -> (make_case keyword arguments, lora_alpha, train_parts, what it exercises)
CASES: Dict[str, tuple] = {
    "default": (dict(seed=11, batch=1, tlen=32), 32.0, "time,ln",
                "L2 C128 H2 F448 V1000, B1 T32, fp32 checkpoint, r8 alpha32"),
    "t_odd": (dict(seed=12, batch=1, tlen=23), 32.0, "time,ln",
              "T=23, not a multiple of 16"),
    "batch_ignore": (dict(seed=13, batch=3, tlen=20, ignore=7, lora_r=4), 16.0, "time,ln",
                     "B=3 with 7 targets = -100; r4 alpha16"),
    "lora_only": (dict(seed=14, batch=2, tlen=16), 32.0, "",
                  "--train-parts \"\": only LoRA tensors train"),
    "bf16": (dict(seed=15, batch=2, tlen=17, ignore=2, store_dtype="bf16"), 32.0, "time,ln",
             "bf16-stored checkpoint and adapter (both sides use the bf16 values)"),
    "emb_head": (dict(seed=16, batch=2, tlen=12), 32.0, "time,ln,emb,head",
                 "emb.weight and head.weight trainable too"),
    "adapter_overrides": (dict(seed=17, batch=1, tlen=19, adapter_overrides=True), 32.0, "time,ln",
                          "adapter also carries time_*/ln* tensors that overwrite the base"),
    "t_long": (dict(seed=18, batch=1, tlen=70), 32.0, "time,ln",
               "T=70: several 16-step chunks plus a tail"),
    "wide3": (dict(seed=19, layers=3, embd=256, ffn=896, vocab=777, batch=2, tlen=9), 8.0, "time,ln",
              "L3 C256 H4 F896 V777, r8 alpha8"),
}
DEFAULT_CASES = list(CASES)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    nb = b.norm().item()
    diff = (a - b).norm().item()
    return diff / nb if nb > 0 else diff


def compare(ref: Dict[str, torch.Tensor], got: Dict[str, torch.Tensor], tol: float):
    """Returns (rows, errors): rows = [(name, maxabs, rel, ok)], errors = list of strings."""
    rows, errors = [], []
    for name in sorted(ref, key=lambda n: (n.startswith("grad."), n)):
        b = ref[name].double()
        if name not in got:
            errors.append(f"missing {name}")
            rows.append((name, math.nan, math.inf, False))
            continue
        a_raw = got[name]
        if a_raw.dtype != torch.float32:
            errors.append(f"{name}: dtype {a_raw.dtype}, expected float32")
        if tuple(a_raw.shape) != tuple(b.shape):
            errors.append(f"{name}: shape {tuple(a_raw.shape)}, expected {tuple(b.shape)}")
            rows.append((name, math.nan, math.inf, False))
            continue
        a = a_raw.double()
        if not torch.isfinite(a).all():
            errors.append(f"{name}: non-finite values")
            rows.append((name, math.nan, math.inf, False))
            continue
        mx = (a - b).abs().max().item() if a.numel() else 0.0
        re = rel_err(a, b)
        if b.norm().item() == 0:
            errors.append(f"note: reference {name} is all zero; relative error is ||a|| there")
        rows.append((name, mx, re, re <= tol))
    for name in sorted(got):
        if name.startswith("grad.") and name not in ref:
            errors.append(f"extra gradient {name} (not trainable)")
    hard = [e for e in errors if not e.startswith("note:")]
    return rows, errors, hard


def print_table(case: str, rows, errors, quiet: bool) -> None:
    w = max([len(r[0]) for r in rows] + [10])
    print(f"\n== {case} ==")
    print(f"{'tensor'.ljust(w)}  {'max|a-b|':>11}  {'rel.err':>11}  result")
    for name, mx, re, ok in rows:
        if quiet and ok:
            continue
        print(f"{name.ljust(w)}  {mx:11.3e}  {re:11.3e}  {'pass' if ok else 'FAIL'}")
    for e in errors:
        print("  " + e)


def run_case(name: str, args, workdir: str) -> Dict:
    kw, alpha, parts, what = CASES[name]
    cdir = os.path.join(workdir, name)
    meta = make_case(cdir, **kw)
    r = meta["lora_r"]
    files = {k: os.path.join(cdir, f) for k, f in
             (("model", "model.pth"), ("adapter", "adapter.pth"), ("batch", "batch.safetensors"),
              ("out", "out.safetensors"))}
    cmd = shlex.split(args.dump) + [
        "--model", files["model"], "--adapter", files["adapter"], "--lora-r", str(r),
        "--lora-alpha", repr(alpha), "--train-parts", parts, "--batch", files["batch"], "--out", files["out"]]
    if args.backend:
        cmd += ["--backend", args.backend]
    result = dict(case=name, what=what, meta=meta, lora_alpha=alpha, train_parts=parts,
                  command=" ".join(shlex.quote(c) for c in cmd), ok=False, rows=[], errors=[])
    if os.path.exists(files["out"]):
        os.remove(files["out"])
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        result["errors"] = [f"dump program did not run: {e}"]
        return result
    result["dump_seconds"] = round(time.time() - t0, 3)
    if proc.returncode != 0 or not os.path.exists(files["out"]):
        result["errors"] = [f"dump program exit status {proc.returncode}, out file exists: "
                            f"{os.path.exists(files['out'])}",
                            "stdout: " + proc.stdout[-2000:], "stderr: " + proc.stderr[-2000:]]
        return result

    from safetensors.torch import load_file, save_file
    got = load_file(files["out"])
    inputs, targets = R.load_batch(files["batch"])
    t0 = time.time()
    ref = R.compute_reference(R.load_pth(files["model"]), R.load_pth(files["adapter"]), inputs, targets, r, alpha,
                              R.parse_train_parts(parts), getattr(torch, args.dtype), args.device)
    result["ref_seconds"] = round(time.time() - t0, 3)
    save_file({k: v.float().contiguous() for k, v in ref.items()}, os.path.join(cdir, "ref.safetensors"))
    rows, errors, hard = compare(ref, got, args.tol)
    result["rows"] = [dict(tensor=n, max_abs=mx, rel=re, ok=ok) for n, mx, re, ok in rows]
    result["errors"] = errors
    result["worst_rel"] = max((re for _, _, re, _ in rows), default=math.inf)
    result["worst_tensor"] = max(rows, key=lambda x: x[2])[0] if rows else None
    result["ok"] = not hard and all(ok for *_, ok in rows)
    return result


def _finite(o):
    """JSON has no inf/nan: write null instead."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump", help="the parity_dump program (a command line)")
    ap.add_argument("--backend", default=None, help="passed to the dump program as --backend (cpu|cpu64|cuda)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device of the PyTorch reference")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="reference precision")
    ap.add_argument("--workdir", default=None, help="where cases are written (default: a new temp dir)")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES), help="comma-separated subset of cases")
    ap.add_argument("--tol", type=float, default=1e-4, help="maximum relative error ||a-b||/||b||")
    ap.add_argument("--json", default=None, help="write a JSON summary here")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per dump invocation")
    ap.add_argument("--quiet", action="store_true", help="print only failing rows")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    args = ap.parse_args()
    if args.list:
        for n, (kw, alpha, parts, what) in CASES.items():
            print(f"{n:18s} {what}  [train_parts={parts!r}, alpha={alpha}, {kw}]")
        return 0
    if not args.dump:
        ap.error("--dump is required")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; known: {list(CASES)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="rwkv6-parity-")
    os.makedirs(workdir, exist_ok=True)
    print(f"workdir {workdir}; reference {args.dtype} on {args.device}; tol {args.tol:g}")

    results = []
    for c in cases:
        res = run_case(c, args, workdir)
        rows = [(r["tensor"], r["max_abs"], r["rel"], r["ok"]) for r in res["rows"]]
        print_table(f"{c}: {res['what']}", rows, res["errors"], args.quiet)
        print(f"-- {c}: {'PASS' if res['ok'] else 'FAIL'}; worst rel {res.get('worst_rel', math.inf):.3e}"
              f" ({res.get('worst_tensor')}); dump {res.get('dump_seconds', '-')} s,"
              f" reference {res.get('ref_seconds', '-')} s")
        results.append(res)

    worst = max((r.get("worst_rel", math.inf) for r in results), default=math.inf)
    ok = all(r["ok"] for r in results)
    print("\n== summary ==")
    for r in results:
        print(f"{r['case']:18s} {'PASS' if r['ok'] else 'FAIL'}  worst rel {r.get('worst_rel', math.inf):.3e}")
    print(f"worst relative error overall: {worst:.3e} (tol {args.tol:g}) -> {'PASS' if ok else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_finite(dict(ok=ok, tol=args.tol, worst_rel=worst, backend=args.backend,
                                   ref_device=args.device, ref_dtype=args.dtype, workdir=workdir,
                                   cases=results)), f, indent=1, default=str)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
