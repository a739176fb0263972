#!/usr/bin/env python3
"""Independent PyTorch reference of RWKV-7 (x070, RWKV-PEFT HEAD) + LoRA, for parity tests of librwkvpeft.

Written from /work/shared/spec/rwkv-peft-reference.md (sections 1.1, 1.2, 1.3, 1.6, 1.7, 1.8, 2.4,
3.1, 3.2, 3.6).  Nothing is imported from RWKV-PEFT, RWKV-LM or fla.  The version-independent pieces
(LayerNorm, per-head GroupNorm, token shift, CE + L2Wrap, the LoRA/Bone/Bat linear, train_parts
selection) are imported from rwkv6_torch.py.  The WKV7 recurrence is a plain loop over time and
autograd differentiates through it.

Time mix (spec 1.6), delta = shift(x) - x, x* = x + delta (.) x_*  for * in r,w,k,v,a,g:
    r, k, v = xr Wr^T, xk Wk^T, xv Wv^T
    w  = -softplus(-(w0 + tanh(xw w1) w2)) - 0.5,      d = exp(-exp(w))      (d >= exp(-e^-0.5) ~ 0.545)
    layer 0: v_first = v;  layer >= 1: v = v + (v_first - v) (.) sigmoid(v0 + (xv v1) v2)
    a  = sigmoid(a0 + (xa a1) a2);   g = sigmoid(xg g1) g2
    kk = L2-normalise per head (k (.) k_k), floor 1e-12;   k = k (.) (1 + (a - 1) (.) k_a)
    y  = WKV7(r, d, k, v, alpha = -kk, beta = kk (.) a)
    y  = GroupNorm_H(y; ln_x, eps 64e-5) + (sum_i r k r_k per head) v
    out = (y (.) g) Wo^T
Channel mix: xk = x + delta (.) x_k;  out = relu(xk Wk^T)^2 Wv^T   (F = 4C, no receptance).
LoRA targets (spec 3.1): att receptance/key/value/output, ffn key/value.

Public pieces:
    Config.from_state_dict(sd)           hyper-parameters from shapes (spec 1.3)
    default_lora_dims(C)                 (Dw, Da, Dv, Dg) by the model-code rule of spec 1.2
    wkv7(r, d, k, v, alpha, beta, s0)    spec 2.4 recurrence, state S[value j][key i], plain loop
    wkv7_matrix_form(...)                the same as explicit products S_{t-1} (diag d_t + alpha_t beta_t^T)
    wkv7_backward_formulas(...)          spec 2.4 backward ("backstepping"), evaluated directly
    RWKV7(cfg, params, lora, scale)      functional model: forward(idx) -> logits
Use rwkv_reference.py for compute_reference / the command line (it dispatches on the version).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

import rwkv6_torch as R6
from rwkv6_torch import group_norm_heads, layer_norm, token_shift

Tensor = torch.Tensor

VERSION = 7
GN_EPS_V7 = 64e-5
L2_FLOOR = 1e-12
DECAY_SHIFT = 0.5  # w = -softplus(-z) - 0.5

ATT_TARGETS = ("receptance", "key", "value", "output")
FFN_TARGETS = ("key", "value")
MIX_SLOTS = ("r", "w", "k", "v", "a", "g")


def lora_target_modules(n_layer: int) -> List[str]:
    """Module paths (without .weight) of the 6 LoRA targets per block (spec 3.1, v7)."""
    return R6.lora_target_modules(n_layer, ATT_TARGETS, FFN_TARGETS)


def default_lora_dims(C: int) -> Tuple[int, int, int, int]:
    """spec 1.2: D = max(32, round(k C^p / 32) 32), (k,p) = (1.8,.5) Dw, Da; (1.3,.5) Dv; (0.6,.8) Dg;
    Dg = 128 when C = 1024.  Python's round (ties to even), as in the model code."""
    f = lambda k, p: max(32, int(round(k * C ** p / 32) * 32))
    dw = f(1.8, 0.5)
    dv = f(1.3, 0.5)
    dg = 128 if C == 1024 else f(0.6, 0.8)
    return dw, dw, dv, dg


