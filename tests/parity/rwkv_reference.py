#!/usr/bin/env python3
"""Version dispatch over the PyTorch references: RWKV-5 (rwkv5_torch.py), RWKV-6 (rwkv6_torch.py),
RWKV-7 (rwkv7_torch.py).

    detect_version(sd)        7 if blocks.0.att.r_k, 6 if blocks.0.att.time_maa_x, 5 if blocks.0.att.time_mix_k
                              (spec 1.3), else ValueError
    module_for(version)       the reference module of that version
    compute_reference(...)    logits, loss (no L2Wrap in the value) and the gradient (with L2Wrap) of every
                              trainable tensor; v6 goes to rwkv6_torch.compute_reference unchanged, v5/v7
                              use the same procedure with their own Config and model class

Command line: the same arguments as parity_dump (it ignores --backend), any version:
    python3 rwkv_reference.py --model model.pth --adapter adapter.pth --lora-r 8 --lora-alpha 32 \
        --train-parts "time,ln" --batch batch.safetensors --out ref.safetensors [--device cpu|cuda] [--dtype float64|float32]
so `run_parity.py --dump "python3 tests/parity/rwkv_reference.py --dtype float32"` checks the harness
on the cases of every version.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rwkv5_torch as R5  # noqa: E402
import rwkv6_torch as R6  # noqa: E402
import rwkv7_torch as R7  # noqa: E402

Tensor = torch.Tensor
MODULES = {5: R5, 6: R6, 7: R7}
MODEL_CLASSES = {5: R5.RWKV5, 6: R6.RWKV6, 7: R7.RWKV7}


def detect_version(sd: Dict[str, Tensor]) -> int:
    if "blocks.0.att.r_k" in sd:
        return 7
    if "blocks.0.att.time_maa_x" in sd:
        return 6
    if "blocks.0.att.time_mix_k" in sd:
        return 5
    raise ValueError("not an RWKV checkpoint of a known version (no blocks.0.att.r_k, time_maa_x or time_mix_k)")


def module_for(version: int):
    return MODULES[version]


def compute_reference(model_sd: Dict[str, Tensor], adapter_sd: Dict[str, Tensor], inputs: Tensor,
                      targets: Tensor, lora_r: int, lora_alpha: float, train_parts: List[str],
                      dtype: torch.dtype = torch.float64, device: str = "cpu", l2wrap: bool = True,
                      version: int = None) -> Dict[str, Tensor]:
    """Returns {"logits": [B,T,V], "loss": [], "grad.NAME": ...} (in `dtype`, on CPU) for a checkpoint of
    any supported version (detected from the keys after the adapter's overrides unless given)."""
    lora_raw, overrides = R6.split_adapter(adapter_sd)
    base = dict(model_sd)
    base.update(overrides)
    ver = version or detect_version(base)
    if ver == 6:
        return R6.compute_reference(model_sd, adapter_sd, inputs, targets, lora_r, lora_alpha, train_parts,
                                    dtype, device, l2wrap)
    mod = MODULES[ver]
    cfg = mod.Config.from_state_dict(base)
    want = cfg.expected_shapes()
    for name, shp in want.items():
        if name not in base:
            raise KeyError(f"checkpoint lacks {name}")
        if tuple(base[name].shape) != shp:
            raise ValueError(f"{name}: shape {tuple(base[name].shape)} != {shp}")
    extra = [n for n in base if n not in want and not n.endswith(".att.time_state")]
    if extra:
        raise KeyError(f"RWKV-{ver} checkpoint has unexpected tensors, e.g. {extra[:3]}")
    targets_ok = set(cfg.lora_target_modules())
    for name, t in lora_raw.items():
        if name.rsplit(".", 1)[0] not in targets_ok:
            raise KeyError(f"{name}: not a LoRA target linear of RWKV-{ver} (spec 3.1)")
        if name.endswith(".lora_A") and t.shape[0] != lora_r:
            raise ValueError(f"{name}: rank {t.shape[0]} != --lora-r {lora_r}")

    names = R6.trainable_names(base.keys(), lora_raw.keys(), train_parts)
    params = {k: v.detach().to(device=device, dtype=dtype).clone() for k, v in base.items()}
    lora = {k: v.detach().to(device=device, dtype=dtype).clone() for k, v in lora_raw.items()}
    leaves = {}
    for n in names:
        t = params[n] if n in params else lora[n]
        t.requires_grad_(True)
        leaves[n] = t
    model = MODEL_CLASSES[ver](cfg, params, lora, lora_alpha / lora_r)
    logits = model.forward(inputs.to(device=device).long())
    loss = R6.loss_with_l2wrap(logits, targets.to(device=device).long(), l2wrap=l2wrap)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    out = {"logits": logits.detach().cpu(), "loss": loss.detach().cpu().reshape(())}
    for n, g in zip(names, grads):
        out["grad." + n] = (torch.zeros_like(leaves[n]) if g is None else g).detach().cpu()
    return out


def main() -> None:
    R6.main(compute_reference, __doc__)


if __name__ == "__main__":
    main()
