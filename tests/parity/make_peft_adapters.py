#!/usr/bin/env python3
"""Write small adapter files in RWKV-PEFT's formats for every PEFT method, and the logits that
the spec says a model with each adapter attached produces, computed by the independent PyTorch
reference (rwkv6_torch.py, float64). The C test tests/test_peft.c (test_reference_adapters) loads
them and compares its own logits, so the comparison needs no torch at test time.

Files (default --out tests/data/peft):
  base.pth            tiny RWKV-6 checkpoint (L2, C64, 2 heads of 32, F224, V50, Dm8, Dd16), bf16
  lora.pth            lora_A [4,in] / lora_B [out,4] (bf16, like DeepSpeed saves them) + time/ln
                      overrides (train_parts "time ln", spec 3.7); alpha 8 -> scaling 2
  init_pissa.pth      PiSSA init of base.pth: "<module>.init_lora_A" [4,in], ".init_lora_B" [out,4],
                      fp32 (torch.svd_lowrank, niter 4, as the reference's pissa_init)
  pissa.pth           "trained" lora_A/lora_B (init + noise, fp32) + overrides (bf16); forward with
                      W_res = W - B0 A0, no scaling (spec 3.3)
  bone.pth            Bone [24, out] (fp32) under the Nov-2024 key "bone" (64 % 24 != 0: padded group)
                      + overrides (bf16)
  bat.pth             Bat [in/16, 16, 16] (fp32) under the 2025 key "disha" + overrides (bf16)
  state.pth           blocks.L.att.time_state [2,32,32] only (spec 3.5, 3.7)
  batch.safetensors   "inputs" int32 [2, 8]
  expected.safetensors  "logits.<base|lora|pissa|bone|bat|state>" float32 [2, 8, 50]

Regenerate (deterministic for a seed; needs torch and safetensors):
  python3 tests/parity/make_peft_adapters.py --out tests/data/peft
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rwkv6_torch as R  # noqa: E402
from make_case import _dims_of, random_adapter, random_model  # noqa: E402

Tensor = torch.Tensor
D64 = torch.float64


def cfg_tiny() -> R.Config:
    return R.Config(n_layer=2, n_embd=64, dim_att=64, dim_ffn=224, vocab=50, n_head=2, head_size=32, d_mix=8, d_decay=16)


def overrides_only(ad: Dict[str, Tensor]) -> Dict[str, Tensor]:
    return {k: v for k, v in ad.items() if not (k.endswith(".lora_A") or k.endswith(".lora_B"))}


def logits_of(cfg, base: Dict[str, Tensor], adapter: Dict[str, Tensor], inputs: Tensor, lora_scale: float = 1.0,
              w_minus: Dict[str, Tensor] = None) -> Tensor:
    """Spec semantics: adapter keys that are base keys overwrite them (3.8); lora_*/bone/disha are the
    adapter's own tensors; time_state keys are the initial state. Everything in float64."""
    params = {k: v.to(D64) for k, v in base.items()}
    lora, extra = {}, {}
    for k, v in adapter.items():
        v = v.to(D64)
        if k.endswith(".lora_A") or k.endswith(".lora_B"):
            lora[k] = v
        elif k.endswith(".bone") or k.endswith(".disha"):
            extra[k] = v
        else:
            params[k] = v
    for k, v in (w_minus or {}).items():  # PiSSA: W_res = W - B0 A0
        params[k] = params[k] - v
    with torch.no_grad():
        return R.RWKV6(cfg, params, lora, lora_scale, extra).forward(inputs.long()).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "peft"))
    ap.add_argument("--seed", type=int, default=4)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    cfg = cfg_tiny()
    g = torch.Generator().manual_seed(a.seed)
    base = {k: v.to(torch.bfloat16) for k, v in random_model(cfg, g).items()}  # what the file holds
    inputs = torch.randint(0, cfg.vocab, (2, 8), generator=g, dtype=torch.int64).to(torch.int32)
    modules = R.lora_target_modules(cfg.n_layer)
    save = lambda d, name: torch.save({k: v.contiguous().clone() for k, v in d.items()}, os.path.join(a.out, name))
    expected = {"logits.base": logits_of(cfg, base, {}, inputs)}

    # LoRA (r 4, alpha 8), stored in bf16 as DeepSpeed does; expected logits from the stored values
    lora = {k: v.to(torch.bfloat16) for k, v in random_adapter(cfg, 4, g, base={k: v.float() for k, v in base.items()},
                                                               overrides=True).items()}
    save(lora, "lora.pth")
    expected["logits.lora"] = logits_of(cfg, base, lora, inputs, lora_scale=8 / 4)

    # PiSSA (r 4): init by torch's randomized SVD on the fp32 weight, trained = init + noise
    torch.manual_seed(a.seed)
    init, pissa, w_minus = {}, {}, {}
    for m in modules:
        W = base[m + ".weight"].float()
        U, S, V = torch.svd_lowrank(W, q=4, niter=4)
        A0 = torch.diag(S.sqrt()) @ V.t()
        B0 = U @ torch.diag(S.sqrt())
        init[m + ".init_lora_A"], init[m + ".init_lora_B"] = A0.float(), B0.float()
        w_minus[m + ".weight"] = B0.to(D64) @ A0.to(D64)
        pissa[m + ".lora_A"] = (A0 + 0.05 * torch.randn(A0.shape, generator=g)).float()
        pissa[m + ".lora_B"] = (B0 + 0.05 * torch.randn(B0.shape, generator=g)).float()
    pissa.update({k: v.to(torch.bfloat16) for k, v in overrides_only(random_adapter(cfg, 1, g, {k: v.float() for k, v in base.items()},
                                                                         True)).items()})
    save(init, "init_pissa.pth")
    save(pissa, "pissa.pth")
    expected["logits.pissa"] = logits_of(cfg, base, pissa, inputs, 1.0, w_minus)

    # Bone (r 24, key "bone") and Bat (r 16, key "disha"), fp32, with bf16 overrides
    for name, r, key in (("bone", 24, "bone"), ("bat", 16, "disha")):
        ad = {}
        for m in modules:
            fin, fout = _dims_of(m, cfg)
            shape = (r, fout) if name == "bone" else (fin // r, r, r)
            ad[f"{m}.{key}"] = (0.05 * torch.randn(shape, generator=g, dtype=D64)).float()
        ad.update({k: v.to(torch.bfloat16) for k, v in overrides_only(random_adapter(cfg, 1, g, {k: v.float() for k, v in base.items()},
                                                                          True)).items()})
        save(ad, f"{name}.pth")
        expected[f"logits.{name}"] = logits_of(cfg, base, ad, inputs)

    # state tuning: only time_state [H, N(value), N(key)]
    st = {f"blocks.{l}.att.time_state": (0.5 * torch.randn(cfg.n_head, cfg.head_size, cfg.head_size, generator=g,
                                                           dtype=D64)).to(torch.bfloat16) for l in range(cfg.n_layer)}
    save(st, "state.pth")
    expected["logits.state"] = logits_of(cfg, base, st, inputs)

    save(base, "base.pth")
    from safetensors.torch import save_file
    save_file({"inputs": inputs.contiguous()}, os.path.join(a.out, "batch.safetensors"))
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(a.out, "expected.safetensors"))
    for k, v in expected.items():
        if k != "logits.base":
            d = (v - expected["logits.base"]).abs().max().item()
            print(f"{k}: max |logits - base logits| = {d:.4f}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
