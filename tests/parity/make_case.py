#!/usr/bin/env python3
"""Write a seeded random RWKV-5 (x052), RWKV-6 (x060) or RWKV-7 (x070) parity case (--version, default 6).

Files written into --out DIR:
  model.pth          torch.save of a plain dict with the exact spec 1.2 keys/shapes of that version (fp32 or bf16)
  adapter.pth        LoRA tensors "<module>.lora_A" [r,in] and "<module>.lora_B" [out,r] for the target
                     linears of every block (spec 3.1: 8 per block in v5/v6, 6 in v7), random and non-zero;
                     with --adapter-overrides it also holds perturbed copies of the small tensors
                     (v5/v6: every time_* and ln* tensor, which real adapters carry, spec 3.7; v7: every
                     non-linear block tensor x_*, w0..g2, k_k, k_a, r_k, ln*), which overwrite the base values
  batch.safetensors  "inputs", "targets": int32 [B,T]; --ignore N targets are set to -100

Scales are chosen so every tensor matters: linears ~ N(0, 1/in), mixes in (0,1), decays spread from slow to
fast, LN weights ~1, small biases, low-rank matrices large enough to move things.
  v6: maa in (0,1), time_decay in (-6,-0.5), small time_faaaa, decay/maa low-rank matrices.
  v5: time_mix_* in (0.05,0.95), time_decay [H,N] in (-6,0.5) (d from 0.998 down to 0.19), time_faaaa ~ N(0,0.3).
  v7: x_* in (0.05,0.95); w0 in (-6,1) so the soft clamp -softplus(-z)-0.5 is exercised on both sides;
      a0, v0 in (-1,1); k_k in (0.5,1.2); k_a in (0.3,1.5); r_k ~ N(0,0.3); w1/a1/v1/g1 ~ N(0,1/C);
      w2/a2/v2 ~ N(0,0.25/D); g2 ~ N(0,4/D) (so g is O(1)); ffn width F = 4C.
      LoRA widths Dw, Da, Dv, Dg: --d-w/--d-a/--d-v/--d-g, default the spec 1.2 rule (32 each at C = 128).
The v6 generator is unchanged (same random stream), so v6 cases are byte-identical to before.

Example:
  python3 make_case.py --out /tmp/case --seed 1 --layers 2 --embd 128 --head-size 64 --ffn 448 \
      --vocab 1000 --batch 2 --tlen 23 --ignore 3 --lora-r 8 --store-dtype bf16
  python3 make_case.py --version 7 --out /tmp/case7 --seed 1 --tlen 23 --d-w 48 --d-g 64
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import Dict

import torch

import rwkv5_torch as R5
import rwkv7_torch as R7
from rwkv6_torch import Config, lora_target_modules

Tensor = torch.Tensor


def _dims_of(module: str, cfg: Config):
    """(in, out) of a target linear."""
    C, A, Fd = cfg.n_embd, cfg.dim_att, cfg.dim_ffn
    kind = module.split(".", 2)[2]
    return {
        "att.receptance": (C, A), "att.key": (C, A), "att.value": (C, A), "att.gate": (C, A),
        "att.output": (A, C), "ffn.key": (C, Fd), "ffn.receptance": (C, C), "ffn.value": (Fd, C),
    }[kind]


def random_model(cfg: Config, g: torch.Generator) -> Dict[str, Tensor]:
    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float64) * std

    def uniform(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

    sd = {}
    for name, shp in cfg.expected_shapes().items():
        leaf = name.split(".")[-1]
        if name in ("emb.weight",):
            t = normal(shp, 0.5)
        elif name == "head.weight":  # logits std ~3, max ~10 (like real models), so L2Wrap is visible
            t = normal(shp, 3.0 / cfg.n_embd ** 0.5)
        elif ".ln" in name or name.startswith("ln_out"):
            t = 1.0 + normal(shp, 0.1) if leaf == "weight" else normal(shp, 0.05)
        elif "time_maa_w1" in name:
            t = normal(shp, 1.0 / cfg.n_embd ** 0.5)
        elif "time_maa_w2" in name:
            t = normal(shp, 0.3 / cfg.d_mix ** 0.5)
        elif "time_maa_" in name:
            t = uniform(shp, 0.05, 0.95)
        elif "time_decay_w1" in name:
            t = normal(shp, 1.0 / cfg.n_embd ** 0.5)
        elif "time_decay_w2" in name:
            t = normal(shp, 0.5 / cfg.d_decay ** 0.5)
        elif name.endswith("time_decay"):
            t = uniform(shp, -6.0, -0.5)
        elif "time_faaaa" in name:
            t = normal(shp, 0.3)
        elif leaf == "weight":  # the 8 block linears [out, in]
            t = normal(shp, 1.0 / shp[1] ** 0.5)
        else:
            raise AssertionError(name)
        sd[name] = t.float()
    return sd


def random_adapter(cfg: Config, r: int, g: torch.Generator, base: Dict[str, Tensor] = None,
                   overrides: bool = False) -> Dict[str, Tensor]:
    ad = {}
    for m in lora_target_modules(cfg.n_layer):
        fin, fout = _dims_of(m, cfg)
        bound = 1.0 / fin ** 0.5  # kaiming-uniform(a=sqrt 5) bound of the real init (spec 3.2)
        ad[m + ".lora_A"] = ((torch.rand(r, fin, generator=g, dtype=torch.float64) * 2 - 1) * bound).float()
        ad[m + ".lora_B"] = (torch.randn(fout, r, generator=g, dtype=torch.float64) * 0.03).float()
    if overrides:
        for name, t in base.items():
            if "time" in name or "ln" in name:
                # a visibly different value; keep maa in (0,1), decay negative
                if re.search(r"time_maa_[xwkvrg]$", name):
                    nt = (t + 0.05 * torch.randn(t.shape, generator=g)).clamp(0.02, 0.98)
                else:
                    nt = t + 0.05 * torch.randn(t.shape, generator=g) * (t.abs().mean() + 1e-3)
                ad[name] = nt.float()
    return ad


# ----------------------------------------------------------------------------------------------
# RWKV-5 and RWKV-7 (own generators; the v6 ones above are left exactly as they were)
# ----------------------------------------------------------------------------------------------
def _normal(g, shape, std):
    return torch.randn(shape, generator=g, dtype=torch.float64) * std


def _uniform(g, shape, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _common_tensor(name: str, shp, cfg, g):
    """emb / head / LayerNorm tensors, or None."""
    leaf = name.split(".")[-1]
    if name == "emb.weight":
        return _normal(g, shp, 0.5)
    if name == "head.weight":  # logits std ~3 (like real models), so L2Wrap is visible
        return _normal(g, shp, 3.0 / cfg.n_embd ** 0.5)
    if ".ln" in name or name.startswith("ln_out"):
        return 1.0 + _normal(g, shp, 0.1) if leaf == "weight" else _normal(g, shp, 0.05)
    return None


def random_model_v5(cfg: "R5.Config", g: torch.Generator) -> Dict[str, Tensor]:
    sd = {}
    for name, shp in cfg.expected_shapes().items():
        t = _common_tensor(name, shp, cfg, g)
        if t is not None:
            pass
        elif "time_mix_" in name:
            t = _uniform(g, shp, 0.05, 0.95)
        elif name.endswith("time_decay"):
            t = _uniform(g, shp, -6.0, 0.5)
        elif name.endswith("time_faaaa"):
            t = _normal(g, shp, 0.3)
        elif name.endswith(".weight"):  # the 8 block linears [out, in]
            t = _normal(g, shp, 1.0 / shp[1] ** 0.5)
        else:
            raise AssertionError(name)
        sd[name] = t.float()
    return sd


def random_model_v7(cfg: "R7.Config", g: torch.Generator) -> Dict[str, Tensor]:
    C = cfg.n_embd
    width = {"w": cfg.d_w, "a": cfg.d_a, "v": cfg.d_v, "g": cfg.d_g}
    sd = {}
    for name, shp in cfg.expected_shapes().items():
        leaf = name.split(".")[-1]
        t = _common_tensor(name, shp, cfg, g)
        if t is not None:
            pass
        elif leaf.startswith("x_"):
            t = _uniform(g, shp, 0.05, 0.95)
        elif leaf == "w0":
            t = _uniform(g, shp, -6.0, 1.0)
        elif leaf in ("a0", "v0"):
            t = _uniform(g, shp, -1.0, 1.0)
        elif leaf in ("w1", "a1", "v1", "g1"):
            t = _normal(g, shp, 1.0 / C ** 0.5)
        elif leaf in ("w2", "a2", "v2"):
            t = _normal(g, shp, 0.5 / width[leaf[0]] ** 0.5)
        elif leaf == "g2":
            t = _normal(g, shp, 2.0 / width["g"] ** 0.5)
        elif leaf == "k_k":
            t = _uniform(g, shp, 0.5, 1.2)
        elif leaf == "k_a":
            t = _uniform(g, shp, 0.3, 1.5)
        elif leaf == "r_k":
            t = _normal(g, shp, 0.3)
        elif leaf == "weight":  # the 6 block linears [out, in]
            t = _normal(g, shp, 1.0 / shp[1] ** 0.5)
        else:
            raise AssertionError(name)
        sd[name] = t.float()
    return sd


def random_adapter_versioned(cfg, r: int, g: torch.Generator, base: Dict[str, Tensor] = None,
                             overrides: bool = False) -> Dict[str, Tensor]:
    """LoRA for the target linears of cfg's version (+ overrides), same recipe as random_adapter."""
    ad = {}
    dims = cfg.linear_dims()
    for m in cfg.lora_target_modules():
        fin, fout = dims[m.split(".", 2)[2]]
        bound = 1.0 / fin ** 0.5
        ad[m + ".lora_A"] = ((torch.rand(r, fin, generator=g, dtype=torch.float64) * 2 - 1) * bound).float()
        ad[m + ".lora_B"] = (torch.randn(fout, r, generator=g, dtype=torch.float64) * 0.03).float()
    if overrides:
        linears = {m + ".weight" for m in cfg.lora_target_modules()}
        for name, t in base.items():
            if not name.startswith("blocks.") and not name.startswith("ln_out"):
                continue  # emb / head stay
            if name in linears:
                continue
            if cfg.version == 5 and not ("time" in name or "ln" in name):
                continue
            leaf = name.split(".")[-1]
            if leaf.startswith("time_mix_") or leaf.startswith("x_"):   # keep mixes in (0,1)
                nt = (t + 0.05 * torch.randn(t.shape, generator=g)).clamp(0.02, 0.98)
            else:
                nt = t + 0.05 * torch.randn(t.shape, generator=g) * (t.abs().mean() + 1e-3)
            ad[name] = nt.float()
    return ad


