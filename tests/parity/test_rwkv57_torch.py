#!/usr/bin/env python3
"""Self-checks of the RWKV-5 and RWKV-7 PyTorch references (rwkv5_torch.py, rwkv7_torch.py, rwkv_reference.py)
and of the spec formulas they encode.

Run:  python3 -m pytest -q tests/parity/test_rwkv57_torch.py      (or: python3 tests/parity/test_rwkv57_torch.py)
Env:  PARITY_TEST_DEVICE=cuda to run the same checks on a GPU.
"""
from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rwkv5_torch as R5  # noqa: E402
import rwkv6_torch as R6  # noqa: E402
import rwkv7_torch as R7  # noqa: E402
import rwkv_reference as RR  # noqa: E402
from make_case import random_adapter_versioned, random_model_v5, random_model_v7  # noqa: E402

DEV = os.environ.get("PARITY_TEST_DEVICE", "cpu")
D64 = torch.float64


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------
def _tiny_cfg(version):
    # L=2, C=8, H=2 heads of N=4, V=11 (v5: F=16; v7: F=4C=32, Dw=3, Da=2, Dv=4, Dg=5 all different)
    if version == 5:
        return R5.Config(n_layer=2, n_embd=8, dim_att=8, dim_ffn=16, vocab=11, n_head=2, head_size=4)
    return R7.Config(n_layer=2, n_embd=8, dim_ffn=32, vocab=11, n_head=2, head_size=4, d_w=3, d_a=2, d_v=4, d_g=5)


def _tiny_model(version, seed=0, r=2):
    cfg = _tiny_cfg(version)
    g = torch.Generator().manual_seed(seed)
    base = (random_model_v5 if version == 5 else random_model_v7)(cfg, g)
    base = {k: v.to(D64) for k, v in base.items()}
    lora = {k: v.to(D64) for k, v in random_adapter_versioned(cfg, r, g).items()}
    B, T = 2, 5
    idx = torch.randint(0, cfg.vocab, (B, T), generator=g)
    tg = torch.randint(0, cfg.vocab, (B, T), generator=g)
    tg[0, 1] = -100
    tg[1, 4] = -100
    return cfg, base, lora, idx, tg


def _model(version, cfg, p, lo, scale):
    return (R5.RWKV5 if version == 5 else R7.RWKV7)(cfg, p, lo, scale)


def _wkv7_inputs(B=2, T=7, H=2, N=4, seed=0, with_s0=False):
    """Inputs in the regime the model produces: kk unit per head, alpha = -kk, beta = kk * a, a in (0,1)."""
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=D64).to(DEV)
    r, k, v = mk(B, T, H, N), 0.5 * mk(B, T, H, N), mk(B, T, H, N)
    w = -0.5 - torch.rand(B, T, H, N, generator=g, dtype=D64).to(DEV) * 4      # raw decay <= -0.5
    kk = mk(B, T, H, N)
    kk = kk / kk.norm(dim=-1, keepdim=True)
    a = torch.rand(B, T, H, N, generator=g, dtype=D64).to(DEV)
    s0 = 0.3 * mk(B, H, N, N) if with_s0 else None
    return r, w, k, v, -kk, kk * a, s0


# ----------------------------------------------------------------------------------------------
# WKV7
# ----------------------------------------------------------------------------------------------
def test_wkv7_loop_matches_matrix_form():
    """S_t = S_{t-1} (diag d_t + alpha_t beta_t^T) + v_t k_t^T with explicit matrix products (spec 2.4)."""
    for T in (1, 2, 7, 17):
        for with_s0 in (False, True):
            r, w, k, v, al, be, s0 = _wkv7_inputs(T=T, seed=T, with_s0=with_s0)
            d = torch.exp(-torch.exp(w))
            y1 = R7.wkv7(r, d, k, v, al, be, s0)
            y2 = R7.wkv7_matrix_form(r, d, k, v, al, be, s0)
            assert torch.allclose(y1, y2, rtol=1e-11, atol=1e-12), (T, with_s0, (y1 - y2).abs().max())