@dataclass
class Config:
    n_layer: int
    n_embd: int     # C (= H N)
    dim_ffn: int    # F (4C in every real model)
    vocab: int      # V
    n_head: int     # H
    head_size: int  # N
    d_w: int        # decay LoRA width
    d_a: int        # in-context learning-rate LoRA width
    d_v: int        # value-residual LoRA width (layers >= 1 only)
    d_g: int        # gate LoRA width

    version = VERSION

    @property
    def dim_att(self) -> int:
        return self.n_embd

    @staticmethod
    def from_state_dict(sd: Dict[str, Tensor]) -> "Config":
        layers = {int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
        if not layers or "blocks.0.att.r_k" not in sd:
            raise ValueError("not an RWKV-7 (x070) state dict")
        V, C = sd["emb.weight"].shape
        Fd = sd["blocks.0.ffn.key.weight"].shape[0]
        H, N = sd["blocks.0.att.r_k"].shape
        assert H * N == C, "r_k [H,N] must cover n_embd"
        Dw = sd["blocks.0.att.w1"].shape[1]
        Da = sd["blocks.0.att.a1"].shape[1]
        Dg = sd["blocks.0.att.g1"].shape[1]
        # v1 exists only in layers >= 1; a one-layer model has no value-residual tensors at all
        Dv = sd["blocks.1.att.v1"].shape[1] if "blocks.1.att.v1" in sd else default_lora_dims(C)[2]
        return Config(max(layers) + 1, C, Fd, V, H, N, Dw, Da, Dv, Dg)

    def linear_dims(self) -> Dict[str, Tuple[int, int]]:
        C, Fd = self.n_embd, self.dim_ffn
        return {"att.receptance": (C, C), "att.key": (C, C), "att.value": (C, C), "att.output": (C, C),
                "ffn.key": (C, Fd), "ffn.value": (Fd, C)}

    def lora_target_modules(self):
        return lora_target_modules(self.n_layer)

    def expected_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Key -> shape of a base x070 checkpoint (spec 1.2)."""
        C, Fd, V, H, N = self.n_embd, self.dim_ffn, self.vocab, self.n_head, self.head_size
        def block(s, l, p):  # this version's tensors of block l (key prefix p)
            for m in MIX_SLOTS:
                s[p + f"att.x_{m}"] = (1, 1, C)
            s[p + "att.w0"], s[p + "att.w1"], s[p + "att.w2"] = (1, 1, C), (C, self.d_w), (self.d_w, C)
            s[p + "att.a0"], s[p + "att.a1"], s[p + "att.a2"] = (1, 1, C), (C, self.d_a), (self.d_a, C)
            if l > 0:
                s[p + "att.v0"], s[p + "att.v1"], s[p + "att.v2"] = (1, 1, C), (C, self.d_v), (self.d_v, C)
            s[p + "att.g1"], s[p + "att.g2"] = (C, self.d_g), (self.d_g, C)
            s[p + "att.k_k"] = (1, 1, C)
            s[p + "att.k_a"] = (1, 1, C)
            s[p + "att.r_k"] = (H, N)
            for kind, (fin, fout) in self.linear_dims().items():
                s[p + kind + ".weight"] = (fout, fin)
            s[p + "att.ln_x.weight"] = (C,)
            s[p + "att.ln_x.bias"] = (C,)
            s[p + "ffn.x_k"] = (1, 1, C)
        return R6.checkpoint_shapes(self.n_layer, C, V, block)


# ----------------------------------------------------------------------------------------------
# WKV7 (spec 2.4)
# ----------------------------------------------------------------------------------------------
def wkv7(r: Tensor, d: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor,
         s0: Optional[Tensor] = None, return_state: bool = False):
    """Plain loop, per head with S[value j][key i]:
        sa_t[j]   = sum_i alpha_t[i] S_{t-1}[j][i]
        S_t[j][i] = S_{t-1}[j][i] d_t[i] + sa_t[j] beta_t[i] + v_t[j] k_t[i]
        y_t[j]    = sum_i S_t[j][i] r_t[i]          (state updated before it is read; no bonus inside)
    All inputs [B,T,H,N]; s0 optional [B or 1, H, N(value), N(key)] (time_state layout, spec 1.8).
    Returns y [B,T,H,N] (and the final state when return_state)."""
    B, T, H, N = r.shape
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device)
    if s0 is not None:
        S = S + s0
    ys = []
    for t in range(T):
        sa = torch.einsum("bhji,bhi->bhj", S, alpha[:, t])
        S = S * d[:, t, :, None, :] + sa[..., None] * beta[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
        ys.append(torch.einsum("bhji,bhi->bhj", S, r[:, t]))
    y = torch.stack(ys, dim=1)
    return (y, S) if return_state else y


def wkv7_matrix_form(r: Tensor, d: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor,
                     s0: Optional[Tensor] = None) -> Tensor:
    """Independent formulation for tests: with M_t = diag(d_t) + alpha_t beta_t^T (an N x N matrix over key
    indices) the state after step t is S_t = S_{t-1} M_t + v_t k_t^T (S_{-1} = s0 or 0), hence
        y_t = S_t r_t = sum_{tau <= t} v_tau (k_tau^T M_{tau+1} ... M_t r_t) + s0 M_0 M_1 ... M_t r_t
    (products of M written out as matrix-vector products, no recurrence on S).  O(T^2) matmuls."""
    B, T, H, N = r.shape
    M = torch.diag_embed(d) + alpha[..., :, None] * beta[..., None, :]    # [B,T,H,N(i),N(i')]
    y = torch.zeros_like(r)
    for t in range(T):
        # P_tau = M_{tau+1} ... M_t applied to r_t, built from the right: c = M_t r_t, M_{t-1} c, ...
        c = r[:, t]                                                            # = (empty product) r_t
        acc = torch.zeros(B, H, N, dtype=r.dtype, device=r.device)
        for tau in range(t, -1, -1):
            # here c = M_{tau+1} ... M_t r_t
            acc = acc + (k[:, tau] * c).sum(-1, keepdim=True) * v[:, tau]
            c = torch.einsum("bhij,bhj->bhi", M[:, tau], c)
        if s0 is not None:                                                     # c = M_0 ... M_t r_t (M at steps 0..t)
            acc = acc + torch.einsum("bhji,bhi->bhj", s0.expand(B, H, N, N), c)
        y[:, t] = acc
    return y


def wkv7_backward_formulas(r: Tensor, w: Tensor, k: Tensor, v: Tensor, alpha: Tensor, beta: Tensor,
                           gy: Tensor, s0: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """spec 2.4 backward, evaluated literally: reverse scan with dS accumulated from the future and
    S_{t-1} reconstructed by backstepping S_{t-1} = (S_t - k_t v_t^T - beta_t sa_t^T) / d_t.
    w is the raw decay (d = exp(-exp(w))).  Returns dr (= dq), dw, dk, dv, dalpha, dbeta [B,T,H,N]
    and ds0 [B,H,N(value),N(key)] (the dS left after t = 0)."""
    B, T, H, N = r.shape
    d = torch.exp(-torch.exp(w))
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device)
    if s0 is not None:
        S = S + s0
    sas = []
    for t in range(T):
        sa = torch.einsum("bhji,bhi->bhj", S, alpha[:, t])
        sas.append(sa)
        S = S * d[:, t, :, None, :] + sa[..., None] * beta[:, t, :, None, :] + v[:, t, :, :, None] * k[:, t, :, None, :]
    out = {n: torch.zeros_like(r) for n in ("dr", "dw", "dk", "dv", "dalpha", "dbeta")}
    dS = torch.zeros_like(S)
    for t in range(T - 1, -1, -1):
        out["dr"][:, t] = torch.einsum("bhji,bhj->bhi", S, gy[:, t])
        dS = dS + gy[:, t, :, :, None] * r[:, t, :, None, :]
        Sp = (S - k[:, t, :, None, :] * v[:, t, :, :, None] - beta[:, t, :, None, :] * sas[t][..., None]) / d[:, t, :, None, :]
        dd = (dS * Sp).sum(-2)                                                   # sum over value j
        out["dw"][:, t] = dd * d[:, t] * (-torch.exp(w[:, t]))
        out["dk"][:, t] = torch.einsum("bhji,bhj->bhi", dS, v[:, t])
        out["dv"][:, t] = torch.einsum("bhji,bhi->bhj", dS, k[:, t])
        dsa = torch.einsum("bhji,bhi->bhj", dS, beta[:, t])
        out["dbeta"][:, t] = torch.einsum("bhji,bhj->bhi", dS, sas[t])
        out["dalpha"][:, t] = torch.einsum("bhji,bhj->bhi", Sp, dsa)
        dS = dS * d[:, t, :, None, :] + dsa[..., None] * alpha[:, t, :, None, :]
        S = Sp
    out["ds0"] = dS
    return out


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
def softplus(z: Tensor) -> Tensor:
    """log(1 + e^z), exact for every z (no threshold switch)."""
    return torch.logaddexp(z, torch.zeros_like(z))


class RWKV7(R6.RWKV6):
    """Functional RWKV-7 over a dict of tensors.  params as in spec 1.2 (x070), with an optional
    "blocks.L.att.time_state" [H, N(value), N(key)] = S_0 of every sequence (spec 1.8); lora for any
    subset of the 6 target linears per block; lora_scale = alpha / r.  The LoRA/Bone/Bat linear is RWKV6's."""

    def time_mix(self, l: int, x: Tensor, v_first: Optional[Tensor]):
        cfg, p = self.cfg, self.p
        pre = f"blocks.{l}.att."
        B, T, C = x.shape
        H, N = cfg.n_head, cfg.head_size
        delta = token_shift(x) - x
        xs = {m: x + delta * p[pre + f"x_{m}"] for m in MIX_SLOTS}
        r = self.linear(xs["r"], pre + "receptance")
        k = self.linear(xs["k"], pre + "key")
        v = self.linear(xs["v"], pre + "value")
        w = -softplus(-(p[pre + "w0"] + torch.tanh(xs["w"] @ p[pre + "w1"]) @ p[pre + "w2"])) - DECAY_SHIFT
        d = torch.exp(-torch.exp(w))
        if l == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(p[pre + "v0"] + (xs["v"] @ p[pre + "v1"]) @ p[pre + "v2"])
        a = torch.sigmoid(p[pre + "a0"] + (xs["a"] @ p[pre + "a1"]) @ p[pre + "a2"])
        g = torch.sigmoid(xs["g"] @ p[pre + "g1"]) @ p[pre + "g2"]
        shp = (B, T, H, N)
        kk = (k * p[pre + "k_k"]).reshape(shp)
        kk = kk / torch.linalg.vector_norm(kk, dim=-1, keepdim=True).clamp_min(L2_FLOOR)
        k = k * (1 + (a - 1) * p[pre + "k_a"])
        ah = a.reshape(shp)
        s0 = p.get(pre + "time_state")                                      # [H, value, key]: wkv7's layout
        if s0 is not None:
            s0 = s0[None]
        rh, kh, vh = r.reshape(shp), k.reshape(shp), v.reshape(shp)
        y = wkv7(rh, d.reshape(shp), kh, vh, -kk, kk * ah, s0)
        y = group_norm_heads(y.reshape(B, T, C), H, p[pre + "ln_x.weight"], p[pre + "ln_x.bias"], eps=GN_EPS_V7)
        bonus = (rh * kh * p[pre + "r_k"]).sum(-1, keepdim=True) * vh        # uses the modified k
        y = y + bonus.reshape(B, T, C)
        return self.linear(y * g, pre + "output"), v_first

    def channel_mix(self, l: int, x: Tensor) -> Tensor:
        p = self.p
        pre = f"blocks.{l}.ffn."
        xk = x + (token_shift(x) - x) * p[pre + "x_k"]
        return self.linear(torch.relu(self.linear(xk, pre + "key")) ** 2, pre + "value")

    def forward(self, idx: Tensor) -> Tensor:
        p = self.p
        x = p["emb.weight"][idx.long()]
        v_first = None
        for l in range(self.cfg.n_layer):
            pre = f"blocks.{l}."
            if l == 0:
                x = layer_norm(x, p[pre + "ln0.weight"], p[pre + "ln0.bias"])
            att, v_first = self.time_mix(l, layer_norm(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"]), v_first)
            x = x + att
            x = x + self.channel_mix(l, layer_norm(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"]))
        x = layer_norm(x, p["ln_out.weight"], p["ln_out.bias"])
        return x @ p["head.weight"].transpose(0, 1)