def random_batch(cfg: Config, B: int, T: int, n_ignore: int, g: torch.Generator):
    inputs = torch.randint(0, cfg.vocab, (B, T), generator=g, dtype=torch.int64)
    targets = torch.randint(0, cfg.vocab, (B, T), generator=g, dtype=torch.int64)
    n_ignore = min(n_ignore, B * T - 1)  # keep at least one real target
    if n_ignore > 0:
        pos = torch.randperm(B * T, generator=g)[:n_ignore]
        flat = targets.view(-1)
        flat[pos] = -100
    return inputs.to(torch.int32), targets.to(torch.int32)


def _store(sd: Dict[str, Tensor], dtype: torch.dtype) -> Dict[str, Tensor]:
    return {k: v.to(dtype).contiguous().clone() for k, v in sd.items()}


def make_case(out: str, seed: int = 0, layers: int = 2, embd: int = 128, head_size: int = 64,
              ffn: int = 448, vocab: int = 1000, d_mix: int = 32, d_decay: int = 64, batch: int = 1,
              tlen: int = 32, ignore: int = 0, lora_r: int = 8, store_dtype: str = "fp32",
              adapter_overrides: bool = False, version: int = 6, d_w: int = None, d_a: int = None,
              d_v: int = None, d_g: int = None) -> Dict:
    """version 6 (default): exactly the historical generator.  version 5: ffn/d_mix/d_decay as given
    (d_mix/d_decay unused).  version 7: F = 4C (ffn ignored), LoRA widths d_w/d_a/d_v/d_g (None = spec rule)."""
    assert embd % head_size == 0
    H = embd // head_size
    g = torch.Generator().manual_seed(seed)
    extra_meta = {}
    if version == 6:
        cfg = Config(layers, embd, embd, ffn, vocab, H, head_size, d_mix, d_decay)
        model = random_model(cfg, g)
        adapter = random_adapter(cfg, lora_r, g, model, adapter_overrides)
    elif version == 5:
        cfg = R5.Config(layers, embd, embd, ffn, vocab, H, head_size)
        model = random_model_v5(cfg, g)
        adapter = random_adapter_versioned(cfg, lora_r, g, model, adapter_overrides)
    elif version == 7:
        dw, da, dv, dg = R7.default_lora_dims(embd)
        cfg = R7.Config(layers, embd, 4 * embd, vocab, H, head_size, d_w or dw, d_a or da, d_v or dv, d_g or dg)
        ffn = cfg.dim_ffn
        model = random_model_v7(cfg, g)
        adapter = random_adapter_versioned(cfg, lora_r, g, model, adapter_overrides)
        extra_meta = dict(d_w=cfg.d_w, d_a=cfg.d_a, d_v=cfg.d_v, d_g=cfg.d_g)
    else:
        raise ValueError(f"version {version}: only 5, 6 and 7 exist")
    inputs, targets = random_batch(cfg, batch, tlen, ignore, g)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[store_dtype]
    os.makedirs(out, exist_ok=True)
    torch.save(_store(model, dt), os.path.join(out, "model.pth"))
    torch.save(_store(adapter, dt), os.path.join(out, "adapter.pth"))
    from safetensors.torch import save_file
    save_file({"inputs": inputs.contiguous(), "targets": targets.contiguous()}, os.path.join(out, "batch.safetensors"))
    meta = dict(version=version, seed=seed, n_layer=layers, n_embd=embd, head_size=head_size, dim_ffn=ffn,
                vocab=vocab, B=batch, T=tlen, ignored=int((targets == -100).sum()),
                lora_r=lora_r, store_dtype=store_dtype, adapter_overrides=adapter_overrides)
    if version == 6:
        meta.update(d_mix=d_mix, d_decay=d_decay)
    meta.update(extra_meta)
    with open(os.path.join(out, "case.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--version", type=int, choices=[5, 6, 7], default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=128)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=448)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--d-mix", type=int, default=32)
    ap.add_argument("--d-decay", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tlen", type=int, default=32)
    ap.add_argument("--ignore", type=int, default=0, help="number of targets set to -100")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--store-dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--adapter-overrides", action="store_true")
    ap.add_argument("--d-w", type=int, default=None, help="v7 decay LoRA width (default: spec 1.2 rule)")
    ap.add_argument("--d-a", type=int, default=None, help="v7 a (in-context LR) LoRA width")
    ap.add_argument("--d-v", type=int, default=None, help="v7 value-residual LoRA width")
    ap.add_argument("--d-g", type=int, default=None, help="v7 gate LoRA width")
    a = ap.parse_args()
    meta = make_case(a.out, a.seed, a.layers, a.embd, a.head_size, a.ffn, a.vocab, a.d_mix, a.d_decay,
                     a.batch, a.tlen, a.ignore, a.lora_r, a.store_dtype, a.adapter_overrides,
                     a.version, a.d_w, a.d_a, a.d_v, a.d_g)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
