#!/usr/bin/env python3
"""Parity of a `parity_dump` program (librwkvpeft) against the PyTorch references (RWKV-5: rwkv5_torch.py,
RWKV-6: rwkv6_torch.py, RWKV-7: rwkv7_torch.py; chosen by the case's version through rwkv_reference.py).

For every case: write a random checkpoint/adapter/batch of the case's version (make_case.py), run

    DUMP --model model.pth --adapter adapter.pth --lora-r R --lora-alpha ALPHA --train-parts PARTS \
         --batch batch.safetensors --out out.safetensors [--backend B]

compute the reference (logits, loss without L2Wrap, gradients of every trainable tensor with L2Wrap)
and compare tensor by tensor: max |a-b| and relative error ||a-b|| / ||b||.  A case fails when a
relative error exceeds --tol, when a tensor is non-finite, has the wrong shape or dtype (must be f32),
or when a gradient is missing or extra.

A v5/v7 case is SKIPPED (not passed) when the program exits non-zero with the library's "unsupported
version" error (e.g. "RWKV-5 (x052) checkpoints are not supported yet", "not an RWKV checkpoint of a
known version"), so the runner is usable before the library supports that version.  Skips are counted
and listed separately, never as passes.  Exit status: 0 if every selected case passed, 1 if any case
failed, 3 if none failed but some were skipped.

Usage:
  python3 tests/parity/run_parity.py --dump build/tests/parity_dump [--backend cpu|cpu64|cuda]
        [--device cpu|cuda] [--dtype float64|float32] [--workdir DIR] [--cases default,bf16,v7,...]
        [--tol 1e-4] [--json summary.json] [--quiet] [--list]
--dump is split like a shell command line, so "python3 some_script.py" works too.
--cases takes case names and the groups v5, v6, v7 (all cases of that version) and all (the default).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rwkv6_torch as R  # noqa: E402
import rwkv_reference as RR  # noqa: E402
from make_case import make_case  # noqa: E402

# every v7 block tensor that is not a target linear (for v7_all_parts; "time" matches nothing in v7):
# x_ = att.x_r..x_g and ffn.x_k; att.w = w0..w2; att.a = a0..a2; att.g = g1, g2; att.k_ = k_k, k_a.
# (10 substrings; librwkvpeft reads at most 16 of them.)
V7_ALL_PARTS = "ln,x_,att.w,att.a,att.v0,att.v1,att.v2,att.g,att.k_,att.r_k"

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
    # ---- RWKV-5 (x052): LoRA on the same 8 linears as v6; "time" selects time_mix_*, time_decay, time_faaaa
    "v5_default": (dict(version=5, seed=51, batch=1, tlen=32), 32.0, "time,ln",
                   "v5: L2 C128 H2 F448 V1000, B1 T32, fp32 checkpoint, r8 alpha32"),
    "v5_t_odd": (dict(version=5, seed=52, batch=1, tlen=23), 32.0, "time,ln", "v5: T=23, not a multiple of 16"),
    "v5_batch_ignore": (dict(version=5, seed=53, batch=3, tlen=20, ignore=7, lora_r=4), 16.0, "time,ln",
                        "v5: B=3 with 7 targets = -100; r4 alpha16"),
    "v5_lora_only": (dict(version=5, seed=54, batch=2, tlen=16), 32.0, "", "v5: only LoRA tensors train"),
    "v5_bf16": (dict(version=5, seed=55, batch=2, tlen=17, ignore=2, store_dtype="bf16"), 32.0, "time,ln",
                "v5: bf16-stored checkpoint and adapter"),
    "v5_adapter_overrides": (dict(version=5, seed=56, batch=1, tlen=19, adapter_overrides=True), 32.0, "time,ln",
                             "v5: adapter also carries time_*/ln* tensors that overwrite the base"),
    "v5_t_long": (dict(version=5, seed=58, batch=1, tlen=70), 32.0, "time,ln",
                  "v5: T=70 (long decay sums of the per-channel decay gradient)"),
    "v5_wide3": (dict(version=5, seed=57, layers=3, embd=256, ffn=896, vocab=777, batch=2, tlen=9), 8.0,
                 "time,ln", "v5: L3 C256 H4 F896 V777, r8 alpha8"),
    # ---- RWKV-7 (x070): LoRA on att r/k/v/o + ffn k/v; F = 4C; "time" matches nothing (only ln* train)
    "v7_default": (dict(version=7, seed=71, batch=1, tlen=32), 32.0, "time,ln",
                   "v7: L2 C128 H2 F512 V1000 Dw/Da/Dv/Dg 32, B1 T32, fp32 checkpoint, r8 alpha32"),
    "v7_t_odd": (dict(version=7, seed=72, batch=1, tlen=23), 32.0, "time,ln", "v7: T=23, not a multiple of 16"),
    "v7_batch_ignore": (dict(version=7, seed=73, batch=3, tlen=20, ignore=7, lora_r=4), 16.0, "time,ln",
                        "v7: B=3 with 7 targets = -100; r4 alpha16"),
    "v7_lora_only": (dict(version=7, seed=74, batch=2, tlen=16), 32.0, "", "v7: only LoRA tensors train"),
    "v7_bf16": (dict(version=7, seed=75, batch=2, tlen=17, ignore=2, store_dtype="bf16"), 32.0, "time,ln",
                "v7: bf16-stored checkpoint and adapter"),
    "v7_emb_head": (dict(version=7, seed=76, batch=2, tlen=12), 32.0, "time,ln,emb,head",
                    "v7: emb.weight and head.weight trainable too"),
    "v7_all_parts": (dict(version=7, seed=77, batch=2, tlen=18, ignore=3), 32.0, V7_ALL_PARTS,
                     "v7: every x_*, w0..w2, a0..a2, v0..v2, g1, g2, k_k, k_a, r_k, ln* (all but the 6 linears) trains"),
    "v7_adapter_overrides": (dict(version=7, seed=78, batch=1, tlen=19, adapter_overrides=True), 32.0, "time,ln",
                             "v7: adapter also carries every small block tensor (x_*, w0.., ln*), overwriting the base"),
    "v7_t_long": (dict(version=7, seed=79, batch=1, tlen=70), 32.0, "time,ln",
                  "v7: T=70: several 16-step chunks plus a tail"),
    "v7_wide3": (dict(version=7, seed=80, layers=3, embd=256, vocab=777, batch=2, tlen=9, d_w=48, d_a=32, d_v=16,
                      d_g=64), 8.0, "time,ln", "v7: L3 C256 H4 F1024 V777, Dw48 Da32 Dv16 Dg64, r8 alpha8"),
}
DEFAULT_CASES = list(CASES)


def case_version(name: str) -> int:
    return CASES[name][0].get("version", 6)


# the library's "this version is not supported (yet)" error, as parity_dump prints it (exit status != 0)
UNSUPPORTED_RE = re.compile(r"not supported|unsupported|not an RWKV checkpoint of a known version", re.I)
VERSION_WORD_RE = re.compile(r"RWKV-?[57]|x0[57]\d|version", re.I)


def unsupported_version_error(stderr: str) -> str:
    """The line of stderr that is the library's unsupported-version error, or ''."""
    for line in stderr.splitlines():
        if UNSUPPORTED_RE.search(line) and VERSION_WORD_RE.search(line):
            return line.strip()
    return ""


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
    version = case_version(name)
    result = dict(case=name, version=version, what=what, meta=meta, lora_alpha=alpha, train_parts=parts,
                  command=" ".join(shlex.quote(c) for c in cmd), ok=False, status="fail", rows=[], errors=[])
    if os.path.exists(files["out"]):
        os.remove(files["out"])
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        result["errors"] = [f"dump program did not run: {e}"]
        return result
    result["dump_seconds"] = round(time.time() - t0, 3)
    if proc.returncode != 0 and version != 6:
        why = unsupported_version_error(proc.stderr)
        if why:
            result["status"] = "skip"
            result["skip_reason"] = f"SKIP: the C library does not support RWKV-{version} yet ({why})"
            result["errors"] = [result["skip_reason"]]
            return result
    if proc.returncode != 0 or not os.path.exists(files["out"]):
        result["errors"] = [f"dump program exit status {proc.returncode}, out file exists: "
                            f"{os.path.exists(files['out'])}",
                            "stdout: " + proc.stdout[-2000:], "stderr: " + proc.stderr[-2000:]]
        return result

    from safetensors.torch import load_file, save_file
    got = load_file(files["out"])
    inputs, targets = R.load_batch(files["batch"])
    t0 = time.time()
    ref = RR.compute_reference(R.load_pth(files["model"]), R.load_pth(files["adapter"]), inputs, targets, r, alpha,
                               R.parse_train_parts(parts), getattr(torch, args.dtype), args.device)
    result["ref_seconds"] = round(time.time() - t0, 3)
    save_file({k: v.float().contiguous() for k, v in ref.items()}, os.path.join(cdir, "ref.safetensors"))
    rows, errors, hard = compare(ref, got, args.tol)
    result["rows"] = [dict(tensor=n, max_abs=mx, rel=re, ok=ok) for n, mx, re, ok in rows]
    result["errors"] = errors
    result["worst_rel"] = max((re for _, _, re, _ in rows), default=math.inf)
    result["worst_tensor"] = max(rows, key=lambda x: x[2])[0] if rows else None
    result["ok"] = not hard and all(ok for *_, ok in rows)
    result["status"] = "pass" if result["ok"] else "fail"
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
            print(f"{n:22s} {what}  [train_parts={parts!r}, alpha={alpha}, {kw}]")
        return 0
    if not args.dump:
        ap.error("--dump is required")
    cases = []
    for c in (c.strip() for c in args.cases.split(",")):
        if c == "all":
            cases += DEFAULT_CASES
        elif c in ("v5", "v6", "v7"):
            cases += [n for n in DEFAULT_CASES if case_version(n) == int(c[1])]
        elif c:
            cases.append(c)
    cases = list(dict.fromkeys(cases))
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}; known: {list(CASES)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="rwkv-parity-")
    os.makedirs(workdir, exist_ok=True)
    print(f"workdir {workdir}; reference {args.dtype} on {args.device}; tol {args.tol:g}")

    results = []
    for c in cases:
        res = run_case(c, args, workdir)
        if res["status"] == "skip":
            print(f"\n== {c}: {res['what']} ==\n-- {c}: {res['skip_reason']}")
            results.append(res)
            continue
        rows = [(r["tensor"], r["max_abs"], r["rel"], r["ok"]) for r in res["rows"]]
        print_table(f"{c}: {res['what']}", rows, res["errors"], args.quiet)
        print(f"-- {c}: {'PASS' if res['ok'] else 'FAIL'}; worst rel {res.get('worst_rel', math.inf):.3e}"
              f" ({res.get('worst_tensor')}); dump {res.get('dump_seconds', '-')} s,"
              f" reference {res.get('ref_seconds', '-')} s")
        results.append(res)

    ran = [r for r in results if r["status"] != "skip"]
    passed = [r["case"] for r in results if r["status"] == "pass"]
    failed = [r["case"] for r in results if r["status"] == "fail"]
    skipped = [r["case"] for r in results if r["status"] == "skip"]
    worst = max((r.get("worst_rel", math.inf) for r in ran), default=math.nan)
    ok = not failed and not skipped
    verdict = "PASS" if ok else ("FAIL" if failed else "INCOMPLETE (no failures, but cases were skipped)")
    print("\n== summary ==")
    for r in results:
        if r["status"] == "skip":
            print(f"{r['case']:22s} SKIP  {r['skip_reason']}")
        else:
            print(f"{r['case']:22s} {'PASS' if r['ok'] else 'FAIL'}  worst rel {r.get('worst_rel', math.inf):.3e}")
    print(f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped (skips are not passes)")
    print(f"worst relative error over the cases that ran: {worst:.3e} (tol {args.tol:g}) -> {verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_finite(dict(ok=ok, verdict=verdict, passed=passed, failed=failed, skipped=skipped,
                                   tol=args.tol, worst_rel=worst, backend=args.backend,
                                   ref_device=args.device, ref_dtype=args.dtype, workdir=workdir,
                                   cases=results)), f, indent=1, default=str)
    return 1 if failed else (3 if skipped else 0)


if __name__ == "__main__":
    sys.exit(main())
