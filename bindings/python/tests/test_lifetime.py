"""Freeing: deterministic, idempotent, no growth over many create/destroy cycles."""
import gc
import os

import numpy as np
import pytest

import rwkvpeft
from conftest import TINY, toy_batch


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cycle(inp, tgt, tmp):
    with rwkvpeft.Context("cpu", log_level=-1, n_threads=1) as c:
        m = c.new_model(seed=1, **TINY)
        m.attach(r=4)
        t = m.trainer()
        t.step(inp, tgt)
        m.evaluate(inp, tgt)
        m.logits(inp)
        m.generate([1], 4, stop_token=-1)
    # leaving the block closed the trainer and the model too
    assert t.closed and m.closed


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_growth_over_many_cycles(tmp_path):
    inp, tgt = toy_batch()
    for _ in range(30):  # warm up allocator pools, thread pools, caches
        cycle(inp, tgt, tmp_path)
    gc.collect()
    before = rss_bytes()
    for _ in range(300):
        cycle(inp, tgt, tmp_path)
    gc.collect()
    grown = rss_bytes() - before
    # one leaked tiny model is ~1 MB (weights + Adam + activations): 300 cycles would be
    # hundreds of MB; allow a few MB of allocator noise
    assert grown < 8 * 2 ** 20, "RSS grew by %.1f MB over 300 cycles" % (grown / 2 ** 20)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_growth_data_handles(tmp_path):
    prefix = str(tmp_path / "d")
    with rwkvpeft.DatasetWriter(prefix, vocab_size=64) as w:
        for i in range(4):
            w.add(np.arange(1, 60) % 63 + 1)

    def one():
        with rwkvpeft.Dataset(prefix) as ds:
            ds.read(0, 10)
        with rwkvpeft.Sampler(prefix, ctx_len=16, micro_bsz=2, epoch_steps=4) as s:
            s.next_batch()
        with rwkvpeft.DatasetWriter(str(tmp_path / "w"), vocab_size=64) as w:
            w.add([1, 2, 3])
    for _ in range(50):
        one()
    gc.collect()
    before = rss_bytes()
    for _ in range(500):
        one()
    gc.collect()
    assert rss_bytes() - before < 4 * 2 ** 20


def test_double_close_is_safe(ctx):
    m = ctx.new_model(seed=1, **TINY)
    m.attach(r=4)
    t = m.trainer()
    t.close()
    t.close()
    m.close()
    m.close()
    assert t.closed and m.closed
    with pytest.raises(ValueError, match="closed"):
        m.evaluate(*toy_batch())
    with pytest.raises(ValueError, match="closed"):
        t.step(*toy_batch())
    del t, m
    gc.collect()


def test_closing_parent_closes_children():
    c = rwkvpeft.Context("cpu", log_level=-1, n_threads=1)
    m1 = c.new_model(seed=1, **TINY)
    m2 = c.new_model(seed=2, **TINY)
    m1.attach(r=4)
    t = m1.trainer()
    c.close()
    assert c.closed and m1.closed and m2.closed and t.closed
    c.close()
    m1.close()
    t.close()
    with pytest.raises(ValueError):
        c.new_model()


def test_garbage_collection_frees_in_order():
    """Dropping every reference frees children before parents (trainer keeps model keeps
    context alive)."""
    c = rwkvpeft.Context("cpu", log_level=-1, n_threads=1)
    m = c.new_model(seed=1, **TINY)
    m.attach(r=4)
    t = m.trainer()
    del c, m
    inp, tgt = toy_batch()
    assert np.isfinite(t.step(inp, tgt).loss)  # parents still alive through t
    del t
    gc.collect()


def test_model_close_with_live_trainer(ctx):
    m = ctx.new_model(seed=1, **TINY)
    m.attach(r=4)
    t = m.trainer()
    m.close()
    assert t.closed


def test_context_manager_exit_twice(ctx):
    m = ctx.new_model(seed=1, **TINY)
    with m:
        pass
    assert m.closed
    with pytest.raises(ValueError):
        with m:
            pass


def test_tokenizer_close(vocab_path):
    tok = rwkvpeft.Tokenizer(vocab_path)
    tok.close()
    tok.close()
    with pytest.raises(ValueError):
        tok.encode("x")


def test_raw_free_null_is_noop():
    lib = rwkvpeft._ffi.lib
    for name in ("rwkvpeft_context_free", "rwkvpeft_model_free", "rwkvpeft_trainer_free",
                 "rwkvpeft_tokenizer_free", "rwkvpeft_dataset_free",
                 "rwkvpeft_dataset_writer_free", "rwkvpeft_sampler_free"):
        getattr(lib, name)(None)


def test_no_wrong_order_free_at_interpreter_exit(tmp_path):
    """Handles left alive at exit are finalised in any order by the garbage collector; the
    C library must still see trainer -> model -> context (it logs an error otherwise)."""
    import subprocess
    import sys
    script = tmp_path / "leave_alive.py"
    script.write_text(
        "import os, rwkvpeft\n"
        "log = lambda l, m, w=os.write: w(2, (m + '\\n').encode())\n"
        "c = rwkvpeft.Context('cpu', log_level='info', log=log)\n"
        "m = c.new_model(seed=1, n_layer=1, n_embd=32, head_size=32, vocab_size=16)\n"
        "m.attach(r=2)\n"
        "t = m.trainer()\n")
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(rwkvpeft.__file__)))
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("RWKVPEFT_LIB", rwkvpeft.library_path())
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "not freed" not in r.stderr and "still use" not in r.stderr, r.stderr
    # the same without a callback: the library's own stderr logging at the default level
    script.write_text(
        "import rwkvpeft\n"
        "c = rwkvpeft.Context('cpu')\n"
        "m = c.new_model(seed=1, n_layer=1, n_embd=32, head_size=32, vocab_size=16)\n"
        "m.attach(r=2)\n"
        "t = m.trainer()\n"
        "cycle = [c, m, t]\n"
        "cycle.append(cycle)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and "not freed" not in r.stderr, r.stderr


def test_tokenizer_close_waits_for_its_samplers(vocab_path, sample_jsonl):
    tok = rwkvpeft.Tokenizer(vocab_path)
    s = rwkvpeft.Sampler(sample_jsonl, data_type="jsonl", tokenizer=tok, ctx_len=16,
                         micro_bsz=2)
    tok.close()  # the C tokenizer stays alive for the sampler
    assert tok.closed
    with pytest.raises(ValueError):
        tok.encode("x")
    assert s.next_batch().inputs.shape == (2, 16)
    s.close()  # frees the sampler, then the tokenizer
    assert tok._pending is None and tok._live == 0
