"""Thin 1:1 ctypes layer over include/rwkvpeft.h.

Every struct of the header is a ``ctypes.Structure`` with the same name and the same fields
in the same order (ctypes applies the C alignment rules, so the padding matches), and every
``RWKVPEFT_API`` function is declared in ``FUNCTIONS`` with its restype and argtypes.
``bindings/check_drift.py`` compares both tables with the header.

Nothing here frees, checks or converts: this is the C API spelled in Python. The library is
loaded lazily on first use of ``lib`` (or explicitly with ``load()``); structures can be used
without it.

Library lookup order (``find_library_path`` / ``load``):

1. ``$RWKVPEFT_LIB``: full path of the shared library;
2. a copy inside this package's folder (``librwkvpeft.so.0`` or ``librwkvpeft.so``);
3. the system: ``dlopen("librwkvpeft.so.0")`` (``LD_LIBRARY_PATH``, ld.so cache, default
   folders), then ``ctypes.util.find_library("rwkvpeft")``.
"""
import ctypes
import ctypes.util
import os
import sys
import threading

from ctypes import (POINTER, c_char, c_char_p, c_double, c_float, c_int32, c_int64, c_size_t,
                    c_uint32, c_uint64, c_void_p)

# --------------------------------------------------------------------------------------
# Constants (values copied from the header; they never change between releases)
# --------------------------------------------------------------------------------------
RWKVPEFT_VERSION_MAJOR = 0
RWKVPEFT_VERSION_MINOR = 1
RWKVPEFT_VERSION_PATCH = 0
RWKVPEFT_VERSION_NUMBER = (RWKVPEFT_VERSION_MAJOR * 10000 + RWKVPEFT_VERSION_MINOR * 100
                           + RWKVPEFT_VERSION_PATCH)

RWKVPEFT_OK = 0
RWKVPEFT_E_INVALID_ARGUMENT = -1
RWKVPEFT_E_OUT_OF_MEMORY = -2
RWKVPEFT_E_IO = -3
RWKVPEFT_E_FORMAT = -4
RWKVPEFT_E_SHAPE = -5
RWKVPEFT_E_UNSUPPORTED = -6
RWKVPEFT_E_BACKEND = -7
RWKVPEFT_E_NUMERIC = -8
RWKVPEFT_E_STATE = -9
RWKVPEFT_E_INTERNAL = -10

RWKVPEFT_LOG_ERROR = 0
RWKVPEFT_LOG_WARN = 1
RWKVPEFT_LOG_INFO = 2
RWKVPEFT_LOG_DEBUG = 3

RWKVPEFT_FORMAT_AUTO = 0
RWKVPEFT_FORMAT_PTH = 1
RWKVPEFT_FORMAT_SAFETENSORS = 2

RWKVPEFT_DTYPE_F32 = 0
RWKVPEFT_DTYPE_BF16 = 1
RWKVPEFT_DTYPE_F16 = 2

RWKVPEFT_PEFT_NONE = 0
RWKVPEFT_PEFT_LORA = 1
RWKVPEFT_PEFT_PISSA = 2
RWKVPEFT_PEFT_BONE = 3
RWKVPEFT_PEFT_BAT = 4
RWKVPEFT_PEFT_STATE = 5

RWKVPEFT_QUANT_NONE = 0
RWKVPEFT_QUANT_NF4 = 1
RWKVPEFT_QUANT_FP4 = 2
RWKVPEFT_QUANT_INT8 = 3
RWKVPEFT_QUANT_FP8 = 4

RWKVPEFT_IGNORE_INDEX = -100

RWKVPEFT_LR_COS = 0
RWKVPEFT_LR_EXP = 1
RWKVPEFT_LR_WSD = 2

RWKVPEFT_OPTIM_ADAMW = 0
RWKVPEFT_OPTIM_ADAMW_8BIT = 1

