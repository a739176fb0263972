#!/usr/bin/env python3
"""Independent PyTorch reference of RWKV-6 (x060) + LoRA, for parity tests of librwkvpeft.

Written from /work/shared/spec/rwkv-peft-reference.md (sections 1.1, 1.2, 1.3, 1.5, 1.7, 1.8,
2.1-2.3, 3.1-3.4, 3.6).  Nothing is imported from RWKV-PEFT or RWKV-LM.  Clarity over speed:
the WKV recurrence is a plain Python loop over time and autograd differentiates through it,
so keep T small.

Public pieces (used by run_parity.py, make_case.py and test_rwkv6_torch.py):

    Config.from_state_dict(sd)           hyper-parameters inferred from tensor shapes (spec 1.3)
    wkv6(r, k, v, d, u, s0=None)         WKV6 forward (spec 2.2), plain loop
    wkv6_closed_form(r, k, v, d, u)      same quantity as an explicit double sum (for tests)
    wkv6_backward_formulas(...)          the spec 2.3 backward formulas, evaluated directly
    RWKV6(cfg, params, lora, ...)        functional model: forward(idx) -> logits
    loss_with_l2wrap(logits, targets)    CE (ignore -100) + L2Wrap backward rule (spec 1.7)
    trainable_names(...)                 spec 3.6 selection
    compute_reference(...)               logits, loss and gradients of every trainable tensor

Command line (handy for inspection):
    python3 rwkv6_torch.py --model model.pth --adapter adapter.pth --lora-r 8 --lora-alpha 32 \
        --train-parts "time,ln" --batch batch.safetensors --out ref.safetensors \
        [--device cpu|cuda] [--dtype float64|float32]
writes the same tensors that the C program `parity_dump` writes (logits, loss, grad.NAME), so
`run_parity.py --dump "python3 tests/parity/rwkv6_torch.py --dtype float32"` exercises the harness itself.
"""
from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

LN_EPS = 1e-5
HEAD_SIZE_DIVISOR = 8
GN_EPS = 1e-5 * HEAD_SIZE_DIVISOR ** 2  # 6.4e-4 (spec 1.5 item 7)
L2WRAP_FACTOR = 1e-4
IGNORE_INDEX = -100

# spec 3.1: the linears LoRA wraps in v6
ATT_TARGETS = ("receptance", "key", "value", "output", "gate")
FFN_TARGETS = ("key", "receptance", "value")
MAA_SLOTS = ("w", "k", "v", "r", "g")  # slot order of time_maa_w1 / time_maa_w2 (spec 1.5)


def lora_target_modules(n_layer: int, att=ATT_TARGETS, ffn=FFN_TARGETS) -> List[str]:
    """Module paths (without .weight) of the LoRA targets per block: by default the 8 of v5/v6;
    other versions pass their own att/ffn linear names (spec 3.1)."""
    out = []
    for l in range(n_layer):
        out += [f"blocks.{l}.att.{n}" for n in att]
        out += [f"blocks.{l}.ffn.{n}" for n in ffn]
    return out


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------

