"""Loading, versions, backends and the 1:1 ctypes layer (struct sizes and defaults)."""
import ctypes
import math

import pytest

import rwkvpeft
from rwkvpeft import _ffi


def test_version():
    assert rwkvpeft.version_number() == _ffi.RWKVPEFT_VERSION_NUMBER
    assert rwkvpeft.version().startswith("%d.%d.%d" % (_ffi.RWKVPEFT_VERSION_MAJOR,
                                                       _ffi.RWKVPEFT_VERSION_MINOR,
                                                       _ffi.RWKVPEFT_VERSION_PATCH))
    assert rwkvpeft.library_path().endswith(".so.%d.%d.%d" % (0, 1, 0)) or \
        ".so" in rwkvpeft.library_path()


def test_every_function_declared():
    lib = _ffi.load()
    assert _ffi.missing_functions == [], "library older than the binding"
    for name, (restype, argtypes) in _ffi.FUNCTIONS.items():
        fn = getattr(lib, name)
        assert fn.argtypes == argtypes, name
        assert fn.restype == restype, name


def test_status_strings():
    for s in rwkvpeft.Status:
        text = _ffi.lib.rwkvpeft_status_string(int(s)).decode()
        assert text, s
    assert rwkvpeft.RwkvpeftError(-3, "x").status == _ffi.lib.rwkvpeft_status_string(-3).decode()


def test_backends():
    bs = rwkvpeft.backends()
    names = [b.name for b in bs]
    assert "cpu" in names and "cpu64" in names
    cpu = bs[names.index("cpu")]
    assert cpu.available and cpu.device_count == 1 and cpu.description


@pytest.mark.parametrize("cls,init", [
    (_ffi.rwkvpeft_context_params, "rwkvpeft_context_params_init"),
    (_ffi.rwkvpeft_model_config, "rwkvpeft_model_config_init"),
    (_ffi.rwkvpeft_model_params, "rwkvpeft_model_params_init"),
    (_ffi.rwkvpeft_adapter_params, "rwkvpeft_adapter_params_init"),
    (_ffi.rwkvpeft_merge_params, "rwkvpeft_merge_params_init"),
    (_ffi.rwkvpeft_batch, "rwkvpeft_batch_init"),
    (_ffi.rwkvpeft_generate_params, "rwkvpeft_generate_params_init"),
    (_ffi.rwkvpeft_train_params, "rwkvpeft_train_params_init"),
    (_ffi.rwkvpeft_jsonl_params, "rwkvpeft_jsonl_params_init"),
    (_ffi.rwkvpeft_sampler_params, "rwkvpeft_sampler_params_init"),
])
def test_struct_size_matches_c(cls, init):
    """*_init writes the C sizeof into struct_size: it must equal ctypes' size."""
    p = cls()
    p.struct_size = 0
    getattr(_ffi.lib, init)(ctypes.byref(p))
    assert p.struct_size == ctypes.sizeof(cls)