# C enums are int-sized on every ABI this library supports
rwkvpeft_status = c_int32
rwkvpeft_file_format = c_int32
rwkvpeft_dtype = c_int32

# --------------------------------------------------------------------------------------
# Opaque handles
# --------------------------------------------------------------------------------------


class rwkvpeft_context(ctypes.Structure):
    pass


class rwkvpeft_model(ctypes.Structure):
    pass


class rwkvpeft_trainer(ctypes.Structure):
    pass


class rwkvpeft_tokenizer(ctypes.Structure):
    pass


class rwkvpeft_dataset(ctypes.Structure):
    pass


class rwkvpeft_dataset_writer(ctypes.Structure):
    pass


class rwkvpeft_sampler(ctypes.Structure):
    pass


# --------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------
# typedef void (*rwkvpeft_log_fn)(void *user, int32_t level, const char *message);
rwkvpeft_log_fn = ctypes.CFUNCTYPE(None, c_void_p, c_int32, c_char_p)
# int32_t (*progress)(void *user, uint64_t bytes_done, uint64_t bytes_total, uint64_t docs)
rwkvpeft_progress_fn = ctypes.CFUNCTYPE(c_int32, c_void_p, c_uint64, c_uint64, c_uint64)

# --------------------------------------------------------------------------------------
# Size-versioned structs (same field order and types as the header)
# --------------------------------------------------------------------------------------