def checkpoint_shapes(n_layer: int, C: int, V: int, block) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of a base checkpoint, every version: emb, ln0, per block ln1/ln2 then
    block(s, l, prefix) (the version's own tensors), ln_out, head -- in this order, which
    make_case.py draws values in."""
    s = {"emb.weight": (V, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,)}
    for l in range(n_layer):
        p = f"blocks.{l}."
        for ln in ("ln1", "ln2"):
            s[p + ln + ".weight"] = (C,)
            s[p + ln + ".bias"] = (C,)
        block(s, l, p)
    s["ln_out.weight"] = (C,)
    s["ln_out.bias"] = (C,)
    s["head.weight"] = (V, C)
    return s


@dataclass
class Config:
    n_layer: int
    n_embd: int     # C
    dim_att: int    # A
    dim_ffn: int    # F
    vocab: int      # V
    n_head: int     # H
    head_size: int  # N
    d_mix: int      # Dm
    d_decay: int    # Dd

    @staticmethod
    def from_state_dict(sd: Dict[str, Tensor]) -> "Config":
        """Infer everything from shapes, as spec 1.3 recommends."""
        layers = {int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
        if not layers or "blocks.0.att.time_maa_x" not in sd:
            raise ValueError("not an RWKV-6 (x060) state dict")
        V, C = sd["emb.weight"].shape
        A = sd["blocks.0.att.key.weight"].shape[0]
        Fd = sd["blocks.0.ffn.key.weight"].shape[0]
        H, N = sd["blocks.0.att.time_faaaa"].shape
        Dm = sd["blocks.0.att.time_maa_w1"].shape[1] // 5
        Dd = sd["blocks.0.att.time_decay_w1"].shape[1]
        cfg = Config(max(layers) + 1, C, A, Fd, V, H, N, Dm, Dd)
        assert H * N == A, "time_faaaa [H,N] must cover dim_att"
        return cfg

    def expected_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Key -> shape of a base x060 checkpoint (spec 1.2)."""
        C, A, Fd, V = self.n_embd, self.dim_att, self.dim_ffn, self.vocab
        H, N, Dm, Dd = self.n_head, self.head_size, self.d_mix, self.d_decay
        def block(s, l, p):  # this version's tensors of block l (key prefix p)
            for m in ("x",) + MAA_SLOTS:
                s[p + f"att.time_maa_{m}"] = (1, 1, C)
            s[p + "att.time_maa_w1"] = (C, 5 * Dm)
            s[p + "att.time_maa_w2"] = (5, Dm, C)
            s[p + "att.time_decay"] = (1, 1, A)
            s[p + "att.time_decay_w1"] = (C, Dd)
            s[p + "att.time_decay_w2"] = (Dd, A)
            s[p + "att.time_faaaa"] = (H, N)
            for n in ("receptance", "key", "value", "gate"):
                s[p + f"att.{n}.weight"] = (A, C)
            s[p + "att.output.weight"] = (C, A)
            s[p + "att.ln_x.weight"] = (A,)
            s[p + "att.ln_x.bias"] = (A,)
            s[p + "ffn.time_maa_k"] = (1, 1, C)
            s[p + "ffn.time_maa_r"] = (1, 1, C)
            s[p + "ffn.key.weight"] = (Fd, C)
            s[p + "ffn.receptance.weight"] = (C, C)
            s[p + "ffn.value.weight"] = (C, Fd)
        return checkpoint_shapes(self.n_layer, C, V, block)


# ----------------------------------------------------------------------------------------------
# small building blocks, written out by hand
# ----------------------------------------------------------------------------------------------
def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = LN_EPS) -> Tensor:
    """LayerNorm over the last axis, biased variance."""
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


def group_norm_heads(y: Tensor, n_head: int, weight: Tensor, bias: Tensor, eps: float = GN_EPS) -> Tensor:
    """Per token, per head normalisation of y [B,T,A] (groups = heads of N channels), then affine."""
    B, T, A = y.shape
    yh = y.reshape(B, T, n_head, A // n_head)
    mu = yh.mean(dim=-1, keepdim=True)
    var = ((yh - mu) ** 2).mean(dim=-1, keepdim=True)
    yh = (yh - mu) / torch.sqrt(var + eps)
    return yh.reshape(B, T, A) * weight + bias


def token_shift(x: Tensor) -> Tensor:
    """shift(x)_t = x_{t-1}, shift(x)_0 = 0 (zero pad along T, drop the last row)."""
    return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)


# ----------------------------------------------------------------------------------------------
# WKV6 (spec 2.2) and its backward formulas (spec 2.3)
# ----------------------------------------------------------------------------------------------
def wkv6(r: Tensor, k: Tensor, v: Tensor, d: Tensor, u: Tensor, s0: Optional[Tensor] = None) -> Tensor:
    """WKV6 forward as a plain loop over time.

    r, k, v, d: [B,T,H,N] (d = per-token decay in (0,1), indexed by key channel i);
    u: [H,N]; s0: optional initial state [B or 1, H, N(key i), N(value j)].
    y_t[j] = sum_i r_t[i] (S_t[i][j] + u[i] k_t[i] v_t[j]);  S_{t+1} = d_t[i] S_t[i][j] + k_t[i] v_t[j].
    Returns y [B,T,H,N].
    """
    B, T, H, N = r.shape
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device)
    if s0 is not None:
        S = S + s0
    ys = []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]            # [B,H,N(i),N(j)]
        att = S + u[None, :, :, None] * kv
        ys.append(torch.einsum("bhi,bhij->bhj", r[:, t], att))
        S = d[:, t, :, :, None] * S + kv
    return torch.stack(ys, dim=1)


