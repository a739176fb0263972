#!/usr/bin/env python3
"""Independent PyTorch reference of RWKV-5 (x052) + LoRA, for parity tests of librwkvpeft.

Written from /work/shared/spec/rwkv-peft-reference.md (sections 1.1, 1.2, 1.3, 1.4, 1.7, 2.2, 2.3,
3.1, 3.2, 3.6).  Nothing is imported from RWKV-PEFT or RWKV-LM.  The pieces that are the same in
every version (LayerNorm, per-head GroupNorm, token shift, the WKV5/6 loop, CE + L2Wrap, LoRA linear,
train_parts selection) are imported from rwkv6_torch.py, not copied.

What differs from v6 (spec 1.4):
  * static mixes that weigh the *current* token:  x* = x (.) mix_* + shift(x) (.) (1 - mix_*);
  * a time-invariant decay per (head, key channel):  d = exp(-exp(time_decay)),  time_decay [H,N];
  * GroupNorm of y / head_size_divisor (8) with eps 1e-5 (= GroupNorm of y with eps 6.4e-4);
  * the channel mix uses the same static mixes (ffn.time_mix_k / time_mix_r).
No state tuning exists for v5 (spec 1.8), but an optional time_state is honoured like in v6.

Public pieces:
    Config.from_state_dict(sd)          hyper-parameters from shapes (spec 1.3)
    wkv5(r, k, v, d, u, s0=None)        WKV5 = WKV6 loop with d [H,N] constant over time
    wkv5_decay_grad_formula(...)        spec 2.3 "Decay (v5, per channel)" formula, for the self-checks
    RWKV5(cfg, params, lora, scale)     functional model: forward(idx) -> logits
    lora_target_modules(n_layer)        the 8 target linears per block (spec 3.1; same as v6)
Use rwkv_reference.py for compute_reference / the command line (it dispatches on the version).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

import rwkv6_torch as R6
from rwkv6_torch import group_norm_heads, token_shift

Tensor = torch.Tensor

VERSION = 5
HEAD_SIZE_DIVISOR = 8
GN_EPS_V5 = 1e-5  # applied to y / HEAD_SIZE_DIVISOR (spec 1.4)

ATT_TARGETS = R6.ATT_TARGETS  # receptance, key, value, output, gate (spec 3.1: v5 = v6)
FFN_TARGETS = R6.FFN_TARGETS  # key, receptance, value
lora_target_modules = R6.lora_target_modules
MIX_SLOTS = ("k", "v", "r", "g")


@dataclass
class Config:
    n_layer: int
    n_embd: int     # C
    dim_att: int    # A
    dim_ffn: int    # F
    vocab: int      # V
    n_head: int     # H
    head_size: int  # N

    version = VERSION

    @staticmethod
    def from_state_dict(sd: Dict[str, Tensor]) -> "Config":
        layers = {int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
        if not layers or "blocks.0.att.time_mix_k" not in sd:
            raise ValueError("not an RWKV-5 (x052) state dict")
        V, C = sd["emb.weight"].shape
        A = sd["blocks.0.att.key.weight"].shape[0]
        Fd = sd["blocks.0.ffn.key.weight"].shape[0]
        H, N = sd["blocks.0.att.time_faaaa"].shape
        assert H * N == A, "time_faaaa [H,N] must cover dim_att"
        return Config(max(layers) + 1, C, A, Fd, V, H, N)

    def linear_dims(self) -> Dict[str, Tuple[int, int]]:
        """(in, out) of each target linear kind."""
        C, A, Fd = self.n_embd, self.dim_att, self.dim_ffn
        return {"att.receptance": (C, A), "att.key": (C, A), "att.value": (C, A), "att.gate": (C, A),
                "att.output": (A, C), "ffn.key": (C, Fd), "ffn.receptance": (C, C), "ffn.value": (Fd, C)}

    def lora_target_modules(self):
        return lora_target_modules(self.n_layer)

    def expected_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Key -> shape of a base x052 checkpoint (spec 1.2)."""
        C, A, Fd, V, H, N = self.n_embd, self.dim_att, self.dim_ffn, self.vocab, self.n_head, self.head_size
        def block(s, l, p):  # this version's tensors of block l (key prefix p)
            for m in MIX_SLOTS:
                s[p + f"att.time_mix_{m}"] = (1, 1, C)
            s[p + "att.time_decay"] = (H, N)
            s[p + "att.time_faaaa"] = (H, N)
            for kind, (fin, fout) in self.linear_dims().items():
                s[p + kind + ".weight"] = (fout, fin)
            s[p + "att.ln_x.weight"] = (A,)
            s[p + "att.ln_x.bias"] = (A,)
            s[p + "ffn.time_mix_k"] = (1, 1, C)
            s[p + "ffn.time_mix_r"] = (1, 1, C)
        return R6.checkpoint_shapes(self.n_layer, C, V, block)