def test_wkv7_index_order_and_read_after_update():
    """T = 1 by hand: S_0 = v k^T (value rows, key columns) and y_0 = S_0 r (state updated before it is read);
    with a shared initial state s0 [H, value, key]: S_0 = s0 diag(d) + (s0 alpha) beta^T + v k^T."""
    r, w, k, v, al, be, s0 = _wkv7_inputs(B=1, T=1, seed=4, with_s0=True)
    d = torch.exp(-torch.exp(w))
    y = R7.wkv7(r, d, k, v, al, be)
    want = v[0, 0] * (k[0, 0] * r[0, 0]).sum(-1, keepdim=True)
    assert torch.allclose(y[0, 0], want, atol=1e-13)
    y = R7.wkv7(r, d, k, v, al, be, s0)
    for h in range(2):
        S = s0[0, h] @ torch.diag(d[0, 0, h]) + torch.outer(s0[0, h] @ al[0, 0, h], be[0, 0, h]) + \
            torch.outer(v[0, 0, h], k[0, 0, h])
        assert torch.allclose(y[0, 0, h], S @ r[0, 0, h], atol=1e-13)


def test_wkv7_spec_backward_formulas_match_autograd():
    """spec 2.4 backstepping backward: dq, dw (= dL/dw_raw), dk, dv, dalpha, dbeta, and dS_0."""
    for with_s0 in (False, True):
        r, w, k, v, al, be, s0 = _wkv7_inputs(T=9, seed=3, with_s0=with_s0)
        gy = torch.randn(r.shape, dtype=D64, device=DEV)
        leaves = [t.clone().requires_grad_(True) for t in (r, w, k, v, al, be)]
        s0l = s0.clone().requires_grad_(True) if with_s0 else None
        rl, wl, kl, vl, all_, bel = leaves
        y = R7.wkv7(rl, torch.exp(-torch.exp(wl)), kl, vl, all_, bel, s0l)
        grads = torch.autograd.grad((y * gy).sum(), leaves + ([s0l] if with_s0 else []))
        f = R7.wkv7_backward_formulas(r, w, k, v, al, be, gy, s0)
        for name, ga in zip(("dr", "dw", "dk", "dv", "dalpha", "dbeta"), grads[:6]):
            assert torch.allclose(f[name], ga, rtol=1e-9, atol=1e-11), (name, with_s0, (f[name] - ga).abs().max())
        if with_s0:
            assert torch.allclose(f["ds0"], grads[6], rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------------------------
# v5 pieces
# ----------------------------------------------------------------------------------------------
def test_v5_groupnorm_identity():
    """GroupNorm(y / 8, eps 1e-5) == GroupNorm(y, eps 6.4e-4) (spec 1.4 vs 1.5 item 7), also vs F.group_norm."""
    g = torch.Generator().manual_seed(5)
    for scale in (1e-3, 0.1, 1.0, 30.0):  # the eps matters most for small y
        y = torch.randn(3, 4, 8, generator=g, dtype=D64) * scale
        wt, b = torch.randn(8, generator=g, dtype=D64), torch.randn(8, generator=g, dtype=D64)
        a1 = R6.group_norm_heads(y / 8, 2, wt, b, eps=1e-5)
        a2 = R6.group_norm_heads(y, 2, wt, b, eps=6.4e-4)
        a3 = F.group_norm((y / 8).reshape(12, 8), 2, wt, b, eps=1e-5).reshape(3, 4, 8)
        assert torch.allclose(a1, a2, rtol=1e-12, atol=1e-12), scale
        assert torch.allclose(a1, a3, rtol=1e-12, atol=1e-12), scale


def test_wkv5_is_wkv6_with_constant_decay_and_decay_grad_formula():
    """WKV5 equals the closed-form v5/v6 sum with d_t = d; the spec 2.3 v5 per-channel decay gradient
    (dL/d log d times -exp(time_decay)) equals autograd's dL/d time_decay, summed over the batch."""
    g = torch.Generator().manual_seed(6)
    B, T, H, N = 2, 8, 2, 4
    mk = lambda *s: torch.randn(*s, generator=g, dtype=D64)
    r, k, v, u = mk(B, T, H, N), mk(B, T, H, N), mk(B, T, H, N), 0.5 * mk(H, N)
    td = -2.0 + mk(H, N)
    d = torch.exp(-torch.exp(td))
    y = R5.wkv5(r, k, v, d, u)
    y_cf = R6.wkv6_closed_form(r, k, v, d[None, None].expand(B, T, H, N), u)
    assert torch.allclose(y, y_cf, rtol=1e-12, atol=1e-12)
    gy = mk(B, T, H, N)
    tdl = td.clone().requires_grad_(True)
    (gtd,) = torch.autograd.grad((R5.wkv5(r, k, v, torch.exp(-torch.exp(tdl)), u) * gy).sum(), [tdl])
    want = R5.wkv5_decay_grad_formula(r, k, v, d, gy) * (-torch.exp(td))
    assert torch.allclose(gtd, want, rtol=1e-10, atol=1e-12), (gtd - want).abs().max()


def test_v5_mixes_weigh_the_current_token():
    """x* = x (.) mix + shift(x) (.) (1 - mix): mix = 1 ignores the previous token, mix = 0 uses only it."""
    cfg, base, lora, idx, tg = _tiny_model(5, seed=1)
    x = torch.randn(1, 3, cfg.n_embd, dtype=D64)
    x2 = x.clone()
    x2[0, 0] += 1.0  # change only token 0
    for mix, same_at_1 in ((1.0, True), (0.0, False)):
        p = dict(base)
        p["blocks.0.ffn.time_mix_k"] = torch.full_like(p["blocks.0.ffn.time_mix_k"], mix)
        p["blocks.0.ffn.time_mix_r"] = torch.full_like(p["blocks.0.ffn.time_mix_r"], mix)
        m = R5.RWKV5(cfg, p, {}, 1.0)
        o1, o2 = m.channel_mix(0, x), m.channel_mix(0, x2)
        assert torch.allclose(o1[0, 1], o2[0, 1], atol=1e-14) == same_at_1, mix
        assert torch.allclose(o1[0, 2], o2[0, 2], atol=1e-14)


# ----------------------------------------------------------------------------------------------
# v7 pieces
# ----------------------------------------------------------------------------------------------
def test_v7_key_set_and_lora_widths():
    cfg = R7.Config(3, 128, 512, 100, 2, 64, 32, 48, 16, 64)
    s = cfg.expected_shapes()
    assert "blocks.0.att.v0" not in s and "blocks.0.att.v1" not in s and "blocks.0.att.v2" not in s
    assert s["blocks.1.att.v1"] == (128, 16) and s["blocks.2.att.v2"] == (16, 128)
    assert s["blocks.0.att.w1"] == (128, 32) and s["blocks.0.att.a2"] == (48, 128) and s["blocks.0.att.g2"] == (64, 128)
    assert s["blocks.0.att.r_k"] == (2, 64) and s["blocks.0.ffn.key.weight"] == (512, 128)
    assert not any("time" in n or "ffn.receptance" in n or "att.gate" in n for n in s)
    assert R7.Config.from_state_dict({n: torch.zeros(shp) for n, shp in s.items()}) == cfg
    # spec 1.2 table of the model-code rule
    table = {768: (64, 64, 32, 128), 1024: (64, 64, 32, 128), 2048: (96, 96, 64, 256),
             2560: (96, 96, 64, 320), 4096: (128, 128, 96, 480), 128: (32, 32, 32, 32)}
    for C, want in table.items():
        assert R7.default_lora_dims(C) == want, C


def test_v7_train_parts_and_targets():
    cfg = _tiny_cfg(7)
    base = cfg.expected_shapes().keys()
    lora = [m + s for m in R7.lora_target_modules(2) for s in (".lora_A", ".lora_B")]
    assert len(lora) == 2 * 6 * 2
    assert not any("gate" in n or "ffn.receptance" in n for n in lora)
    assert R6.trainable_names(base, [], ["time"]) == []  # "time" matches nothing in v7 (spec 3.6)
    sel = R6.trainable_names(base, lora, ["time", "ln"])
    assert set(sel) - set(lora) == {n for n in base if "ln" in n}
    assert "blocks.1.att.ln_x.bias" in sel and "blocks.0.ln0.weight" in sel


def test_v7_decay_clamp_and_l2_floor():
    z = torch.tensor([-50.0, -5.0, -0.5, 0.0, 3.0, 50.0], dtype=D64)
    w = -R7.softplus(-z) - 0.5
    assert torch.all(w <= -0.5) and torch.all(w[:-1] < -0.5)
    assert torch.allclose(w[:2], z[:2] - 0.5, atol=1e-2)  # ~ identity - 0.5 far below 0
    assert torch.allclose(R7.softplus(z), F.softplus(z, threshold=1e9), atol=1e-15)
    d = torch.exp(-torch.exp(w))
    assert torch.all(d >= math.exp(-math.exp(-0.5)) - 1e-15)
    # kk floor: a zero head gives kk = 0, not NaN
    cfg, base, lora, idx, tg = _tiny_model(7, seed=2)
    p = dict(base)
    p["blocks.0.att.k_k"] = torch.zeros_like(p["blocks.0.att.k_k"])
    assert torch.isfinite(R7.RWKV7(cfg, p, lora, 1.0).forward(idx)).all()


def test_v7_value_residual_direction():
    """Layer >= 1: v = v + (v_first - v) sigmoid(v0 + ...): with v0 = +40 (sigmoid = 1 in float64) the layer's
    own value linear has no effect (v = v_first); with v0 = -40 it matters."""
    cfg, base, lora, idx, tg = _tiny_model(7, seed=3)
    for v0, should_change in ((40.0, False), (-40.0, True)):
        p = dict(base)
        p["blocks.1.att.v0"] = torch.full_like(p["blocks.1.att.v0"], v0)
        a = R7.RWKV7(cfg, p, {}, 1.0).forward(idx)
        p["blocks.1.att.value.weight"] = p["blocks.1.att.value.weight"] * 1.5
        b = R7.RWKV7(cfg, p, {}, 1.0).forward(idx)
        assert (not torch.allclose(a, b, atol=1e-12)) == should_change, v0


def test_v7_time_state_is_the_initial_state():
    """time_state [H, value, key] is S_{-1} of every sequence (spec 1.8), fed to wkv7 as is."""
    cfg, base, lora, idx, tg = _tiny_model(7, seed=4)
    p = dict(base)
    p["blocks.0.att.time_state"] = torch.zeros(2, 4, 4, dtype=D64)
    a = R7.RWKV7(cfg, p, lora, 1.0).forward(idx)
    assert torch.allclose(a, R7.RWKV7(cfg, base, lora, 1.0).forward(idx), atol=1e-13)
    p["blocks.0.att.time_state"] = 0.5 * torch.randn(2, 4, 4, dtype=D64)
    assert not torch.allclose(a, R7.RWKV7(cfg, p, lora, 1.0).forward(idx), atol=1e-6)


# ----------------------------------------------------------------------------------------------
# whole models
# ----------------------------------------------------------------------------------------------
def _gradcheck_all(version, seed):
    cfg, base, lora, idx, tg = _tiny_model(version, seed=seed)
    names_b, names_l = sorted(base), sorted(lora)
    inputs = [base[n].to(DEV).clone().requires_grad_(True) for n in names_b] + \
             [lora[n].to(DEV).clone().requires_grad_(True) for n in names_l]
    idx, tg = idx.to(DEV), tg.to(DEV)

    def f(*ts):
        p = dict(zip(names_b, ts[:len(names_b)]))
        lo = dict(zip(names_l, ts[len(names_b):]))
        return R6.loss_with_l2wrap(_model(version, cfg, p, lo, 4.0 / 2).forward(idx), tg, l2wrap=False)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=False)