def wkv6_closed_form(r: Tensor, k: Tensor, v: Tensor, d: Tensor, u: Tensor) -> Tensor:
    """y_t[j] = sum_i r_t[i] (u_i k_t[i] v_t[j] + sum_{tau<t} prod_{m=tau+1}^{t-1} d_m[i] k_tau[i] v_tau[j]).

    Built from explicit products of decays (no recurrence); O(T^2), for tests only.
    """
    B, T, H, N = r.shape
    y = torch.zeros_like(r)
    for t in range(T):
        acc = u[None] * k[:, t] * r[:, t]                          # [B,H,N(i)] weight of v_t
        y_t = torch.einsum("bhi,bhj->bhj", acc, v[:, t])
        for tau in range(t):
            prod = torch.ones_like(r[:, 0])
            for m in range(tau + 1, t):
                prod = prod * d[:, m]
            wgt = r[:, t] * prod * k[:, tau]                        # [B,H,N(i)]
            y_t = y_t + torch.einsum("bhi,bhj->bhj", wgt, v[:, tau])
        y[:, t] = y_t
    return y


def _decay_products(d: Tensor) -> Tensor:
    """P[a, b] = prod_{m=a}^{b} d_m (empty product = 1 when b < a). Returns [T+1, T, B, H, N] indexed
    as P[a][b] for a in 0..T, b in 0..T-1 (only b >= a-1 is meaningful)."""
    B, T, H, N = d.shape
    P = torch.ones(T + 1, T, B, H, N, dtype=d.dtype, device=d.device)
    for a in range(T + 1):
        acc = torch.ones(B, H, N, dtype=d.dtype, device=d.device)
        for b in range(T):
            if b >= a:
                acc = acc * d[:, b]
                P[a, b] = acc
    return P


