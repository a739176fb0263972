#!/usr/bin/env python3
"""RWKV-6 (x060) fresh-model initialisation rules of RWKV-PEFT (NOV d39f69c), as data and checks.

The rules are described in docs/init-rules.md; this file restates them as code (written from that
description, nothing imported from RWKV-PEFT).

Sub-commands
  write     the deterministic tensors (every time_* vector, time_decay, time_faaaa, ln_x weight/bias,
            LayerNorm weights/biases; --variant state adds the zero time_maa_w1/time_decay_w1/time_state;
            --with-zeros adds the all-zero att.output/ffn.value/ffn.receptance matrices) -> safetensors f32
  emulate   a complete fresh model following the rules (random parts drawn with torch) -> .pth
  check     verify a fresh model written by anyone (e.g. the C library): deterministic tensors against
            `write`, random tensors against their distribution (bounds, mean, variance, orthogonality)
  selftest  emulate + check on a few sizes, and show that a wrong model is rejected

  python3 init_reference.py write --n-layer 12 --n-embd 768 --out det.safetensors [--mode exact|torch]
  python3 init_reference.py check model.pth --lr-init 6e-4 [--variant plain|state]

--mode exact (default): each value is the exact real-number formula applied to the stored inputs and
rounded once to fp32 (ddd_i = fp32(i/C) is rounded first, because the reference stores it in an fp32
tensor before raising it to a power).  --mode torch: literally the reference's float32 tensor ops
(torch.pow in fp32 etc.); these differ from `exact` by at most 1 ulp of the power (<= ~1.1e-7 absolute
after the `1 -` subtraction) and can depend on the CPU's vector path.  `check` compares with an absolute
tolerance (default 3e-7) so either is accepted.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass, asdict
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------
@dataclass
class InitConfig:
    n_layer: int
    n_embd: int        # C
    dim_att: int       # A (default C)
    head_size: int     # N (default 64)
    dim_ffn: int       # F (default floor(3.5 C / 32) * 32)
    vocab: int = 65536

    @property
    def n_head(self) -> int:
        return self.dim_att // self.head_size

    @property
    def d_mix(self) -> int:      # D_MIX_LORA / TIME_MIX_EXTRA_DIM
        return 64 if self.n_embd == 4096 else 32

    @property
    def d_decay(self) -> int:    # D_DECAY_LORA / TIME_DECAY_EXTRA_DIM
        return 128 if self.n_embd == 4096 else 64

    @staticmethod
    def make(n_layer: int, n_embd: int, dim_att: int = 0, head_size: int = 64, dim_ffn: int = 0,
             vocab: int = 65536) -> "InitConfig":
        A = dim_att if dim_att > 0 else n_embd
        Fd = dim_ffn if dim_ffn > 0 else int((n_embd * 3.5) // 32 * 32)
        for what, v in (("n_embd", n_embd), ("dim_att", A), ("dim_ffn", Fd)):
            if v % 32:
                raise ValueError(f"{what} = {v} must be a multiple of 32 (the reference asserts it)")
        if A % head_size:
            raise ValueError("dim_att must be a multiple of head_size")
        return InitConfig(n_layer, n_embd, A, head_size, Fd, vocab)

    @staticmethod
    def from_state_dict(sd: Dict[str, Tensor]) -> "InitConfig":
        layers = {int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
        V, C = sd["emb.weight"].shape
        H, N = sd["blocks.0.att.time_faaaa"].shape
        return InitConfig(max(layers) + 1, C, sd["blocks.0.att.key.weight"].shape[0], N,
                          sd["blocks.0.ffn.key.weight"].shape[0], V)


def ratios(layer: int, n_layer: int, n1_ratio: float = 0.0) -> Tuple[float, float]:
    """(ratio_0_to_1, ratio_1_to_almost0).  The reference computes layer/(n_layer-1), which raises
    ZeroDivisionError for n_layer == 1; we use n1_ratio (default 0) there."""
    r01 = n1_ratio if n_layer == 1 else layer / (n_layer - 1)
    r1 = 1.0 - layer / n_layer
    return r01, r1


# ----------------------------------------------------------------------------------------------
# deterministic tensors
# ----------------------------------------------------------------------------------------------
def _ddd(C: int) -> np.ndarray:
    """ddd_i = i / C, rounded to fp32 (stored in an fp32 tensor by the reference), as float64."""
    return np.array([i / C for i in range(C)], dtype=np.float32).astype(np.float64)


def _maa_exact(C: int, r01: float, r1: float) -> Dict[str, np.ndarray]:
    d = _ddd(C)
    p1 = np.power(d, r1)
    ph = np.power(d, 0.5 * r1)
    f = lambda a: a.astype(np.float32)
    return {"x": f(1.0 - p1), "w": f(1.0 - p1), "k": f(1.0 - p1), "v": f(1.0 - (p1 + 0.3 * r01)),
            "r": f(1.0 - ph), "g": f(1.0 - ph), "ffn": f(1.0 - p1)}


def _maa_torch(C: int, r01: float, r1: float) -> Dict[str, np.ndarray]:
    """The reference's own float32 tensor arithmetic."""
    d = torch.tensor([i / C for i in range(C)], dtype=torch.float32)
    p1 = lambda: torch.pow(d, r1)
    ph = lambda: torch.pow(d, 0.5 * r1)
    n = lambda t: t.numpy()
    return {"x": n(1.0 - p1()), "w": n(1.0 - p1()), "k": n(1.0 - p1()), "v": n(1.0 - (p1() + 0.3 * r01)),
            "r": n(1.0 - ph()), "g": n(1.0 - ph()), "ffn": n(1.0 - p1())}


