#!/usr/bin/env python3
"""Write a seeded random RWKV-6 (x060) parity case.

Files written into --out DIR:
  model.pth          torch.save of a plain dict with the exact spec 1.2 keys/shapes (fp32 or bf16)
  adapter.pth        LoRA tensors "<module>.lora_A" [r,in] and "<module>.lora_B" [out,r] for the 8 target
                     linears of every block, both random and non-zero; with --adapter-overrides it also
                     holds perturbed copies of every time_* and ln* tensor (real adapters do, spec 3.7;
                     they overwrite the base values)
  batch.safetensors  "inputs", "targets": int32 [B,T]; --ignore N targets are set to -100

Scales are chosen so every tensor matters: linears ~ N(0, 1/in), maa in (0,1), time_decay in (-6,-0.5),
small time_faaaa, LN weights ~1, small biases, decay/maa low-rank matrices large enough to move things.

Example:
  python3 make_case.py --out /tmp/case --seed 1 --layers 2 --embd 128 --head-size 64 --ffn 448 \
      --vocab 1000 --batch 2 --tlen 23 --ignore 3 --lora-r 8 --store-dtype bf16
"""
from __future__ import annotations

import argparse
import json
import os
import re
from typing import Dict

import torch

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
              adapter_overrides: bool = False) -> Dict:
    assert embd % head_size == 0
    cfg = Config(layers, embd, embd, ffn, vocab, embd // head_size, head_size, d_mix, d_decay)
    g = torch.Generator().manual_seed(seed)
    model = random_model(cfg, g)
    adapter = random_adapter(cfg, lora_r, g, model, adapter_overrides)
    inputs, targets = random_batch(cfg, batch, tlen, ignore, g)
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[store_dtype]
    os.makedirs(out, exist_ok=True)
    torch.save(_store(model, dt), os.path.join(out, "model.pth"))
    torch.save(_store(adapter, dt), os.path.join(out, "adapter.pth"))
    from safetensors.torch import save_file
    save_file({"inputs": inputs.contiguous(), "targets": targets.contiguous()}, os.path.join(out, "batch.safetensors"))
    meta = dict(seed=seed, n_layer=layers, n_embd=embd, head_size=head_size, dim_ffn=ffn, vocab=vocab,
                d_mix=d_mix, d_decay=d_decay, B=batch, T=tlen, ignored=int((targets == -100).sum()),
                lora_r=lora_r, store_dtype=store_dtype, adapter_overrides=adapter_overrides)
    with open(os.path.join(out, "case.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
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
    a = ap.parse_args()
    meta = make_case(a.out, a.seed, a.layers, a.embd, a.head_size, a.ffn, a.vocab, a.d_mix, a.d_decay,
                     a.batch, a.tlen, a.ignore, a.lora_r, a.store_dtype, a.adapter_overrides)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