def wkv6_backward_formulas(r: Tensor, k: Tensor, v: Tensor, w: Tensor, u: Tensor, gy: Tensor,
                           s0: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Evaluate the spec 2.3 backward formulas literally (O(T^3); tests only).

    w is the raw decay (d = exp(-exp(w))). Shapes as in wkv6; s0 [B,H,N(i),N(j)] or None.
    Returns gr, gk, gv ([B,T,H,N]), gu ([H,N]), gw ([B,T,H,N]) and gs0 ([B,H,N(j),N(i)],
    value-major like the kernels store it) when s0 is given.
    """
    B, T, H, N = r.shape
    d = torch.exp(-torch.exp(w))
    P = _decay_products(d)

    def Pab(a: int, b: int) -> Tensor:
        if b < a:
            return torch.ones_like(d[:, 0])
        return P[a, b]

    # forward states S_t (state before step t)
    S = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device) if s0 is None else s0.clone().expand(B, H, N, N)
    states = []
    for t in range(T):
        states.append(S)
        S = d[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]

    gr = torch.zeros_like(r)
    gk = torch.zeros_like(k)
    gv = torch.zeros_like(v)
    gw = torch.zeros_like(w)
    gu = torch.zeros(H, N, dtype=r.dtype, device=r.device)
    for t in range(T):
        # gr_t[i] = sum_j gy_t[j] (S_t[i][j] + u_i k_t[i] v_t[j])
        att = states[t] + u[None, :, :, None] * k[:, t, :, :, None] * v[:, t, :, None, :]
        gr[:, t] = torch.einsum("bhj,bhij->bhi", gy[:, t], att)
        # common factor: c[i][j] = u_i r_t[i] gy_t[j] + sum_{s>t} r_s[i] P(t+1,s-1)[i] gy_s[j]
        c = u[None, :, :, None] * r[:, t, :, :, None] * gy[:, t, :, None, :]
        for s in range(t + 1, T):
            c = c + (r[:, s] * Pab(t + 1, s - 1))[..., None] * gy[:, s, :, None, :]
        gk[:, t] = torch.einsum("bhj,bhij->bhi", v[:, t], c)
        gv[:, t] = torch.einsum("bhi,bhij->bhj", k[:, t], c)
        gu = gu + (r[:, t] * k[:, t] * (v[:, t] * gy[:, t]).sum(-1, keepdim=True)).sum(0)
        # G_t[i] = sum_{s>t} sum_{tau<t} r_s k_tau P(tau+1,s-1) (v_tau . gy_s)  (+ S0 term)
        G = torch.zeros_like(r[:, 0])
        for s in range(t + 1, T):
            for tau in range(t):
                G = G + r[:, s] * k[:, tau] * Pab(tau + 1, s - 1) * (v[:, tau] * gy[:, s]).sum(-1, keepdim=True)
            if s0 is not None:
                G = G + r[:, s] * Pab(0, s - 1) * torch.einsum("bhij,bhj->bhi", states[0], gy[:, s])
        gw[:, t] = G * (-torch.exp(w[:, t]))
    out = {"gr": gr, "gk": gk, "gv": gv, "gu": gu, "gw": gw}
    if s0 is not None:
        gs0 = torch.zeros(B, H, N, N, dtype=r.dtype, device=r.device)  # [b,h,j,i]
        for t in range(T):
            gs0 = gs0 + gy[:, t, :, :, None] * (r[:, t] * Pab(0, t - 1))[:, :, None, :]
        out["gs0"] = gs0
    return out


# ----------------------------------------------------------------------------------------------
# L2Wrap and loss (spec 1.7)
# ----------------------------------------------------------------------------------------------
class L2Wrap(torch.autograd.Function):
    """Identity on the loss value; backward adds 1e-4 * max_logit / (B*T) at each position's argmax.

    The extra term is NOT multiplied by the upstream gradient and covers ignored positions too."""

    @staticmethod
    def forward(ctx, loss: Tensor, logits: Tensor) -> Tensor:
        ctx.save_for_backward(logits)
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        (logits,) = ctx.saved_tensors
        B, T = logits.shape[0], logits.shape[1]
        factor = L2WRAP_FACTOR / (B * T)
        maxv, idx = torch.max(logits, dim=-1, keepdim=True)
        g = torch.zeros_like(logits)
        g.scatter_(-1, idx, maxv * factor)
        return grad_loss, g


def cross_entropy_mean(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean token CE over targets != -100, written out (log-sum-exp minus target logit)."""
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    tg = targets.reshape(-1).long()
    keep = tg != IGNORE_INDEX
    lse = torch.logsumexp(flat, dim=-1)
    picked = flat.gather(1, tg.clamp(min=0)[:, None])[:, 0]
    per_tok = (lse - picked) * keep.to(flat.dtype)
    return per_tok.sum() / keep.sum().to(flat.dtype)


def loss_with_l2wrap(logits: Tensor, targets: Tensor, l2wrap: bool = True) -> Tensor:
    loss = cross_entropy_mean(logits, targets)
    return L2Wrap.apply(loss, logits) if l2wrap else loss


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------
def bone_delta(weight: Tensor, p: Tensor) -> Tensor:
    """Spec 3.4 (LATE-NOV bone / DiSHA mode "bone"): P [r, out] -> dW[o, i] = P[i mod r, o] for i < in."""
    r, out = p.shape
    n_in = weight.shape[1]
    idx = torch.arange(n_in, device=p.device) % r
    return p[idx, :].transpose(0, 1)                                          # [out, in]


def bat_weight(weight: Tensor, d: Tensor) -> Tensor:
    """Spec 3.4 (NOV bone / DiSHA mode "bat"): D [in/r, r, r]; per r x r block (a = out block,
    b = in block) W'_{a,b} = W_{a,b} + W_{a,b} D_b + D_b. Materialised, as the spec writes it."""
    out, n_in = weight.shape
    nb, r, r2 = d.shape
    assert r == r2 and n_in == nb * r and out % r == 0, "bat needs in % r == out % r == 0"
    blocks = weight.reshape(out // r, r, nb, r).permute(0, 2, 1, 3)          # [a, b, r1, r2]
    new = blocks + blocks @ d[None] + d[None]
    return new.permute(0, 2, 1, 3).reshape(out, n_in)


class RWKV6:
    """Functional RWKV-6 over a dict of tensors.

    params: base tensors keyed as in spec 1.2 (an optional "blocks.L.att.time_state" [H, N(value), N(key)]
    is the shared initial WKV state of state tuning, spec 1.8); lora: {"<module>.lora_A": [r,in],
    "<module>.lora_B": [out,r]} for any subset of the 8 target linears per block; lora_scale = alpha / r
    (PiSSA: 1, with params holding W_res = W - B0 A0); extra: {"<module>.bone" or ".disha": tensor}, a
    2-D [r,out] tensor is Bone, a 3-D [in/r,r,r] one is Bat (spec 3.4).
    """

    def __init__(self, cfg: Config, params: Dict[str, Tensor], lora: Optional[Dict[str, Tensor]] = None,
                 lora_scale: float = 1.0, extra: Optional[Dict[str, Tensor]] = None):
        self.cfg = cfg
        self.p = params
        self.lora = lora or {}
        self.lora_scale = lora_scale
        self.extra = extra or {}

    # y = x W^T + s (x A^T) B^T  (spec 3.2, dropout 0); Bone / Bat (spec 3.4)
    def linear(self, x: Tensor, module: str) -> Tensor:
        weight = self.p[module + ".weight"]
        d = self.extra.get(module + ".bone", self.extra.get(module + ".disha"))
        if d is not None and d.dim() == 3:
            return x @ bat_weight(weight, d).transpose(0, 1)
        y = x @ weight.transpose(0, 1)
        if d is not None:
            # zero-pad x to a multiple of r, fold the groups, multiply by P (the module's own form)
            r = d.shape[0]
            pad = (r - x.shape[-1] % r) % r
            xp = F.pad(x, (0, pad))
            xf = xp.reshape(*x.shape[:-1], xp.shape[-1] // r, r).sum(dim=-2)
            y = y + xf @ d
        a = self.lora.get(module + ".lora_A")
        if a is not None:
            b = self.lora[module + ".lora_B"]
            y = y + self.lora_scale * ((x @ a.transpose(0, 1)) @ b.transpose(0, 1))
        return y

    def time_mix(self, l: int, x: Tensor) -> Tensor:
        cfg, p = self.cfg, self.p
        pre = f"blocks.{l}.att."
        B, T, C = x.shape
        H, N = cfg.n_head, cfg.head_size
        delta = token_shift(x) - x                                            # previous minus current
        z = x + delta * p[pre + "time_maa_x"]
        h = torch.tanh(z @ p[pre + "time_maa_w1"])                             # [B,T,5*Dm]
        h = h.reshape(B, T, 5, cfg.d_mix)                                      # column j*Dm+d -> slot j
        m = torch.einsum("btjd,jdc->btjc", h, p[pre + "time_maa_w2"])         # [B,T,5,C]
        xs = {}
        for j, name in enumerate(MAA_SLOTS):
            xs[name] = x + delta * (p[pre + f"time_maa_{name}"] + m[:, :, j])
        r = self.linear(xs["r"], pre + "receptance")
        k = self.linear(xs["k"], pre + "key")
        v = self.linear(xs["v"], pre + "value")
        g = F.silu(self.linear(xs["g"], pre + "gate"))
        w = p[pre + "time_decay"] + torch.tanh(xs["w"] @ p[pre + "time_decay_w1"]) @ p[pre + "time_decay_w2"]
        d = torch.exp(-torch.exp(w))
        shp = (B, T, H, N)
        s0 = p.get(pre + "time_state")  # [H, N(value j), N(key i)] -> wkv6's [1, H, i, j]
        if s0 is not None:
            s0 = s0.transpose(-1, -2)[None]
        y = wkv6(r.reshape(shp), k.reshape(shp), v.reshape(shp), d.reshape(shp), p[pre + "time_faaaa"], s0)
        o = group_norm_heads(y.reshape(B, T, cfg.dim_att), H, p[pre + "ln_x.weight"], p[pre + "ln_x.bias"])
        return self.linear(o * g, pre + "output")

    def channel_mix(self, l: int, x: Tensor) -> Tensor:
        p = self.p
        pre = f"blocks.{l}.ffn."
        delta = token_shift(x) - x
        xk = x + delta * p[pre + "time_maa_k"]
        xr = x + delta * p[pre + "time_maa_r"]
        kk = torch.relu(self.linear(xk, pre + "key")) ** 2
        return torch.sigmoid(self.linear(xr, pre + "receptance")) * self.linear(kk, pre + "value")

    def forward(self, idx: Tensor) -> Tensor:
        p = self.p
        x = p["emb.weight"][idx.long()]
        for l in range(self.cfg.n_layer):
            pre = f"blocks.{l}."
            if l == 0:
                x = layer_norm(x, p[pre + "ln0.weight"], p[pre + "ln0.bias"])
            x = x + self.time_mix(l, layer_norm(x, p[pre + "ln1.weight"], p[pre + "ln1.bias"]))
            x = x + self.channel_mix(l, layer_norm(x, p[pre + "ln2.weight"], p[pre + "ln2.bias"]))
        x = layer_norm(x, p["ln_out.weight"], p["ln_out.bias"])
        return x @ p["head.weight"].transpose(0, 1)


# ----------------------------------------------------------------------------------------------
# trainable set (spec 3.6) and the reference computation
# ----------------------------------------------------------------------------------------------
def parse_train_parts(s: str) -> List[str]:
    return [t.strip() for t in s.split(",") if t.strip()]


def trainable_names(base_names: Iterable[str], lora_names: Iterable[str], train_parts: List[str]) -> List[str]:
    """LoRA A/B always; a base tensor if its full name contains any train_parts substring
    (so "emb" selects emb.weight and "head" selects head.weight)."""
    out = [n for n in base_names if any(part in n for part in train_parts)]
    out += [n for n in lora_names if ".lora_A" in n or ".lora_B" in n]
    return sorted(set(out))


def split_adapter(adapter: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Adapter = LoRA tensors + (optionally) base tensors that overwrite the checkpoint (spec 3.8)."""
    lora = {k: v for k, v in adapter.items() if k.endswith(".lora_A") or k.endswith(".lora_B")}
    over = {k: v for k, v in adapter.items() if k not in lora}
    return lora, over


def compute_reference(model_sd: Dict[str, Tensor], adapter_sd: Dict[str, Tensor], inputs: Tensor,
                      targets: Tensor, lora_r: int, lora_alpha: float, train_parts: List[str],
                      dtype: torch.dtype = torch.float64, device: str = "cpu",
                      l2wrap: bool = True) -> Dict[str, Tensor]:
    """Returns {"logits": [B,T,V], "loss": [], "grad.NAME": ...} (all in `dtype`, on CPU).

    Stored bf16/fp32 values are converted exactly to `dtype` (so both sides see the same numbers)."""
    lora_raw, overrides = split_adapter(adapter_sd)
    base = dict(model_sd)
    base.update(overrides)
    cfg = Config.from_state_dict(base)
    for name, shp in cfg.expected_shapes().items():
        if name not in base:
            raise KeyError(f"checkpoint lacks {name}")
        if tuple(base[name].shape) != shp:
            raise ValueError(f"{name}: shape {tuple(base[name].shape)} != {shp}")
    for name, t in lora_raw.items():
        if name.endswith(".lora_A") and t.shape[0] != lora_r:
            raise ValueError(f"{name}: rank {t.shape[0]} != --lora-r {lora_r}")

    names = trainable_names(base.keys(), lora_raw.keys(), train_parts)
    params = {k: v.detach().to(device=device, dtype=dtype).clone() for k, v in base.items()}
    lora = {k: v.detach().to(device=device, dtype=dtype).clone() for k, v in lora_raw.items()}
    leaves = {}
    for n in names:
        t = params[n] if n in params else lora[n]
        t.requires_grad_(True)
        leaves[n] = t

    model = RWKV6(cfg, params, lora, lora_alpha / lora_r)
    idx = inputs.to(device=device).long()
    tg = targets.to(device=device).long()
    logits = model.forward(idx)
    loss = loss_with_l2wrap(logits, tg, l2wrap=l2wrap)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    out = {"logits": logits.detach().cpu(), "loss": loss.detach().cpu().reshape(())}
    for n, g in zip(names, grads):
        out["grad." + n] = (torch.zeros_like(leaves[n]) if g is None else g).detach().cpu()
    return out


# ----------------------------------------------------------------------------------------------
# file helpers
# ----------------------------------------------------------------------------------------------
def load_pth(path: str) -> Dict[str, Tensor]:
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a plain dict")
    return sd


def load_batch(path: str) -> Tuple[Tensor, Tensor]:
    from safetensors.torch import load_file
    b = load_file(path)
    return b["inputs"], b["targets"]


def main(compute=None, description: Optional[str] = None) -> None:
    """The parity_dump-compatible command line; compute (default compute_reference) and the help
    text are those of the calling module (rwkv_reference.py passes its version dispatch)."""
    compute = compute or compute_reference
    ap = argparse.ArgumentParser(description=description or __doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--lora-r", type=int, required=True)
    ap.add_argument("--lora-alpha", type=float, required=True)
    ap.add_argument("--train-parts", default="time,ln")
    ap.add_argument("--batch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--backend", default=None,
                    help="accepted for command-line compatibility with parity_dump and ignored")
    a = ap.parse_args()
    from safetensors.torch import save_file
    inputs, targets = load_batch(a.batch)
    ref = compute(load_pth(a.model), load_pth(a.adapter), inputs, targets, a.lora_r, a.lora_alpha,
                  parse_train_parts(a.train_parts), getattr(torch, a.dtype), a.device)
    save_file({k: v.float().contiguous() for k, v in ref.items()}, a.out)
    print(f"loss {ref['loss'].item():.10f}; {sum(k.startswith('grad.') for k in ref)} gradients -> {a.out}")


if __name__ == "__main__":
    main()