def deterministic_tensors(cfg: InitConfig, mode: str = "exact", variant: str = "plain",
                          with_zeros: bool = False, n1_ratio: float = 0.0) -> Dict[str, Tensor]:
    C, A, H, N, L = cfg.n_embd, cfg.dim_att, cfg.n_head, cfg.head_size, cfg.n_layer
    out: Dict[str, Tensor] = {}
    t = lambda a, shape: torch.from_numpy(np.asarray(a, dtype=np.float32).copy()).reshape(shape)
    ones, zeros = np.ones(C), np.zeros(C)
    out["blocks.0.ln0.weight"], out["blocks.0.ln0.bias"] = t(ones, (C,)), t(zeros, (C,))
    for l in range(L):
        p = f"blocks.{l}."
        r01, r1 = ratios(l, L, n1_ratio)
        maa = (_maa_exact if mode == "exact" else _maa_torch)(C, r01, r1)
        for s in ("x", "w", "k", "v", "r", "g"):
            out[p + f"att.time_maa_{s}"] = t(maa[s], (1, 1, C))
        # python-double formulas, each stored once into fp32 (same in both modes)
        decay = [-6 + 5 * (n / (A - 1)) ** (0.7 + 1.3 * r01) for n in range(A)]
        out[p + "att.time_decay"] = t(decay, (1, 1, A))
        faaaa = [r01 * (1 - (n / (A - 1))) + ((n + 1) % 3 - 1) * 0.1 for n in range(A)]
        out[p + "att.time_faaaa"] = t(faaaa, (H, N))
        out[p + "att.ln_x.weight"] = t(np.full(A, ((1 + l) / L) ** 0.7), (A,))
        out[p + "att.ln_x.bias"] = t(np.zeros(A), (A,))
        out[p + "ffn.time_maa_k"] = t(maa["ffn"], (1, 1, C))
        out[p + "ffn.time_maa_r"] = t(maa["ffn"], (1, 1, C))
        for ln in ("ln1", "ln2"):
            out[p + ln + ".weight"], out[p + ln + ".bias"] = t(ones, (C,)), t(zeros, (C,))
        if variant in ("state", "infctx"):  # RWKV_Tmix_x060_state / _infctx: the w1 matrices start at zero
            out[p + "att.time_maa_w1"] = torch.zeros(C, 5 * cfg.d_mix)
            out[p + "att.time_decay_w1"] = torch.zeros(C, cfg.d_decay)
        if variant == "state":
            out[p + "att.time_state"] = torch.zeros(H, N, N)
        if with_zeros:
            out[p + "att.output.weight"] = torch.zeros(C, A)
            out[p + "ffn.value.weight"] = torch.zeros(C, cfg.dim_ffn)
            out[p + "ffn.receptance.weight"] = torch.zeros(C, C)
    out["ln_out.weight"], out["ln_out.bias"] = t(ones, (C,)), t(zeros, (C,))
    return out