def test_gradcheck_tiny_v5_all_parameters():
    """gradcheck (float64) of the loss w.r.t. every tensor of a tiny v5 model + LoRA r2 on all 8 linears."""
    _gradcheck_all(5, seed=7)


def test_gradcheck_tiny_v7_all_parameters():
    """gradcheck (float64) of the loss w.r.t. every tensor of a tiny v7 model + LoRA r2 on all 6 linears."""
    _gradcheck_all(7, seed=8)


def test_compute_reference_dispatch_l2wrap_and_selection():
    for version in (5, 7):
        cfg, base, lora, idx, tg = _tiny_model(version, seed=9)
        assert RR.detect_version(base) == version
        parts = ["time", "ln"]
        out = RR.compute_reference(base, lora, idx, tg, 2, 4.0, parts, device=DEV)
        names = {k[5:] for k in out if k.startswith("grad.")}
        assert names == set(R6.trainable_names(base.keys(), lora.keys(), parts))
        if version == 5:
            assert "blocks.0.att.time_decay" in names and "blocks.1.ffn.time_mix_r" in names
        else:
            assert not any("att.w0" in n or "x_" in n for n in names)
        no = RR.compute_reference(base, lora, idx, tg, 2, 4.0, parts, device=DEV, l2wrap=False)
        assert out["loss"].item() == no["loss"].item()
        p = {k: v.clone().requires_grad_(k == "ln_out.bias") for k, v in base.items()}
        logits = _model(version, cfg, p, lora, 2.0).forward(idx)
        B, T = idx.shape
        reg = R6.cross_entropy_mean(logits, tg) + 1e-4 / (B * T) * 0.5 * (logits.max(-1).values ** 2).sum()
        (gb,) = torch.autograd.grad(reg, [p["ln_out.bias"]])
        assert torch.allclose(out["grad.ln_out.bias"], gb, rtol=1e-12, atol=1e-15), version
        assert not torch.allclose(no["grad.ln_out.bias"], gb, rtol=1e-9, atol=0)
        # LoRA on a non-target linear is refused
        bad = dict(lora)
        bad["blocks.0.att.gate.lora_A" if version == 7 else "blocks.0.att.w9.lora_A"] = torch.zeros(2, 8, dtype=D64)
        try:
            RR.compute_reference(base, bad, idx, tg, 2, 4.0, parts, device=DEV)
            raise AssertionError("accepted a LoRA tensor for a non-target linear")
        except KeyError:
            pass


