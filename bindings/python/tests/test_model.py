"""Models, adapters, training, evaluation, generation."""
import os
import threading

import numpy as np
import pytest

import rwkvpeft
from conftest import TINY, toy_batch


def test_fresh_model_info(model):
    i = model.info
    assert (i.version, i.n_layer, i.n_embd, i.head_size, i.vocab_size) == (6, 2, 64, 32, 64)
    assert i.n_head == 2 and i.n_params > 0 and i.n_trainable == 0


def test_attach_marks_trainable(model):
    model.attach(r=4, alpha=8, dropout=0, train_parts="")
    assert model.info.n_trainable > 0


def test_train_loss_falls(lora_model):
    inp, tgt = toy_batch()
    with lora_model.trainer(lr_init=1e-2, lr_final=1e-2) as t:
        losses = [t.step(inp, tgt).loss for _ in range(12)]
        r = t.step(inp.tolist(), tgt.tolist())  # lists work too
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    assert r.optimizer_step_taken and r.step == 13 and r.tokens == 13 * inp.size
    assert r.grad_norm > 0 and r.lr == pytest.approx(1e-2)


def test_train_8bit_adamw(lora_model):
    """optimizer="adamw8bit" (8-bit moments) trains too."""
    inp, tgt = toy_batch()
    with lora_model.trainer(lr_init=1e-2, lr_final=1e-2, optimizer="adamw8bit") as t:
        losses = [t.step(inp, tgt).loss for _ in range(12)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_loss_mask_and_accumulation(lora_model):
    inp, tgt = toy_batch()
    mask = np.ones(inp.shape, dtype=np.float64)
    mask[:, :4] = 0
    with lora_model.trainer(accumulate_grad_batches=2) as t:
        r1 = t.step(inp, tgt, mask)
        r2 = t.step(rwkvpeft.Batch(inp, tgt, mask.astype(np.float32)))
    assert not r1.optimizer_step_taken and r2.optimizer_step_taken and r2.step == 1
    ev = lora_model.evaluate(inp, tgt, loss_mask=mask)
    assert ev.n_tokens == pytest.approx(mask.sum())


def test_one_dimensional_batch(lora_model):
    inp, tgt = toy_batch(B=1)
    a = lora_model.evaluate(inp[0], tgt[0])
    b = lora_model.evaluate(inp, tgt)
    assert a == b and a.n_tokens == inp.size


def test_adapter_round_trip(ctx, tmp_path):
    inp, tgt = toy_batch()
    with ctx.new_model(seed=5, **TINY) as m:
        m.attach(r=4, alpha=8, dropout=0)
        with m.trainer(lr_init=1e-2, lr_final=1e-2) as t:
            for _ in range(5):
                t.step(inp, tgt)
        trained = m.logits(inp)
        path = str(tmp_path / "adapter.safetensors")
        m.save_adapter(path, dtype="f32")
        m.save_adapter(tmp_path / "adapter.pth", format="pth", dtype="bf16")
    assert os.path.getsize(path) > 0 and (tmp_path / "adapter.pth").stat().st_size > 0
    with ctx.new_model(seed=5, **TINY) as m2:
        m2.attach(r=4, alpha=8, dropout=0)
        fresh = m2.logits(inp)
        assert not np.array_equal(fresh, trained)
        m2.load_adapter(path)
        np.testing.assert_array_equal(m2.logits(inp), trained)


def test_model_save_and_load(ctx, tmp_path):
    inp, _ = toy_batch()
    with ctx.new_model(seed=9, **TINY) as m:
        ref = m.logits(inp)
        m.save(tmp_path / "base.safetensors", dtype="f32")
        m.save(str(tmp_path / "base.pth"), format="pth", dtype="f32")
    for name in ("base.safetensors", "base.pth"):
        with rwkvpeft.Model.load(ctx, tmp_path / name, grad_cp=True) as m:
            assert m.info.vocab_size == 64
            np.testing.assert_allclose(m.logits(inp), ref, rtol=1e-5, atol=1e-5)


def test_trainer_state_resume(ctx, tmp_path):
    inp, tgt = toy_batch()

    def run(split):
        with ctx.new_model(seed=3, **TINY) as m:
            m.attach(r=4, alpha=8, dropout=0)
            t = m.trainer(lr_init=5e-3, lr_final=5e-3)
            losses = [t.step(inp, tgt).loss for _ in range(split)]
            if split < 6:
                t.save_state(tmp_path / "state.safetensors")
                t.close()
                t = m.trainer(lr_init=5e-3, lr_final=5e-3)
                t.load_state(tmp_path / "state.safetensors")
                losses += [t.step(inp, tgt).loss for _ in range(6 - split)]
            t.close()
            return losses
    assert run(6) == run(3)


def test_evaluate(lora_model):
    inp, tgt = toy_batch()
    ev = lora_model.evaluate(inp, tgt)
    assert np.isfinite(ev.loss) and ev.loss > 0 and ev.n_tokens == inp.size
    # loss = mean cross-entropy of the logits
    lg = lora_model.logits(inp).astype(np.float64)
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    ce = lse - np.take_along_axis(lg, tgt[..., None], -1)[..., 0]
    assert ev.loss == pytest.approx(ce.mean(), rel=1e-4)


def test_logits_shapes(model):
    inp, _ = toy_batch()
    assert model.logits(inp).shape == (2, 16, 64)
    one = model.logits(inp[0])
    assert one.shape == (16, 64) and one.dtype == np.float32
    np.testing.assert_allclose(one, model.logits(inp)[0], rtol=1e-5, atol=1e-6)  # BLAS blocking


def test_embedding_on_host_gives_the_same_logits(ctx):
    inp, _ = toy_batch()
    with ctx.new_model(seed=1234, **TINY) as a, \
            ctx.new_model(seed=1234, embedding_on_host=True, **TINY) as b:
        np.testing.assert_array_equal(a.logits(inp), b.logits(inp))


def test_generate(lora_model):
    g1 = lora_model.generate([3, 4], max_new_tokens=8, temperature=0, stop_token=-1)
    assert g1.dtype == np.int32 and g1.shape == (8,)
    assert ((g1 >= 0) & (g1 < 64)).all()
    g2 = lora_model.generate(np.array([3, 4]), 8, temperature=0, stop_token=-1)
    np.testing.assert_array_equal(g1, g2)
    s1 = lora_model.generate([3], 12, temperature=1.0, top_p=0.9, seed=11, stop_token=-1)
    s2 = lora_model.generate([3], 12, temperature=1.0, top_p=0.9, seed=11, stop_token=-1)
    np.testing.assert_array_equal(s1, s2)
    # greedy continuation = argmax of the logits of the prompt
    first = int(np.argmax(lora_model.logits([3, 4])[-1]))
    assert g1[0] == first
    stop = lora_model.generate([3, 4], 8, temperature=0, stop_token=int(g1[0]))
    assert stop.tolist() == [g1[0]]
    assert lora_model.generate([3], 0).size == 0


def test_trained_model_generates_the_pattern(ctx):
    seq = (np.arange(33) * 5) % 64  # a cycle: every token has one successor
    inp, tgt = seq[:-1].reshape(1, -1), seq[1:].reshape(1, -1)
    with ctx.new_model(seed=1, **TINY) as m:
        m.attach(r=8, alpha=16, dropout=0)
        with m.trainer(lr_init=2e-2, lr_final=2e-2) as t:
            for _ in range(30):
                t.step(inp, tgt)
        out = m.generate(seq[:2], 6, temperature=0, stop_token=-1)
        assert out.tolist() == seq[2:8].tolist()


def test_one_tree_from_many_threads(ctx):
    """Calls on one tree are serialised by the binding: concurrent use is safe."""
    inp, tgt = toy_batch()
    models = []
    for s in range(2):
        m = ctx.new_model(seed=s, **TINY)
        m.attach(r=4)
        models.append((m, m.trainer()))
    errors = []

    def work(m, t):
        try:
            for _ in range(4):
                t.step(inp, tgt)
                m.evaluate(inp, tgt)
        except Exception as e:  # pragma: no cover
            errors.append(e)
    ths = [threading.Thread(target=work, args=mt) for mt in models]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors
    ctx.close()
    assert all(m.closed and t.closed for m, t in models)


def test_distinct_trees_in_parallel():
    inp, tgt = toy_batch()
    results = {}

    def work(k):
        with rwkvpeft.Context("cpu", log_level=-1, n_threads=1) as c:
            with c.new_model(seed=42, **TINY) as m:
                m.attach(r=4, dropout=0)
                with m.trainer() as t:
                    results[k] = [t.step(inp, tgt).loss for _ in range(3)]
    ths = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert results[0] == results[1] and len(results[0]) == 3


def test_merge_in_place_keeps_the_function(ctx, tmp_path):
    inp, tgt = toy_batch()
    with ctx.new_model(seed=4, **TINY) as m:
        m.attach(r=4, alpha=8, dropout=0, train_parts="")
        with m.trainer(lr_init=1e-2, lr_final=1e-2) as t:
            for _ in range(4):
                t.step(inp, tgt)
            with pytest.raises(rwkvpeft.RwkvpeftError) as e:
                m.merge()  # a trainer still exists
            assert e.value.code == rwkvpeft.Status.E_STATE
        with_adapter = m.logits(inp)
        m.save_adapter(tmp_path / "a.safetensors", dtype="f32")
        m.save(tmp_path / "base.safetensors", dtype="f32")  # base weights only
        m.merge()
        np.testing.assert_allclose(m.logits(inp), with_adapter, rtol=1e-4, atol=1e-4)
        assert m.info.n_trainable == 0
        m.attach(r=2)  # a plain model again: another adapter may be attached
    rwkvpeft.merge_files(tmp_path / "base.safetensors", tmp_path / "a.safetensors",
                         tmp_path / "merged.safetensors", lora_alpha=8, dtype="f32")
    with ctx.load_model(tmp_path / "merged.safetensors") as merged:
        np.testing.assert_allclose(merged.logits(inp), with_adapter, rtol=1e-4, atol=1e-4)
    with pytest.raises(rwkvpeft.RwkvpeftError) as e:  # LoRA needs lora_alpha
        rwkvpeft.merge_files(tmp_path / "base.safetensors", tmp_path / "a.safetensors",
                             tmp_path / "m2.safetensors")
    assert e.value.code == rwkvpeft.Status.E_INVALID_ARGUMENT and e.value.message


@pytest.mark.parametrize("method,opts", [("pissa", dict(r=4, svd_niter=2)), ("bone", dict(r=32)),
                                         ("bat", dict(r=32)), ("state", {})])
def test_other_methods_train(ctx, method, opts):
    inp, tgt = toy_batch()
    with ctx.new_model(seed=8, **TINY) as m:
        # a fresh model has zero att.output / ffn.value weights (the reference's init), so
        # nothing upstream of them gets a gradient: train a LoRA first and merge it
        m.attach(r=4, alpha=8, dropout=0, train_parts="")
        with m.trainer(lr_init=1e-2, lr_final=1e-2) as t:
            for _ in range(3):
                t.step(inp, tgt)
        m.merge()
        m.attach(method, train_emb_head=False, train_parts="", **opts)
        assert m.info.n_trainable > 0
        with m.trainer(lr_init=1e-2, lr_final=1e-2) as t:
            losses = [t.step(inp, tgt).loss for _ in range(6)]
        assert losses[-1] < losses[0], losses


def test_gpu_backends_when_present():
    """On a machine with a GPU module and device (CUDA or HIP): the same tiny LoRA run
    trains there, and its logits agree with the CPU's to bf16 tolerance."""
    gpus = [b.name for b in rwkvpeft.backends() if b.available and b.name in ("cuda", "hip")]
    if not gpus:
        pytest.skip("no GPU backend available here")
    inp, tgt = toy_batch()
    with rwkvpeft.Context("cpu", log_level=-1, n_threads=1) as c, c.new_model(seed=3, **TINY) as m:
        ref = m.logits(inp)
    for name in gpus:
        with rwkvpeft.Context(name, log_level=-1) as g:
            assert g.backend == name
            with g.new_model(seed=3, **TINY) as m:
                np.testing.assert_allclose(m.logits(inp), ref, atol=0.1, rtol=0.05)
                m.attach(r=4, alpha=8, dropout=0)
                with m.trainer(lr_init=1e-2, lr_final=1e-2) as t:
                    losses = [t.step(inp, tgt).loss for _ in range(10)]
                assert losses[-1] < 0.5 * losses[0], (name, losses)


def test_pissa_init_file(ctx, tmp_path):
    with ctx.new_model(seed=8, **TINY) as m:
        m.attach("pissa", r=4, svd_niter=2, train_parts="")
        m.save_pissa_init(tmp_path / "init_pissa.safetensors")
        m.check_pissa_init(tmp_path / "init_pissa.safetensors")
    with ctx.new_model(seed=9, **TINY) as other:  # other weights: another SVD
        other.attach("pissa", r=4, svd_niter=2, train_parts="")
        with pytest.raises(rwkvpeft.RwkvpeftError) as e:
            other.check_pissa_init(tmp_path / "init_pissa.safetensors")
        assert e.value.code == rwkvpeft.Status.E_SHAPE and e.value.message
    with ctx.new_model(seed=8, **TINY) as lora:
        lora.attach(r=4)
        with pytest.raises(rwkvpeft.RwkvpeftError) as e:
            lora.save_pissa_init(tmp_path / "x.safetensors")
        assert e.value.code == rwkvpeft.Status.E_STATE


def test_quantized_lora_and_merge(ctx, tmp_path):
    """quant (issue 6): a QLoRA run trains; merge_files with the same quant reproduces it."""
    inp, tgt = toy_batch()
    with ctx.new_model(seed=4, **TINY) as m:  # a base with non-zero linears: one LoRA merged
        m.attach(r=4, alpha=8, dropout=0, train_parts="")
        with m.trainer(lr_init=1e-2, lr_final=1e-2) as t:
            for _ in range(3):
                t.step(inp, tgt)
        m.merge()
        m.save(tmp_path / "base.safetensors", dtype="f32")
    with pytest.raises(ValueError):
        ctx.load_model(tmp_path / "base.safetensors", quant="int4")
    with ctx.load_model(tmp_path / "base.safetensors", quant="nf4") as q:
        q.attach(r=4, alpha=8, dropout=0, train_parts="")
        with q.trainer(lr_init=1e-2, lr_final=1e-2) as t:
            losses = [t.step(inp, tgt).loss for _ in range(8)]
        assert losses[-1] < losses[0], losses
        with_adapter = q.logits(inp)
        q.save_adapter(tmp_path / "a.safetensors", dtype="f32")
    rwkvpeft.merge_files(tmp_path / "base.safetensors", tmp_path / "a.safetensors",
                         tmp_path / "merged.safetensors", lora_alpha=8, dtype="f32", quant="nf4")
    with ctx.load_model(tmp_path / "merged.safetensors") as merged:
        np.testing.assert_allclose(merged.logits(inp), with_adapter, rtol=1e-4, atol=1e-4)