# ----------------------------------------------------------------------------------------------
# random tensors: what distribution each one has
# ----------------------------------------------------------------------------------------------
def random_specs(cfg: InitConfig, lr_init: float, variant: str = "plain") -> Dict[str, tuple]:
    """name -> ("uniform", lo, hi, shape) | ("orthogonal", gain, shape).  Everything else is
    deterministic (see deterministic_tensors, incl. the zero matrices)."""
    C, A, Fd, V = cfg.n_embd, cfg.dim_att, cfg.dim_ffn, cfg.vocab
    g_out_in = lambda o, i: math.sqrt(o / i) if o > i else 1.0
    s: Dict[str, tuple] = {"emb.weight": ("uniform", -lr_init, lr_init, (V, C)),
                           "head.weight": ("orthogonal", 0.5 * g_out_in(V, C), (V, C))}
    for l in range(cfg.n_layer):
        p = f"blocks.{l}."
        if variant == "plain":
            s[p + "att.time_maa_w1"] = ("uniform", -1e-4, 1e-4, (C, 5 * cfg.d_mix))
            s[p + "att.time_maa_w2"] = ("uniform", -1e-4, 1e-4, (5, cfg.d_mix, C))
            s[p + "att.time_decay_w1"] = ("uniform", -1e-4, 1e-4, (C, cfg.d_decay))
            s[p + "att.time_decay_w2"] = ("uniform", -1e-4, 1e-4, (cfg.d_decay, A))
        else:
            s[p + "att.time_maa_w2"] = ("uniform", -0.01, 0.01, (5, cfg.d_mix, C))
            s[p + "att.time_decay_w2"] = ("uniform", -0.01, 0.01, (cfg.d_decay, A))
        for n in ("receptance", "key", "value", "gate"):
            s[p + f"att.{n}.weight"] = ("orthogonal", g_out_in(A, C), (A, C))
        s[p + "ffn.key.weight"] = ("orthogonal", g_out_in(Fd, C), (Fd, C))
    return s


def emulate_init(cfg: InitConfig, lr_init: float = 6e-4, variant: str = "plain", seed: int = 0,
                 mode: str = "exact") -> Dict[str, Tensor]:
    """A complete fresh model following the rules (what rwkv-init.pth holds, in fp32)."""
    g = torch.Generator().manual_seed(seed)
    sd = deterministic_tensors(cfg, mode, variant, with_zeros=True)
    for name, spec in random_specs(cfg, lr_init, variant).items():
        if spec[0] == "uniform":
            _, lo, hi, shape = spec
            sd[name] = lo + (hi - lo) * torch.rand(shape, generator=g)
        else:
            _, gain, (rows, cols) = spec
            m = torch.randn(rows, cols, generator=g, dtype=torch.float64)
            q, r = torch.linalg.qr(m if rows >= cols else m.T)
            q = q * torch.sign(torch.diagonal(r))[None, :]
            sd[name] = (q if rows >= cols else q.T).float() * gain
    return sd


