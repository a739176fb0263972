#!/usr/bin/env python3
"""Self-checks of the PyTorch reference (rwkv6_torch.py) and of the spec formulas it encodes.

Run:  python3 -m pytest -q tests/parity/test_rwkv6_torch.py      (or: python3 tests/parity/test_rwkv6_torch.py)
Env:  PARITY_TEST_DEVICE=cuda to run the same checks on a GPU.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rwkv6_torch as R  # noqa: E402
from make_case import random_adapter, random_model  # noqa: E402

DEV = os.environ.get("PARITY_TEST_DEVICE", "cpu")
D64 = torch.float64


def _rand_wkv_inputs(B=2, T=7, H=2, N=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=D64).to(DEV)
    r, k, v = mk(B, T, H, N), mk(B, T, H, N), mk(B, T, H, N)
    w = (-3.0 + 1.5 * mk(B, T, H, N))  # raw decay; d = exp(-exp(w)) spans roughly (0.01, 1)
    u = 0.5 * mk(H, N)
    return r, k, v, w, u


def _tiny_cfg():
    # L=2, C=8, H=2 heads of N=4, F=16, V=11, Dm=2, Dd=3
    return R.Config(n_layer=2, n_embd=8, dim_att=8, dim_ffn=16, vocab=11, n_head=2, head_size=4, d_mix=2, d_decay=3)


def _tiny_model(seed=0, r=2):
    cfg = _tiny_cfg()
    g = torch.Generator().manual_seed(seed)
    base = {k: v.to(D64) for k, v in random_model(cfg, g).items()}
    lora = {k: v.to(D64) for k, v in random_adapter(cfg, r, g).items()}
    B, T = 2, 5
    idx = torch.randint(0, cfg.vocab, (B, T), generator=g)
    tg = torch.randint(0, cfg.vocab, (B, T), generator=g)
    tg[0, 1] = -100
    tg[1, 4] = -100
    return cfg, base, lora, idx, tg


# ----------------------------------------------------------------------------------------------
def test_wkv6_loop_matches_closed_form():
    for T in (1, 2, 7, 17):
        r, k, v, w, u = _rand_wkv_inputs(T=T, seed=T)
        d = torch.exp(-torch.exp(w))
        y1 = R.wkv6(r, k, v, d, u)
        y2 = R.wkv6_closed_form(r, k, v, d, u)
        assert torch.allclose(y1, y2, rtol=1e-12, atol=1e-12), (T, (y1 - y2).abs().max())


def test_wkv6_spec_backward_formulas_match_autograd():
    """spec 2.3: gr, gk, gv, gu, gw (= dL/dw_raw) and, with an initial state, gS0."""
    for with_s0 in (False, True):
        r, k, v, w, u = _rand_wkv_inputs(T=6, seed=3)
        B, T, H, N = r.shape
        s0 = torch.randn(B, H, N, N, dtype=D64, device=DEV) if with_s0 else None
        gy = torch.randn(B, T, H, N, dtype=D64, device=DEV)
        leaves = [t.clone().requires_grad_(True) for t in (r, k, v, w, u)]
        s0l = s0.clone().requires_grad_(True) if with_s0 else None
        rl, kl, vl, wl, ul = leaves
        y = R.wkv6(rl, kl, vl, torch.exp(-torch.exp(wl)), ul, s0l)
        grads = torch.autograd.grad((y * gy).sum(), leaves + ([s0l] if with_s0 else []))
        f = R.wkv6_backward_formulas(r, k, v, w, u, gy, s0)
        for name, ga in zip(("gr", "gk", "gv", "gw", "gu"), grads[:5]):
            assert torch.allclose(f[name], ga, rtol=1e-10, atol=1e-12), (name, with_s0, (f[name] - ga).abs().max())
        if with_s0:
            # formula output is [b,h,value j,key i]; the state in wkv6 is [b,h,key i,value j]
            assert torch.allclose(f["gs0"].transpose(-1, -2), grads[5], rtol=1e-10, atol=1e-12)
        # spec: without S0, gw at t=0 and t=T-1 is exactly 0; with S0 only t=T-1 is
        assert torch.all(f["gw"][:, T - 1] == 0)
        if not with_s0:
            assert torch.all(f["gw"][:, 0] == 0)
        else:
            assert f["gw"][:, 0].abs().max() > 0


def test_norms_match_torch():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 8, generator=g, dtype=D64)
    wt, b = torch.randn(8, generator=g, dtype=D64), torch.randn(8, generator=g, dtype=D64)
    assert torch.allclose(R.layer_norm(x, wt, b), F.layer_norm(x, (8,), wt, b, eps=1e-5), atol=1e-12)
    ref = F.group_norm(x.reshape(12, 8), 2, wt, b, eps=6.4e-4).reshape(3, 4, 8)
    assert torch.allclose(R.group_norm_heads(x, 2, wt, b), ref, atol=1e-12)
    assert abs(R.GN_EPS - 6.4e-4) < 1e-18


def test_token_shift_and_slot_order():
    x = torch.arange(12, dtype=D64).reshape(1, 3, 4)
    s = R.token_shift(x)
    assert torch.equal(s[0, 0], torch.zeros(4)) and torch.equal(s[0, 1:], x[0, :2])
    assert R.MAA_SLOTS == ("w", "k", "v", "r", "g")


def test_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g, dtype=D64)
    tg = torch.randint(0, 11, (2, 5), generator=g)
    tg[0, 0] = -100
    tg[1, 3] = -100
    ref = F.cross_entropy(logits.reshape(-1, 11), tg.reshape(-1), ignore_index=-100)
    assert torch.allclose(R.cross_entropy_mean(logits, tg), ref, atol=1e-14)


def test_l2wrap_rule():
    """Forward value unchanged; backward adds 1e-4*max/(B*T) at each argmax (ignored positions too),
    independent of the upstream gradient."""
    g = torch.Generator().manual_seed(2)
    B, T, V = 2, 3, 7
    logits = torch.randn(B, T, V, generator=g, dtype=D64, requires_grad=True)
    tg = torch.randint(0, V, (B, T), generator=g)
    tg[1, 2] = -100
    ce = R.cross_entropy_mean(logits, tg)
    wrapped = R.loss_with_l2wrap(logits, tg)
    assert wrapped.item() == ce.item()
    for scale in (1.0, 3.0):
        (g_wrapped,) = torch.autograd.grad(scale * R.loss_with_l2wrap(logits, tg), logits)
        (g_ce,) = torch.autograd.grad(scale * R.cross_entropy_mean(logits, tg), logits)
        extra = g_wrapped - g_ce
        mx, am = logits.detach().max(-1)
        expect = torch.zeros(B, T, V, dtype=D64)
        expect.scatter_(-1, am[..., None], (1e-4 * mx / (B * T))[..., None])
        assert torch.allclose(extra, expect, atol=1e-15), scale
    # equals the gradient of CE + 1e-4/(B T) * sum 1/2 max^2 (at upstream 1)
    (g1,) = torch.autograd.grad(R.loss_with_l2wrap(logits, tg), logits)
    (g2,) = torch.autograd.grad(ce + 1e-4 / (B * T) * 0.5 * (logits.max(-1).values ** 2).sum(), logits)
    assert torch.allclose(g1, g2, atol=1e-15)


def test_trainable_selection():
    cfg = R.Config(2, 32, 32, 64, 50, 1, 32, 2, 3)
    base = cfg.expected_shapes().keys()
    lora = [m + s for m in R.lora_target_modules(2) for s in (".lora_A", ".lora_B")]
    default = R.trainable_names(base, lora, ["time", "ln"])
    assert len([n for n in default if "lora" in n]) == 2 * 8 * 2
    assert "blocks.0.ln0.weight" in default and "ln_out.bias" in default and "blocks.1.att.ln_x.weight" in default
    assert "blocks.1.att.time_decay_w2" in default and "blocks.0.ffn.time_maa_r" in default
    assert "emb.weight" not in default and "head.weight" not in default
    linears = {m + ".weight" for m in R.lora_target_modules(2)}
    assert not linears & set(default)
    only = R.trainable_names(base, lora, [])
    assert all("lora" in n for n in only) and len(only) == 32
    assert "emb.weight" in R.trainable_names(base, lora, ["emb"])
    assert "head.weight" in R.trainable_names(base, lora, ["head"])


def test_lora_linear_formula():
    cfg, base, lora, idx, tg = _tiny_model()
    m = R.RWKV6(cfg, base, lora, 16.0 / 2)
    x = torch.randn(2, 3, cfg.n_embd, dtype=D64)
    mod = "blocks.1.att.key"
    W, A, Bm = base[mod + ".weight"], lora[mod + ".lora_A"], lora[mod + ".lora_B"]
    assert torch.allclose(m.linear(x, mod), x @ (W + 8.0 * Bm @ A).T, atol=1e-12)


def test_gradcheck_tiny_model_all_parameters():
    """torch.autograd.gradcheck (float64) of loss(all base params + LoRA) without L2Wrap."""
    cfg, base, lora, idx, tg = _tiny_model(seed=7)
    names_b = sorted(base)
    names_l = sorted(lora)
    inputs = [base[n].to(DEV).clone().requires_grad_(True) for n in names_b] + \
             [lora[n].to(DEV).clone().requires_grad_(True) for n in names_l]
    idx, tg = idx.to(DEV), tg.to(DEV)

    def f(*ts):
        p = dict(zip(names_b, ts[:len(names_b)]))
        lo = dict(zip(names_l, ts[len(names_b):]))
        logits = R.RWKV6(cfg, p, lo, 4.0 / 2).forward(idx)
        return R.loss_with_l2wrap(logits, tg, l2wrap=False)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=False)


def test_gradcheck_tiny_model_logits():
    """gradcheck of the full logits tensor w.r.t. a representative subset (every time_* kind, LN, LoRA)."""
    cfg, base, lora, idx, tg = _tiny_model(seed=8)
    pick = [n for n in sorted(base) if n.startswith("blocks.1.") and ("time" in n or "ln" in n)]
    pick += ["blocks.0.ln0.weight", "emb.weight"]
    pickl = ["blocks.0.att.output.lora_A", "blocks.0.ffn.value.lora_B"]
    inputs = [base[n].to(DEV).clone().requires_grad_(True) for n in pick] + \
             [lora[n].to(DEV).clone().requires_grad_(True) for n in pickl]
    fixed = {k: v.to(DEV) for k, v in base.items()}
    fixedl = {k: v.to(DEV) for k, v in lora.items()}

    def f(*ts):
        p = dict(fixed)
        p.update(zip(pick, ts[:len(pick)]))
        lo = dict(fixedl)
        lo.update(zip(pickl, ts[len(pick):]))
        return R.RWKV6(cfg, p, lo, 2.0).forward(idx.to(DEV))

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_compute_reference_includes_l2wrap_and_selection():
    cfg, base, lora, idx, tg = _tiny_model(seed=9)
    out = R.compute_reference(base, lora, idx, tg, 2, 4.0, ["time", "ln"], device=DEV)
    names = {k[5:] for k in out if k.startswith("grad.")}
    assert names == set(R.trainable_names(base.keys(), lora.keys(), ["time", "ln"]))
    # the L2Wrap part of grad.ln_out.bias equals what the explicit regulariser gives
    no = R.compute_reference(base, lora, idx, tg, 2, 4.0, ["time", "ln"], device=DEV, l2wrap=False)
    assert out["loss"].item() == no["loss"].item()
    p = {k: v.clone().requires_grad_(k == "ln_out.bias") for k, v in base.items()}
    logits = R.RWKV6(cfg, p, lora, 2.0).forward(idx)
    B, T = idx.shape
    reg = R.cross_entropy_mean(logits, tg) + 1e-4 / (B * T) * 0.5 * (logits.max(-1).values ** 2).sum()
    (gb,) = torch.autograd.grad(reg, [p["ln_out.bias"]])
    assert torch.allclose(out["grad.ln_out.bias"], gb, rtol=1e-12, atol=1e-15)
    assert not torch.allclose(no["grad.ln_out.bias"], gb, rtol=1e-9, atol=0)


def test_bone_fold_equals_spec_delta():
    """Bone: the module's zero-pad-and-fold form equals the spec's dW[o, i] = P[i mod r, o]."""
    g = torch.Generator().manual_seed(3)
    for n_in, r in ((12, 5), (12, 4), (7, 9)):
        W = torch.randn(6, n_in, generator=g, dtype=D64)
        P = torch.randn(r, 6, generator=g, dtype=D64)
        x = torch.randn(2, 3, n_in, generator=g, dtype=D64)
        m = R.RWKV6(None, {"l.weight": W}, extra={"l.bone": P})
        dw = torch.zeros(6, n_in, dtype=D64)
        for o in range(6):
            for i in range(n_in):
                dw[o, i] = P[i % r, o]
        assert torch.allclose(m.linear(x, "l"), x @ (W + dw).T, rtol=1e-12, atol=1e-12)


def test_bat_equals_spec_elementwise():
    """Bat: W'[a r+p, b r+q] = W + sum_m W[a r+p, b r+m] D_b[m,q] + D_b[p,q] (spec 3.4)."""
    g = torch.Generator().manual_seed(4)
    r, out, n_in = 3, 6, 9
    W = torch.randn(out, n_in, generator=g, dtype=D64)
    D = torch.randn(n_in // r, r, r, generator=g, dtype=D64)
    ref = W.clone()
    for o in range(out):
        for i in range(n_in):
            a, p_, b, q = o // r, o % r, i // r, i % r
            ref[o, i] += sum(W[a * r + p_, b * r + m] * D[b, m, q] for m in range(r)) + D[b, p_, q]
    assert torch.allclose(R.bat_weight(W, D), ref, rtol=1e-12, atol=1e-12)


def test_time_state_is_the_initial_state():
    """State tuning: time_state [H, value, key] is S_0 of every sequence (spec 1.8, 2.2)."""
    r, k, v, w, u = _rand_wkv_inputs(B=2, T=1, H=2, N=4, seed=9)
    d = torch.exp(-torch.exp(w))
    ts = torch.randn(2, 4, 4, dtype=D64).to(DEV)  # [h][j value][i key]
    y = R.wkv6(r, k, v, d, u, ts.transpose(-1, -2)[None])
    for b in range(2):
        for h in range(2):
            for j in range(4):
                want = sum(r[b, 0, h, i] * (ts[h, j, i] + u[h, i] * k[b, 0, h, i] * v[b, 0, h, j]) for i in range(4))
                assert abs(y[b, 0, h, j] - want) < 1e-12


def test_init_reference_selftest():
    import init_reference
    assert init_reference._selftest() == 0


if __name__ == "__main__":
    import inspect
    fails = 0
    for name, fn in list(globals().items()):
        if name.startswith("test_") and inspect.isfunction(fn):
            try:
                fn()
                print("PASS", name)
            except Exception as e:  # noqa: BLE001
                fails += 1
                print("FAIL", name, repr(e))
    sys.exit(1 if fails else 0)