class _Sized(ctypes.Structure):
    """A struct whose first field is ``struct_size``; constructing one sets it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.struct_size = ctypes.sizeof(self)


class rwkvpeft_backend_info(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("name", c_char * 16),
        ("available", c_int32),
        ("device_count", c_int32),
        ("description", c_char * 192),
    ]


class rwkvpeft_context_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("backend", c_char_p),
        ("device", c_int32),
        ("n_threads", c_int32),
        ("log_level", c_int32),
        ("log_fn", rwkvpeft_log_fn),
        ("log_user", c_void_p),
        ("module_path", c_char_p),
    ]


class rwkvpeft_model_config(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("version", c_int32),
        ("n_layer", c_int32),
        ("n_embd", c_int32),
        ("dim_att", c_int32),
        ("dim_ffn", c_int32),
        ("head_size", c_int32),
        ("vocab_size", c_int32),
    ]


class rwkvpeft_model_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("grad_cp", c_int32),
        # appended in 0.1 (issue 6)
        ("quant", c_int32),
        ("embedding_on_host", c_int32),
    ]


class rwkvpeft_model_info(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("version", c_int32),
        ("n_layer", c_int32),
        ("n_embd", c_int32),
        ("dim_att", c_int32),
        ("dim_ffn", c_int32),
        ("n_head", c_int32),
        ("head_size", c_int32),
        ("vocab_size", c_int32),
        ("dim_mix", c_int32),
        ("dim_decay", c_int32),
        ("n_params", c_int64),
        ("n_trainable", c_int64),
        ("dim_w", c_int32),
        ("dim_a", c_int32),
        ("dim_v", c_int32),
        ("dim_g", c_int32),
    ]


class rwkvpeft_adapter_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("method", c_int32),
        ("r", c_int32),
        ("alpha", c_float),
        ("dropout", c_float),
        ("train_parts", c_char_p),
        ("full_finetune", c_int32),
        ("train_emb_head", c_int32),
        ("seed", c_uint64),
        # appended in 0.1 (issue 4)
        ("svd_niter", c_int32),
        ("pissa_init", c_char_p),
        ("key_name", c_char_p),
    ]


class rwkvpeft_merge_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("base_path", c_char_p),
        ("adapter_path", c_char_p),
        ("output_path", c_char_p),
        ("method", c_int32),
        ("lora_alpha", c_float),
        ("pissa_init", c_char_p),
        ("format", c_int32),
        ("dtype", c_int32),
        # appended in 0.1 (issue 6)
        ("quant", c_int32),
    ]


class rwkvpeft_batch(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("batch_size", c_int32),
        ("seq_len", c_int32),
        ("inputs", POINTER(c_int32)),
        ("targets", POINTER(c_int32)),
        ("loss_mask", POINTER(c_float)),
    ]


class rwkvpeft_eval_result(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("loss", c_double),
        ("n_tokens", c_double),
    ]


class rwkvpeft_generate_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("max_new_tokens", c_int32),
        ("temperature", c_float),
        ("top_p", c_float),
        ("seed", c_uint64),
        ("stop_token", c_int32),
    ]


class rwkvpeft_train_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("lr_init", c_float),
        ("lr_final", c_float),
        ("lr_schedule", c_int32),
        ("total_steps", c_int64),
        ("warmup_steps", c_int32),
        ("beta1", c_float),
        ("beta2", c_float),
        ("adam_eps", c_float),
        ("weight_decay", c_float),
        ("grad_clip", c_float),
        ("accumulate_grad_batches", c_int32),
        ("layerwise_lr", c_int32),
        ("chunk_ctx", c_int32),
        ("infctx_full", c_int32),
        ("optimizer", c_int32),
    ]


class rwkvpeft_step_result(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("loss", c_double),
        ("grad_norm", c_double),
        ("lr", c_double),
        ("optimizer_step_taken", c_int32),
        ("step", c_int64),
        ("tokens", c_int64),
    ]


class rwkvpeft_jsonl_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("jsonl_path", c_char_p),
        ("output_prefix", c_char_p),
        ("vocab_path", c_char_p),
        ("fields", c_char_p),
        ("append_eod", c_int32),
        ("progress", rwkvpeft_progress_fn),
        ("progress_user", c_void_p),
    ]


class rwkvpeft_sampler_params(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("data_file", c_char_p),
        ("data_type", c_char_p),
        ("vocab_path", c_char_p),
        ("dataload", c_char_p),
        ("loss_mask", c_char_p),
        ("mask_id", c_char_p),
        ("sft_fields", c_char_p),
        ("ctx_len", c_int32),
        ("micro_bsz", c_int32),
        ("epoch_steps", c_int64),
        ("data_shuffle", c_int32),
        ("seed", c_uint64),
        ("my_pile_stage", c_int32),
        ("magic_prime", c_int64),
        ("my_pile_shift", c_int64),
        ("tokenizer", POINTER(rwkvpeft_tokenizer)),
    ]


class rwkvpeft_sampler_info(_Sized):
    _fields_ = [
        ("struct_size", c_uint32),
        ("n_docs", c_int64),
        ("n_tokens", c_int64),
        ("epoch_steps", c_int64),
        ("ctx_len", c_int32),
        ("micro_bsz", c_int32),
        ("magic_epoch_count", c_int64),
    ]


STRUCTS = [
    rwkvpeft_backend_info, rwkvpeft_context_params, rwkvpeft_model_config,
    rwkvpeft_model_params, rwkvpeft_model_info, rwkvpeft_adapter_params,
    rwkvpeft_merge_params, rwkvpeft_batch,
    rwkvpeft_eval_result, rwkvpeft_generate_params, rwkvpeft_train_params,
    rwkvpeft_step_result, rwkvpeft_jsonl_params, rwkvpeft_sampler_params,
    rwkvpeft_sampler_info,
]

# --------------------------------------------------------------------------------------
# Functions: name -> (restype, [argtypes]), in header order
# --------------------------------------------------------------------------------------
_P = POINTER
_ctx, _model, _trainer = _P(rwkvpeft_context), _P(rwkvpeft_model), _P(rwkvpeft_trainer)
_tok, _ds, _dsw, _smp = (_P(rwkvpeft_tokenizer), _P(rwkvpeft_dataset),
                         _P(rwkvpeft_dataset_writer), _P(rwkvpeft_sampler))
_i32p, _i64p, _u64p, _f32p, _szp = (_P(c_int32), _P(c_int64), _P(c_uint64), _P(c_float),
                                    _P(c_size_t))

FUNCTIONS = {
    # versions, errors
    "rwkvpeft_version_number": (c_uint32, []),
    "rwkvpeft_version_string": (c_char_p, []),
    "rwkvpeft_status_string": (c_char_p, [rwkvpeft_status]),
    "rwkvpeft_last_error": (c_char_p, []),
    # backends
    "rwkvpeft_backend_count": (c_int32, []),
    "rwkvpeft_backend_get_info": (rwkvpeft_status, [c_int32, _P(rwkvpeft_backend_info)]),
    # context
    "rwkvpeft_context_params_init": (None, [_P(rwkvpeft_context_params)]),
    "rwkvpeft_context_create": (rwkvpeft_status, [_P(rwkvpeft_context_params), _P(_ctx)]),
    "rwkvpeft_context_free": (None, [_ctx]),
    "rwkvpeft_context_backend": (c_char_p, [_ctx]),
    "rwkvpeft_context_last_error": (c_char_p, [_ctx]),
    "rwkvpeft_context_memory": (rwkvpeft_status, [_ctx, _u64p, _u64p]),
    # models
    "rwkvpeft_model_config_init": (None, [_P(rwkvpeft_model_config)]),
    "rwkvpeft_model_params_init": (None, [_P(rwkvpeft_model_params)]),
    "rwkvpeft_model_load": (rwkvpeft_status,
                            [_ctx, c_char_p, _P(rwkvpeft_model_params), _P(_model)]),
    "rwkvpeft_model_init": (rwkvpeft_status, [_ctx, _P(rwkvpeft_model_config),
                                              _P(rwkvpeft_model_params), c_uint64, _P(_model)]),
    "rwkvpeft_model_save": (rwkvpeft_status,
                            [_model, c_char_p, rwkvpeft_file_format, rwkvpeft_dtype]),
    "rwkvpeft_model_get_info": (rwkvpeft_status, [_model, _P(rwkvpeft_model_info)]),
    "rwkvpeft_model_free": (None, [_model]),
    "rwkvpeft_model_last_error": (c_char_p, [_model]),
    # adapters
    "rwkvpeft_adapter_params_init": (None, [_P(rwkvpeft_adapter_params)]),
    "rwkvpeft_adapter_attach": (rwkvpeft_status, [_model, _P(rwkvpeft_adapter_params)]),
    "rwkvpeft_adapter_load": (rwkvpeft_status, [_model, c_char_p]),
    "rwkvpeft_save_adapter": (rwkvpeft_status,
                              [_model, c_char_p, rwkvpeft_file_format, rwkvpeft_dtype]),
    "rwkvpeft_pissa_save_init": (rwkvpeft_status, [_model, c_char_p, rwkvpeft_file_format]),
    "rwkvpeft_pissa_check_init": (rwkvpeft_status, [_model, c_char_p]),
    "rwkvpeft_model_merge": (rwkvpeft_status, [_model]),
    "rwkvpeft_merge_params_init": (None, [_P(rwkvpeft_merge_params)]),
    "rwkvpeft_merge_files": (rwkvpeft_status, [_P(rwkvpeft_merge_params)]),
    # batches, evaluation, generation
    "rwkvpeft_batch_init": (None, [_P(rwkvpeft_batch)]),
    "rwkvpeft_evaluate": (rwkvpeft_status,
                          [_model, _P(rwkvpeft_batch), _P(rwkvpeft_eval_result)]),
    "rwkvpeft_model_logits": (rwkvpeft_status, [_model, _i32p, c_int32, c_int32, _f32p]),
    "rwkvpeft_generate_params_init": (None, [_P(rwkvpeft_generate_params)]),
    "rwkvpeft_generate": (rwkvpeft_status, [_model, _i32p, c_size_t, _P(rwkvpeft_generate_params),
                                            _i32p, c_size_t, _szp]),
    # training
    "rwkvpeft_train_params_init": (None, [_P(rwkvpeft_train_params)]),
    "rwkvpeft_trainer_create": (rwkvpeft_status,
                                [_model, _P(rwkvpeft_train_params), _P(_trainer)]),
    "rwkvpeft_trainer_free": (None, [_trainer]),
    "rwkvpeft_trainer_last_error": (c_char_p, [_trainer]),
    "rwkvpeft_train_step": (rwkvpeft_status,
                            [_trainer, _P(rwkvpeft_batch), _P(rwkvpeft_step_result)]),
    "rwkvpeft_trainer_save_state": (rwkvpeft_status, [_trainer, c_char_p]),
    "rwkvpeft_trainer_load_state": (rwkvpeft_status, [_trainer, c_char_p]),
    # tokenizer
    "rwkvpeft_tokenizer_load": (rwkvpeft_status, [c_char_p, _P(_tok)]),
    "rwkvpeft_tokenizer_free": (None, [_tok]),
    "rwkvpeft_tokenizer_vocab_size": (c_int32, [_tok]),
    # text is any bytes (NULs included): c_void_p so that ctypes does not stop at a NUL
    "rwkvpeft_tokenizer_encode": (rwkvpeft_status,
                                  [_tok, c_void_p, c_size_t, _i32p, c_size_t, _szp]),
    "rwkvpeft_tokenizer_decode": (rwkvpeft_status,
                                  [_tok, _i32p, c_size_t, c_void_p, c_size_t, _szp]),
    # datasets
    "rwkvpeft_dataset_open": (rwkvpeft_status, [c_char_p, _P(_ds)]),
    "rwkvpeft_dataset_free": (None, [_ds]),
    "rwkvpeft_dataset_num_docs": (c_int64, [_ds]),
    "rwkvpeft_dataset_num_tokens": (c_int64, [_ds]),
    "rwkvpeft_dataset_doc": (rwkvpeft_status, [_ds, c_int64, _i64p, _i64p]),
    "rwkvpeft_dataset_read": (rwkvpeft_status, [_ds, c_int64, c_int64, _i32p]),
    "rwkvpeft_dataset_last_error": (c_char_p, [_ds]),
    "rwkvpeft_dataset_writer_create": (rwkvpeft_status, [c_char_p, c_int32, c_int32, _P(_dsw)]),
    "rwkvpeft_dataset_writer_add": (rwkvpeft_status, [_dsw, _i32p, c_int64]),
    "rwkvpeft_dataset_writer_finish": (rwkvpeft_status, [_dsw]),
    "rwkvpeft_dataset_writer_free": (None, [_dsw]),
    "rwkvpeft_dataset_writer_last_error": (c_char_p, [_dsw]),
    "rwkvpeft_jsonl_params_init": (None, [_P(rwkvpeft_jsonl_params)]),
    "rwkvpeft_jsonl_to_binidx": (rwkvpeft_status, [_P(rwkvpeft_jsonl_params), _i64p, _i64p]),
    # samplers
    "rwkvpeft_sampler_params_init": (None, [_P(rwkvpeft_sampler_params)]),
    "rwkvpeft_sampler_create": (rwkvpeft_status, [_P(rwkvpeft_sampler_params), _P(_smp)]),
    "rwkvpeft_sampler_free": (None, [_smp]),
    "rwkvpeft_sampler_next": (rwkvpeft_status, [_smp, _i32p, _i32p, _f32p, _i32p]),
    "rwkvpeft_sampler_set_position": (rwkvpeft_status, [_smp, c_int64, c_int64]),
    "rwkvpeft_sampler_get_position": (rwkvpeft_status, [_smp, _i64p, _i64p]),
    "rwkvpeft_sampler_get_info": (rwkvpeft_status, [_smp, _P(rwkvpeft_sampler_info)]),
    "rwkvpeft_sampler_last_error": (c_char_p, [_smp]),
}

# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
_SONAME = "librwkvpeft.so.0" if not sys.platform.startswith("darwin") else "librwkvpeft.0.dylib"
_lock = threading.Lock()
_lib = None
_lib_path = None
missing_functions = []  # functions of FUNCTIONS the loaded library does not export


def candidate_paths():
    """The places load() tries, in order (paths or bare names for dlopen's own search)."""
    out = []
    env = os.environ.get("RWKVPEFT_LIB")
    if env:
        out.append(env)
    here = os.path.dirname(os.path.abspath(__file__))
    for name in (_SONAME, "librwkvpeft.so"):
        p = os.path.join(here, name)
        if os.path.exists(p):
            out.append(p)
    out.append(_SONAME)
    found = ctypes.util.find_library("rwkvpeft")
    if found:
        out.append(found)
    return out


def declare(cdll):
    """Sets restype/argtypes of every function of FUNCTIONS on a loaded CDLL."""
    missing = []
    for name, (restype, argtypes) in FUNCTIONS.items():
        try:
            fn = getattr(cdll, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    return missing


def load(path=None):
    """Loads (once) and returns the library as a ctypes.CDLL with every function declared.

    `path` overrides the lookup. Raises OSError naming every place tried when none works,
    or when the library's major version differs from this binding's."""
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            if path is not None and os.path.realpath(path) != _lib_path:
                raise OSError("librwkvpeft is already loaded from %s" % _lib_path)
            return _lib
        tried = []
        env = os.environ.get("RWKVPEFT_LIB")
        cands = [path] if path else candidate_paths()
        cdll = None
        for c in cands:
            try:
                cdll = ctypes.CDLL(c)
                _lib_path = c
                break
            except OSError as e:
                tried.append("%s (%s)" % (c, e))
                if env and c == env:
                    # an explicit RWKVPEFT_LIB that does not load is an error, not a hint
                    raise OSError("RWKVPEFT_LIB=%s cannot be loaded: %s" % (env, e)) from e
        if cdll is None:
            raise OSError("librwkvpeft not found; set RWKVPEFT_LIB to its full path. Tried: "
                          + "; ".join(tried))
        # a library older than this binding lacks the newest functions: it still loads,
        # and calling one of those fails with AttributeError (listed in missing_functions)
        missing_functions[:] = declare(cdll)
        v = cdll.rwkvpeft_version_number()
        if v // 10000 != RWKVPEFT_VERSION_MAJOR:
            raise OSError("%s is version %d.%d.%d; this binding needs %d.x"
                          % (_lib_path, v // 10000, v // 100 % 100, v % 100,
                             RWKVPEFT_VERSION_MAJOR))
        try:
            real = _dl_path(cdll) or _lib_path
        except Exception:  # pragma: no cover - best effort
            real = _lib_path
        _lib_path = real
        _lib = cdll
        return cdll


def _dl_path(cdll):
    """Absolute path of the file a CDLL came from (dladdr on one of its symbols)."""
    class Dl_info(ctypes.Structure):
        _fields_ = [("dli_fname", c_char_p), ("dli_fbase", c_void_p),
                    ("dli_sname", c_char_p), ("dli_saddr", c_void_p)]
    libc = ctypes.CDLL(None)
    dladdr = libc.dladdr
    dladdr.argtypes = [c_void_p, POINTER(Dl_info)]
    dladdr.restype = ctypes.c_int
    info = Dl_info()
    addr = ctypes.cast(cdll.rwkvpeft_version_number, c_void_p)
    if dladdr(addr, ctypes.byref(info)) and info.dli_fname:
        return os.path.realpath(os.fsdecode(info.dli_fname))
    return None


def library_path():
    """Path of the loaded library file (loads it if needed)."""
    load()
    return _lib_path


def __getattr__(name):  # PEP 562: `_ffi.lib` loads on first use
    if name == "lib":
        return load()
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