# ----------------------------------------------------------------------------------------------
# checking a fresh model
# ----------------------------------------------------------------------------------------------
def check_model(sd: Dict[str, Tensor], lr_init: float, variant: str = "plain", det_atol: float = 3e-7,
                orth_tol: float = 1e-4, n1_ratio: float = 0.0, det_rtol: float = 0.0) -> List[Tuple[str, str, bool]]:
    """Returns rows (tensor, finding, ok)."""
    cfg = InitConfig.from_state_dict(sd)
    rows: List[Tuple[str, str, bool]] = []
    det = deterministic_tensors(cfg, "exact", variant, with_zeros=True, n1_ratio=n1_ratio)
    rnd = random_specs(cfg, lr_init, variant)
    expected = set(det) | set(rnd)
    for n in sorted(expected - set(sd)):
        rows.append((n, "missing", False))
    for n in sorted(set(sd) - expected):
        rows.append((n, "unexpected key", False))
    for n in sorted(expected & set(sd)):
        x = sd[n].detach().double().cpu()
        if n in det:
            ref = det[n].double()
            if tuple(x.shape) != tuple(ref.shape):
                rows.append((n, f"shape {tuple(x.shape)} != {tuple(ref.shape)}", False))
                continue
            err = (x - ref).abs().max().item()
            ok = bool(((x - ref).abs() <= det_atol + det_rtol * ref.abs()).all())
            rows.append((n, f"deterministic: max|diff| {err:.2e} (atol {det_atol:g}, rtol {det_rtol:g})", ok))
            continue
        spec = rnd[n]
        shape = spec[-1]
        if tuple(x.shape) != tuple(shape):
            rows.append((n, f"shape {tuple(x.shape)} != {tuple(shape)}", False))
            continue
        cnt = x.numel()
        if spec[0] == "uniform":
            _, lo, hi, _ = spec
            w = hi - lo
            mean, var = x.mean().item(), x.var(unbiased=False).item()
            var_ref = w * w / 12
            var_sd = w * w * math.sqrt((1 / 80 - 1 / 144) / cnt)
            slack = det_rtol * max(abs(lo), abs(hi))  # bf16 storage may round just past the bound
            ok_range = x.min().item() >= lo - slack and x.max().item() <= hi + slack
            ok_mean = abs(mean - (lo + hi) / 2) <= 6 * math.sqrt(var_ref / cnt)
            ok_var = abs(var - var_ref) <= 6 * var_sd
            rows.append((n, f"U({lo:g},{hi:g}): min {x.min().item():.3g} max {x.max().item():.3g} mean {mean:.2e}"
                            f" var/expected {var / var_ref:.4f}", ok_range and ok_mean and ok_var))
        else:
            _, gain, (r_, c_) = spec
            G = x @ x.T if r_ <= c_ else x.T @ x
            dev = (G - gain * gain * torch.eye(G.shape[0], dtype=G.dtype)).abs().max().item() / (gain * gain)
            # Haar-spread, not a permutation/identity-like matrix: entries ~ N(0, gain^2/max(r,c))
            bound = gain * min(1.0, 1.5 * math.sqrt(2 * math.log(r_ * c_) / max(r_, c_)))
            spread = x.abs().max().item() <= bound and (x == 0).double().mean().item() < 0.01
            rows.append((n, f"orthogonal gain {gain:.4g}: max|W W^T/g^2 - I| {dev:.2e} (tol {orth_tol:g}),"
                            f" max|w| {x.abs().max().item():.3g} (<= {bound:.3g})", dev <= orth_tol and spread))
    return rows