# ----------------------------------------------------------------------------------------------
def wkv5(r: Tensor, k: Tensor, v: Tensor, d: Tensor, u: Tensor, s0: Optional[Tensor] = None) -> Tensor:
    """WKV5 (spec 2.2): the v5/v6 loop with a decay d [H,N] (key channel i) that is the same at every t.

    r, k, v [B,T,H,N]; u [H,N]; s0 optional [B or 1, H, N(key i), N(value j)]. Returns y [B,T,H,N]."""
    B, T, H, N = r.shape
    return R6.wkv6(r, k, v, d[None, None].expand(B, T, H, N), u, s0)


def wkv5_decay_grad_formula(r: Tensor, k: Tensor, v: Tensor, d: Tensor, gy: Tensor) -> Tensor:
    """spec 2.3, v5: dL/d log d[i] = sum_t r_t[i] sum_j gy_t[j] sum_{tau<t} (t-1-tau) d[i]^(t-1-tau) k_tau[i] v_tau[j],
    summed over the batch -> [H,N] (multiply by -exp(time_decay) to get dL/d time_decay)."""
    B, T, H, N = r.shape
    out = torch.zeros(H, N, dtype=r.dtype, device=r.device)
    for t in range(T):
        for tau in range(t):
            e = t - 1 - tau
            vg = (v[:, tau] * gy[:, t]).sum(-1)                       # [B,H]  sum_j v_tau[j] gy_t[j]
            out = out + (r[:, t] * k[:, tau] * vg[..., None]).sum(0) * e * d ** e
    return out


class RWKV5(R6.RWKV6):
    """Functional RWKV-5 over a dict of tensors (the skeleton, LoRA/Bone/Bat linear of RWKV6 are reused;
    time_mix and channel_mix are the v5 ones)."""

    def time_mix(self, l: int, x: Tensor) -> Tensor:
        cfg, p = self.cfg, self.p
        pre = f"blocks.{l}.att."
        B, T, C = x.shape
        H, N = cfg.n_head, cfg.head_size
        sx = token_shift(x)
        xs = {m: x * p[pre + f"time_mix_{m}"] + sx * (1 - p[pre + f"time_mix_{m}"]) for m in MIX_SLOTS}
        r = self.linear(xs["r"], pre + "receptance")
        k = self.linear(xs["k"], pre + "key")
        v = self.linear(xs["v"], pre + "value")
        g = F.silu(self.linear(xs["g"], pre + "gate"))
        d = torch.exp(-torch.exp(p[pre + "time_decay"]))                    # [H,N]
        shp = (B, T, H, N)
        s0 = p.get(pre + "time_state")  # [H, value, key] -> [1, H, key, value]
        if s0 is not None:
            s0 = s0.transpose(-1, -2)[None]
        y = wkv5(r.reshape(shp), k.reshape(shp), v.reshape(shp), d, p[pre + "time_faaaa"], s0)
        o = group_norm_heads(y.reshape(B, T, cfg.dim_att) / HEAD_SIZE_DIVISOR, H,
                             p[pre + "ln_x.weight"], p[pre + "ln_x.bias"], eps=GN_EPS_V5)
        return self.linear(o * g, pre + "output")

    def channel_mix(self, l: int, x: Tensor) -> Tensor:
        p = self.p
        pre = f"blocks.{l}.ffn."
        sx = token_shift(x)
        xk = x * p[pre + "time_mix_k"] + sx * (1 - p[pre + "time_mix_k"])
        xr = x * p[pre + "time_mix_r"] + sx * (1 - p[pre + "time_mix_r"])
        kk = torch.relu(self.linear(xk, pre + "key")) ** 2
        return torch.sigmoid(self.linear(xr, pre + "receptance")) * self.linear(kk, pre + "value")