def test_make_case_key_sets(tmp_path=None):
    import tempfile
    from make_case import make_case
    d = str(tmp_path) if tmp_path else tempfile.mkdtemp(prefix="mk57-")
    for version in (5, 7):
        out = os.path.join(d, f"v{version}")
        meta = make_case(out, seed=1, layers=2, embd=16, head_size=8, ffn=64, vocab=23, batch=1, tlen=3,
                         version=version, d_w=4, d_a=6, d_v=2, d_g=8, adapter_overrides=True)
        sd = R6.load_pth(os.path.join(out, "model.pth"))
        ad = R6.load_pth(os.path.join(out, "adapter.pth"))
        cfg = RR.module_for(version).Config.from_state_dict(sd)
        assert {k: tuple(v.shape) for k, v in sd.items()} == cfg.expected_shapes()
        assert RR.detect_version(sd) == meta["version"] == version
        mods = set(cfg.lora_target_modules())
        assert {k.rsplit(".", 1)[0] for k in ad if "lora_" in k} == mods
        over = [k for k in ad if "lora_" not in k]
        assert over and all(k in sd and ad[k].shape == sd[k].shape for k in over)
        assert all(ad[k].abs().sum() > 0 for k in ad)
        if version == 7:
            assert (cfg.d_w, cfg.d_a, cfg.d_v, cfg.d_g) == (4, 6, 2, 8) and cfg.dim_ffn == 64


if __name__ == "__main__":
    import inspect
    import time
    fails = 0
    for name, fn in list(globals().items()):
        if name.startswith("test_") and inspect.isfunction(fn):
            t0 = time.time()
            try:
                fn()
                print(f"PASS {name} ({time.time() - t0:.1f} s)")
            except Exception as e:  # noqa: BLE001
                fails += 1
                print("FAIL", name, repr(e))
    sys.exit(1 if fails else 0)