def _load(path: str) -> Dict[str, Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def _selftest() -> int:
    fails = 0
    for (L, C, V) in ((1, 64, 100), (2, 128, 300), (3, 256, 200)):
        cfg = InitConfig.make(L, C, vocab=V)
        for variant in ("plain", "state", "infctx"):
            sd = emulate_init(cfg, 6e-4, variant, seed=L)
            bad = [r for r in check_model(sd, 6e-4, variant) if not r[2]]
            print(f"emulate L{L} C{C} {variant}: {'ok' if not bad else bad[:3]}")
            fails += bool(bad)
    # torch-mode values are within the tolerance of exact-mode values
    for (L, C) in ((12, 768), (32, 4096)):
        cfg = InitConfig.make(L, C)
        a, b = deterministic_tensors(cfg, "exact"), deterministic_tensors(cfg, "torch")
        worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        same = sum(int(torch.equal(a[k], b[k])) for k in a)
        print(f"L{L} C{C}: torch-mode vs exact-mode max|diff| {worst:.2e}; {same}/{len(a)} tensors bitwise equal")
        fails += worst > 3e-7
    # a wrong model must be rejected
    cfg = InitConfig.make(2, 128, vocab=300)
    sd = emulate_init(cfg, 6e-4, "plain")
    wrong = dict(sd)
    wrong["blocks.1.att.time_maa_v"] = sd["blocks.1.att.time_maa_k"]           # forgot the 0.3 shift
    wrong["blocks.0.att.key.weight"] = sd["blocks.0.att.key.weight"] * 1.01     # wrong gain
    wrong["head.weight"] = sd["head.weight"] / 0.5                             # forgot the 0.5 scale
    wrong["emb.weight"] = sd["emb.weight"] * 2                                 # wrong bound
    wrong["blocks.0.att.value.weight"] = torch.eye(128)                        # orthogonal but not random
    bad = {r[0] for r in check_model(wrong, 6e-4, "plain") if not r[2]}
    want = {"blocks.1.att.time_maa_v", "blocks.0.att.key.weight", "head.weight", "emb.weight",
            "blocks.0.att.value.weight"}
    print(f"wrong model rejected on: {sorted(bad)}")
    fails += bad != want
    print("selftest", "FAILED" if fails else "passed")
    return 1 if fails else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def size_args(p):
        p.add_argument("--n-layer", type=int, required=True)
        p.add_argument("--n-embd", type=int, required=True)
        p.add_argument("--dim-att", type=int, default=0)
        p.add_argument("--head-size", type=int, default=64)
        p.add_argument("--dim-ffn", type=int, default=0)
        p.add_argument("--vocab", type=int, default=65536)
        p.add_argument("--variant", choices=["plain", "state", "infctx"], default="plain",
                       help="plain = RWKV_Tmix_x060 (LoRA/PiSSA/Bone/full FT); state = RWKV_Tmix_x060_state "
                            "(adds time_state); infctx = RWKV_Tmix_x060_infctx")

    w = sub.add_parser("write")
    size_args(w)
    w.add_argument("--mode", choices=["exact", "torch"], default="exact")
    w.add_argument("--with-zeros", action="store_true")
    w.add_argument("--n1-ratio", type=float, default=0.0, help="ratio_0_to_1 used when n_layer == 1")
    w.add_argument("--out", required=True)
    e = sub.add_parser("emulate")
    size_args(e)
    e.add_argument("--lr-init", type=float, default=6e-4)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--store-dtype", choices=["fp32", "bf16"], default="fp32")
    e.add_argument("--out", required=True)
    c = sub.add_parser("check")
    c.add_argument("model")
    c.add_argument("--lr-init", type=float, default=6e-4)
    c.add_argument("--variant", choices=["plain", "state", "infctx"], default="plain")
    c.add_argument("--det-atol", type=float, default=3e-7)
    c.add_argument("--det-rtol", type=float, default=0.0, help="use 4e-3 for a bf16-stored model")
    c.add_argument("--orth-tol", type=float, default=1e-4, help="use ~2e-2 for a bf16-stored model")
    c.add_argument("--n1-ratio", type=float, default=0.0)
    c.add_argument("--quiet", action="store_true")
    sub.add_parser("selftest")
    a = ap.parse_args()

    if a.cmd == "selftest":
        return _selftest()
    if a.cmd == "check":
        rows = check_model(_load(a.model), a.lr_init, a.variant, a.det_atol, a.orth_tol, a.n1_ratio, a.det_rtol)
        for n, finding, ok in rows:
            if not (a.quiet and ok):
                print(f"{'ok  ' if ok else 'FAIL'} {n}: {finding}")
        nbad = sum(not r[2] for r in rows)
        print(f"{len(rows) - nbad}/{len(rows)} tensors as the init rules say")
        return 1 if nbad else 0
    cfg = InitConfig.make(a.n_layer, a.n_embd, a.dim_att, a.head_size, a.dim_ffn, a.vocab)
    if a.n_layer == 1:
        print("note: n_layer == 1 makes the reference divide by zero (ratio_0_to_1); using "
              f"{getattr(a, 'n1_ratio', 0.0)}", file=sys.stderr)
    if a.cmd == "write":
        from safetensors.torch import save_file
        det = deterministic_tensors(cfg, a.mode, a.variant, a.with_zeros, a.n1_ratio)
        meta = {k: str(v) for k, v in asdict(cfg).items()}
        meta.update(mode=a.mode, variant=a.variant, d_mix=str(cfg.d_mix), d_decay=str(cfg.d_decay))
        save_file({k: v.contiguous() for k, v in det.items()}, a.out, metadata=meta)
        print(f"{len(det)} deterministic tensors -> {a.out}")
    else:
        sd = emulate_init(cfg, a.lr_init, a.variant, a.seed)
        dt = torch.bfloat16 if a.store_dtype == "bf16" else torch.float32
        torch.save({k: v.to(dt).contiguous() for k, v in sd.items()}, a.out)
        print(f"{len(sd)} tensors -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