def test_defaults_land_in_the_right_fields():
    """The documented defaults read back field by field (catches offset mistakes)."""
    lib = _ffi.lib
    t = _ffi.rwkvpeft_train_params()
    lib.rwkvpeft_train_params_init(ctypes.byref(t))
    assert math.isclose(t.lr_init, 6e-4, rel_tol=1e-6) and math.isclose(t.lr_final, 1e-5, rel_tol=1e-6)
    assert (t.lr_schedule, t.total_steps, t.warmup_steps) == (0, 0, -1)
    assert math.isclose(t.beta1, 0.9, rel_tol=1e-6) and math.isclose(t.beta2, 0.99, rel_tol=1e-6)
    assert math.isclose(t.adam_eps, 1e-8, rel_tol=1e-6) and t.weight_decay == 0
    assert t.grad_clip == 1.0 and t.accumulate_grad_batches == 1 and t.layerwise_lr == 1
    assert (t.chunk_ctx, t.infctx_full, t.optimizer) == (0, 1, _ffi.RWKVPEFT_OPTIM_ADAMW)
    a = _ffi.rwkvpeft_adapter_params()
    lib.rwkvpeft_adapter_params_init(ctypes.byref(a))
    assert (a.method, a.r, a.alpha, a.full_finetune, a.train_emb_head, a.seed) == (1, 8, 32.0, 0, -1, 42)
    assert math.isclose(a.dropout, 0.01, rel_tol=1e-6) and a.train_parts == b"time,ln"
    assert (a.svd_niter, a.pissa_init, a.key_name) == (4, None, None)
    mp = _ffi.rwkvpeft_merge_params()
    lib.rwkvpeft_merge_params_init(ctypes.byref(mp))
    assert (mp.method, mp.format, mp.dtype, mp.base_path) == (-1, 0, 1, None)
    assert math.isnan(mp.lora_alpha)
    g = _ffi.rwkvpeft_generate_params()
    lib.rwkvpeft_generate_params_init(ctypes.byref(g))
    assert (g.max_new_tokens, g.temperature, g.seed, g.stop_token) == (100, 1.0, 0, 0)
    assert math.isclose(g.top_p, 0.85, rel_tol=1e-6)
    c = _ffi.rwkvpeft_model_config()
    lib.rwkvpeft_model_config_init(ctypes.byref(c))
    assert (c.version, c.n_layer, c.n_embd, c.dim_att, c.dim_ffn, c.head_size, c.vocab_size) == \
        (6, 2, 128, 0, 0, 64, 65536)
    s = _ffi.rwkvpeft_sampler_params()
    lib.rwkvpeft_sampler_params_init(ctypes.byref(s))
    assert (s.data_type, s.dataload, s.loss_mask) == (b"binidx", b"get", b"none")
    assert (s.ctx_len, s.micro_bsz, s.epoch_steps, s.data_shuffle, s.my_pile_shift) == (1024, 12, 0, 1, -1)
    assert not s.tokenizer
    j = _ffi.rwkvpeft_jsonl_params()
    lib.rwkvpeft_jsonl_params_init(ctypes.byref(j))
    assert (j.fields, j.append_eod, j.jsonl_path) == (b"text", 1, None)
    cp = _ffi.rwkvpeft_context_params()
    lib.rwkvpeft_context_params_init(ctypes.byref(cp))
    assert (cp.backend, cp.device, cp.n_threads, cp.log_level, cp.module_path) == (None, 0, 0, 1, None)


def test_raw_layer_round_trip():
    """The thin layer alone: create a context and a model, read info, free."""
    lib = _ffi.lib
    p = _ffi.rwkvpeft_context_params()
    lib.rwkvpeft_context_params_init(ctypes.byref(p))
    p.backend = b"cpu"
    p.log_level = -1
    ctx = ctypes.POINTER(_ffi.rwkvpeft_context)()
    assert lib.rwkvpeft_context_create(ctypes.byref(p), ctypes.byref(ctx)) == 0
    assert lib.rwkvpeft_context_backend(ctx) == b"cpu"
    free, total = ctypes.c_uint64(), ctypes.c_uint64()
    assert lib.rwkvpeft_context_memory(ctx, ctypes.byref(free), ctypes.byref(total)) == 0
    assert 0 < free.value <= total.value
    cfg = _ffi.rwkvpeft_model_config()
    lib.rwkvpeft_model_config_init(ctypes.byref(cfg))
    cfg.n_embd, cfg.head_size, cfg.vocab_size = 64, 32, 100
    m = ctypes.POINTER(_ffi.rwkvpeft_model)()
    assert lib.rwkvpeft_model_init(ctx, ctypes.byref(cfg), None, 7, ctypes.byref(m)) == 0
    info = _ffi.rwkvpeft_model_info()
    assert lib.rwkvpeft_model_get_info(m, ctypes.byref(info)) == 0
    assert (info.struct_size, info.n_layer, info.n_embd, info.n_head, info.vocab_size) == \
        (ctypes.sizeof(info), 2, 64, 2, 100)
    assert info.n_params > 0 and info.n_trainable == 0
    lib.rwkvpeft_model_free(m)
    lib.rwkvpeft_context_free(ctx)
    lib.rwkvpeft_context_free(None)  # NULL is a no-op


def test_context_options(ctx):
    assert ctx.backend == "cpu"
    free, total = ctx.memory()
    assert 0 < free <= total
    assert "cpu" in repr(ctx)


def test_log_callback():
    got = []
    with rwkvpeft.Context("cpu", n_threads=1, log_level="debug", log=lambda lv, msg: got.append((lv, msg))) as c:
        with c.new_model(seed=1, n_layer=1, n_embd=32, head_size=32, vocab_size=16) as m:
            m.attach(r=2)
    assert got and all(isinstance(lv, int) and isinstance(msg, str) for lv, msg in got)
    assert any("adapter attached" in msg for _, msg in got)


def test_log_callback_exception_is_contained():
    def bad(level, msg):
        raise RuntimeError("boom")
    with rwkvpeft.Context("cpu", n_threads=1, log_level=3, log=bad) as c:
        with c.new_model(seed=1, n_layer=1, n_embd=32, head_size=32, vocab_size=16) as m:
            m.attach(r=2)
