"""Pythonic layer over rwkvpeft._ffi.

Handles are Python objects with ``close()`` (idempotent), context-manager support and a
finaliser as a safety net. Parents stay alive while children exist (a Model keeps its
Context, a Trainer its Model), and closing a parent closes its children first, so the C
rule "free trainers before models before contexts" always holds.

Thread safety follows include/rwkvpeft.h: a Context, its Models and their Trainers form one
tree whose calls must not overlap; every call on a tree takes the tree's lock (an RLock on
the Context), so using one tree from several Python threads is safe (serialised). Tokenizers
are immutable and lock-free; Datasets, DatasetWriters and Samplers have their own lock.
"""
import ctypes
import enum
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import _ffi

__all__ = [
    "Status", "RwkvpeftError", "version", "version_number", "last_error", "library_path",
    "BackendInfo", "backends", "Context", "Model", "ModelInfo", "Trainer", "StepResult",
    "EvalResult", "Tokenizer", "Dataset", "DatasetWriter", "jsonl_to_binidx", "Sampler",
    "SamplerInfo", "Batch", "IGNORE_INDEX", "merge_files",
]

IGNORE_INDEX = _ffi.RWKVPEFT_IGNORE_INDEX


def _lib():
    return _ffi.load()


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
class Status(enum.IntEnum):
    """rwkvpeft_status codes (values fixed forever)."""
    OK = 0
    E_INVALID_ARGUMENT = -1
    E_OUT_OF_MEMORY = -2
    E_IO = -3
    E_FORMAT = -4
    E_SHAPE = -5
    E_UNSUPPORTED = -6
    E_BACKEND = -7
    E_NUMERIC = -8
    E_STATE = -9
    E_INTERNAL = -10


class RwkvpeftError(Exception):
    """A failed library call.

    Attributes: ``code`` (a Status, or the raw int for a code this binding does not know),
    ``status`` (the library's short text for the code, e.g. "i/o error") and ``message``
    (the C error message of the failure)."""

    def __init__(self, code, message="", status=None):
        try:
            code = Status(code)
        except ValueError:
            code = int(code)
        if status is None:
            try:
                status = _str(_lib().rwkvpeft_status_string(int(code)))
            except OSError:
                status = ""
        self.code = code
        self.status = status
        self.message = message
        super().__init__(code, message, status)

    def __str__(self):
        name = self.code.name if isinstance(self.code, Status) else str(self.code)
        return "%s (%s: %s)" % (self.message or self.status, name, self.status)


def _str(b):
    return b.decode("utf-8", "replace") if b is not None else ""


def last_error():
    """Message of the most recent failure in this thread ("" when none)."""
    return _str(_lib().rwkvpeft_last_error())


def _check(status, handle_error=None):
    if status != 0:
        msg = _str(_lib().rwkvpeft_last_error())
        if not msg and handle_error is not None:
            msg = handle_error()
        raise RwkvpeftError(status, msg)


def version():
    """Version string of the loaded library, e.g. "0.1.0 (cpu openblas, cuda module)"."""
    return _str(_lib().rwkvpeft_version_string())


def version_number():
    """MAJOR*10000 + MINOR*100 + PATCH of the loaded library."""
    return int(_lib().rwkvpeft_version_number())


def library_path():
    """Absolute path of the loaded librwkvpeft."""
    return _ffi.library_path()


# --------------------------------------------------------------------------------------
# Option structs from keyword arguments
# --------------------------------------------------------------------------------------
_INT_RANGES = {
    ctypes.c_int32: (-2 ** 31, 2 ** 31 - 1), ctypes.c_uint32: (0, 2 ** 32 - 1),
    ctypes.c_int64: (-2 ** 63, 2 ** 63 - 1), ctypes.c_uint64: (0, 2 ** 64 - 1),
}


def _encode(v):
    if v is None:
        return None
    if isinstance(v, (str, bytes, os.PathLike)):
        return os.fsencode(v)
    raise TypeError("expected str, bytes or a path, got %s" % type(v).__name__)


def _enum(table, what):
    def conv(v):
        if isinstance(v, str):
            try:
                return table[v.lower()]
            except KeyError:
                raise ValueError("%s: unknown value %r (one of %s)"
                                 % (what, v, ", ".join(sorted(table)))) from None
        return int(v)
    return conv


_FORMATS = {"auto": _ffi.RWKVPEFT_FORMAT_AUTO, "pth": _ffi.RWKVPEFT_FORMAT_PTH,
            "safetensors": _ffi.RWKVPEFT_FORMAT_SAFETENSORS}
_DTYPES = {"f32": _ffi.RWKVPEFT_DTYPE_F32, "float32": _ffi.RWKVPEFT_DTYPE_F32,
           "bf16": _ffi.RWKVPEFT_DTYPE_BF16, "bfloat16": _ffi.RWKVPEFT_DTYPE_BF16,
           "f16": _ffi.RWKVPEFT_DTYPE_F16, "float16": _ffi.RWKVPEFT_DTYPE_F16}
_METHODS = {"none": _ffi.RWKVPEFT_PEFT_NONE, "lora": _ffi.RWKVPEFT_PEFT_LORA,
            "pissa": _ffi.RWKVPEFT_PEFT_PISSA, "bone": _ffi.RWKVPEFT_PEFT_BONE,
            "bat": _ffi.RWKVPEFT_PEFT_BAT, "state": _ffi.RWKVPEFT_PEFT_STATE}
# --quant names of RWKV-PEFT; "4bit" is fp4 (bitsandbytes' default 4-bit type)
_QUANTS = {"none": _ffi.RWKVPEFT_QUANT_NONE, "nf4": _ffi.RWKVPEFT_QUANT_NF4,
           "fp4": _ffi.RWKVPEFT_QUANT_FP4, "4bit": _ffi.RWKVPEFT_QUANT_FP4,
           "int8": _ffi.RWKVPEFT_QUANT_INT8, "fp8": _ffi.RWKVPEFT_QUANT_FP8}
_SCHEDULES = {"cos": _ffi.RWKVPEFT_LR_COS, "exp": _ffi.RWKVPEFT_LR_EXP,
              "wsd": _ffi.RWKVPEFT_LR_WSD}
_OPTIMIZERS = {"adamw": _ffi.RWKVPEFT_OPTIM_ADAMW, "adamw8bit": _ffi.RWKVPEFT_OPTIM_ADAMW_8BIT}
_LOG_LEVELS = {"none": -1, "error": 0, "warn": 1, "warning": 1, "info": 2, "debug": 3}


def _fill(cls, init_name, kwargs, converters=None, skip=()):
    """A `cls` struct filled by the C init function, then the keyword options applied.
    Unknown names are a TypeError; out-of-range integers a ValueError (ctypes would
    silently truncate them)."""
    p = cls()
    getattr(_lib(), init_name)(ctypes.byref(p))
    types = dict(cls._fields_)
    converters = converters or {}
    for k, v in kwargs.items():
        if k == "struct_size" or k not in types or k in skip:
            raise TypeError("unknown option %r (options: %s)" % (
                k, ", ".join(f for f in types if f != "struct_size" and f not in skip)))
        if k in converters:
            v = converters[k](v)
        t = types[k]
        if t is ctypes.c_char_p:
            v = _encode(v)
        elif t in _INT_RANGES:
            if isinstance(v, bool):
                v = int(v)
            if not isinstance(v, (int, np.integer)):
                raise TypeError("option %r must be an integer, got %r" % (k, v))
            lo, hi = _INT_RANGES[t]
            if not lo <= int(v) <= hi:
                raise ValueError("option %r = %d is out of range [%d, %d]" % (k, v, lo, hi))
            v = int(v)
        elif t is ctypes.c_float or t is ctypes.c_double:
            v = float(v)
        setattr(p, k, v)
    return p


def _to_dict(struct, dataclass_type):
    return dataclass_type(**{f: getattr(struct, f) for f in dataclass_type.__dataclass_fields__})


# --------------------------------------------------------------------------------------
# numpy helpers
# --------------------------------------------------------------------------------------
_I32P = ctypes.POINTER(ctypes.c_int32)
_F32P = ctypes.POINTER(ctypes.c_float)


def _ids(x, what):
    """int32 C-contiguous copy/view of an array-like of token ids."""
    a = np.asarray(x)
    if a.dtype != np.int32:
        if a.size == 0:
            a = a.astype(np.int32)
        elif a.dtype.kind not in "iu":
            raise TypeError("%s must hold integers, got dtype %s" % (what, a.dtype))
        else:
            lo, hi = int(a.min()), int(a.max())
            if lo < -2 ** 31 or hi >= 2 ** 31:
                raise ValueError("%s: value out of int32 range" % what)
            a = a.astype(np.int32)
    return np.ascontiguousarray(a)


def _floats(x, what):
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError("%s must hold numbers, got dtype %s" % (what, a.dtype))
    return np.ascontiguousarray(a, dtype=np.float32)


def _ptr(a, ptype):
    return a.ctypes.data_as(ptype)


@dataclass(frozen=True)
class Batch:
    """A training batch: arrays [batch_size, seq_len] (inputs/targets int32, mask float32)."""
    inputs: np.ndarray
    targets: np.ndarray
    mask: Optional[np.ndarray] = None


def _make_batch(inputs, targets, loss_mask):
    """(rwkvpeft_batch, arrays to keep alive)."""
    if isinstance(inputs, Batch):
        if targets is not None or loss_mask is not None:
            raise TypeError("pass either a Batch or inputs/targets/loss_mask")
        inputs, targets, loss_mask = inputs.inputs, inputs.targets, inputs.mask
    if targets is None:
        raise TypeError("targets are required")
    inp = _ids(inputs, "inputs")
    tgt = _ids(targets, "targets")
    if inp.ndim == 1:
        inp = inp.reshape(1, -1)
    if tgt.ndim == 1:
        tgt = tgt.reshape(1, -1)
    if inp.ndim != 2 or inp.shape != tgt.shape:
        raise ValueError("inputs and targets must have the same shape [batch, seq_len] "
                         "(got %s and %s)" % (inp.shape, tgt.shape))
    msk = None
    if loss_mask is not None:
        msk = _floats(loss_mask, "loss_mask")
        if msk.size != inp.size:
            raise ValueError("loss_mask must have the shape of inputs %s" % (inp.shape,))
        msk = msk.reshape(inp.shape)
    b = _ffi.rwkvpeft_batch()
    _lib().rwkvpeft_batch_init(ctypes.byref(b))
    b.batch_size, b.seq_len = inp.shape
    b.inputs = _ptr(inp, _I32P)
    b.targets = _ptr(tgt, _I32P)
    b.loss_mask = _ptr(msk, _F32P) if msk is not None else None
    return b, (inp, tgt, msk)


# --------------------------------------------------------------------------------------
# Handles
# --------------------------------------------------------------------------------------
_COUNT_LOCK = threading.RLock()


class _Handle:
    """Owns one C handle. close() is idempotent; the finaliser closes too.

    Parent/child bookkeeping (a Model is a child of its Context, a Trainer of its Model, a
    Sampler of the Tokenizer it uses): a child keeps its parent alive, and a parent counts
    its live children. Closing a parent explicitly closes the children it can still reach
    first. When it cannot (the garbage collector finalises a whole group of objects in any
    order, and weak references are cleared before finalisers run), the parent's C handle
    is kept and freed by its last child, so the C library never sees a free in the wrong
    order."""
    _free_name = None
    _err_name = None
    _ptr = None
    _pending = None  # C handle whose free waits for live children
    _live = 0  # children whose C handle is not freed yet
    _parent = None

    def _lock_for(self):
        return self._lock

    @property
    def closed(self):
        return self._ptr is None

    def _p(self):
        if self._ptr is None:
            raise ValueError("operation on a closed %s" % type(self).__name__)
        return self._ptr

    def _handle_error(self):
        if self._ptr is None or self._err_name is None:
            return ""
        return _str(getattr(_lib(), self._err_name)(self._ptr))

    def _call(self, name, *args):
        """Calls lib.<name>(handle, *args) under the handle's lock and raises on failure."""
        with self._lock_for():
            st = getattr(_lib(), name)(self._p(), *args)
            _check(st, self._handle_error)

    def _adopt(self, parent):
        """Registers self (just created) as a child of `parent`."""
        with _COUNT_LOCK:
            self._parent = parent
            parent._live += 1
            kids = getattr(parent, "_children", None)
            if kids is not None:
                kids.add(self)

    def close(self):
        """Frees the C handle (and its children first). Safe to call more than once."""
        lock = getattr(self, "_lock", None)
        if lock is None:
            return
        with self._lock_for():
            for child in list(getattr(self, "_children", ())):
                child.close()
            ptr, self._ptr = self._ptr, None
            if not ptr:
                return
            with _COUNT_LOCK:
                if self._live > 0:
                    self._pending = ptr  # freed by the last child (see the class doc)
                    return
            self._free(ptr)

    def _free(self, ptr):
        getattr(_lib(), self._free_name)(ptr)
        with _COUNT_LOCK:
            parent, self._parent = self._parent, None
        if parent is not None:
            kids = getattr(parent, "_children", None)
            if kids is not None:
                kids.discard(self)
            parent._child_freed()

    def _child_freed(self):
        with _COUNT_LOCK:
            self._live -= 1
            ptr = None
            if self._live == 0 and self._pending is not None:
                ptr, self._pending = self._pending, None
        if ptr is not None:
            self._free(ptr)

    def __enter__(self):
        self._p()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible to do
            pass


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    device_count: int
    description: str


def backends():
    """Every backend this build knows, with availability and a reason when unavailable."""
    lib = _lib()
    out = []
    for i in range(lib.rwkvpeft_backend_count()):
        info = _ffi.rwkvpeft_backend_info()
        _check(lib.rwkvpeft_backend_get_info(i, ctypes.byref(info)))
        out.append(BackendInfo(_str(info.name), bool(info.available), int(info.device_count),
                               _str(info.description)))
    return out


# --------------------------------------------------------------------------------------
# Context
# --------------------------------------------------------------------------------------
class Context(_Handle):
    """One backend instance. Options (rwkvpeft_context_params):

    backend   "auto" (default; $RWKVPEFT_BACKEND decides), "cpu", "cpu64", "cuda", "hip"
    device    GPU index
    n_threads CPU threads (0 = all cores)
    log_level -1/"none", 0/"error", 1/"warn" (default), 2/"info", 3/"debug"
    log       callable(level: int, message: str); default: the library writes to stderr
    module_path  folder of the GPU modules
    """
    _free_name = "rwkvpeft_context_free"
    _err_name = "rwkvpeft_context_last_error"

    def __init__(self, backend=None, *, log=None, **options):
        self._lock = threading.RLock()
        self._children = weakref.WeakSet()
        self._log_cb = None
        conv = {"log_level": _enum(_LOG_LEVELS, "log_level")}
        if backend is not None:
            options["backend"] = backend
        p = _fill(_ffi.rwkvpeft_context_params, "rwkvpeft_context_params_init", options, conv,
                  skip=("log_fn", "log_user"))
        if log is not None:
            if not callable(log):
                raise TypeError("log must be callable(level, message)")

            def _trampoline(_user, level, message, _log=log):
                try:
                    _log(int(level), _str(message))
                except Exception:  # never let an exception cross into C
                    pass
            self._log_cb = _ffi.rwkvpeft_log_fn(_trampoline)
            p.log_fn = self._log_cb
        out = ctypes.POINTER(_ffi.rwkvpeft_context)()
        _check(_lib().rwkvpeft_context_create(ctypes.byref(p), ctypes.byref(out)))
        self._ptr = out

    @property
    def backend(self):
        """Name of the backend the context runs on ("cpu", "cuda", ...)."""
        with self._lock:
            return _str(_lib().rwkvpeft_context_backend(self._p()))

    @property
    def last_error_message(self):
        with self._lock:
            return _str(_lib().rwkvpeft_context_last_error(self._p()))

    def memory(self):
        """(free_bytes, total_bytes) of the device (host RAM on the CPU backends)."""
        f, t = ctypes.c_uint64(), ctypes.c_uint64()
        self._call("rwkvpeft_context_memory", ctypes.byref(f), ctypes.byref(t))
        return int(f.value), int(t.value)

    def load_model(self, path, **params):
        """Model.load(self, path, **params)."""
        return Model.load(self, path, **params)

    def new_model(self, seed=0, **config):
        """Model.init(self, seed, **config)."""
        return Model.init(self, seed=seed, **config)

    def __repr__(self):
        return "<rwkvpeft.Context %s>" % ("closed" if self.closed else self.backend)


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelInfo:
    version: int
    n_layer: int
    n_embd: int
    dim_att: int
    dim_ffn: int
    n_head: int
    head_size: int
    vocab_size: int
    dim_mix: int
    dim_decay: int
    n_params: int
    n_trainable: int
    dim_w: int = 0  # RWKV-7 low-rank widths (0 for RWKV-5/6)
    dim_a: int = 0
    dim_v: int = 0
    dim_g: int = 0


@dataclass(frozen=True)
class EvalResult:
    loss: float
    n_tokens: float


_MODEL_PARAMS_CONV = {"grad_cp": int, "quant": _enum(_QUANTS, "quant"), "embedding_on_host": int}


class Model(_Handle):
    """An RWKV model on a Context. Create with Model.load / Model.init (or
    Context.load_model / Context.new_model)."""
    _free_name = "rwkvpeft_model_free"
    _err_name = "rwkvpeft_model_last_error"

    def __init__(self, _ctx, _ptr):
        self._ctx = _ctx
        self._lock = _ctx._lock
        self._children = weakref.WeakSet()
        self._ptr = _ptr
        self._vocab = None
        self._adopt(_ctx)

    @classmethod
    def load(cls, ctx, path, **params):
        """Loads a .pth or .safetensors RWKV checkpoint. params: grad_cp (bool), quant
        ("none", "nf4", "fp4", "4bit" = fp4, "int8", "fp8": the 8 block linears are
        quantized at adapter attach, or at the first forward without an adapter),
        embedding_on_host (bool: a frozen emb.weight stays in host memory; each batch's
        rows are copied to the device — less device memory, same results)."""
        p = _fill(_ffi.rwkvpeft_model_params, "rwkvpeft_model_params_init", params,
                  _MODEL_PARAMS_CONV)
        out = ctypes.POINTER(_ffi.rwkvpeft_model)()
        with ctx._lock:
            _check(_lib().rwkvpeft_model_load(ctx._p(), _encode(path), ctypes.byref(p),
                                              ctypes.byref(out)))
            return cls(ctx, out)

    @classmethod
    def init(cls, ctx, seed=0, *, grad_cp=False, quant="none", embedding_on_host=False, **config):
        """A fresh model. config (rwkvpeft_model_config): version, n_layer, n_embd,
        dim_att, dim_ffn, head_size, vocab_size; quant and embedding_on_host as in load."""
        c = _fill(_ffi.rwkvpeft_model_config, "rwkvpeft_model_config_init", config)
        p = _fill(_ffi.rwkvpeft_model_params, "rwkvpeft_model_params_init",
                  {"grad_cp": grad_cp, "quant": quant, "embedding_on_host": embedding_on_host},
                  _MODEL_PARAMS_CONV)
        out = ctypes.POINTER(_ffi.rwkvpeft_model)()
        with ctx._lock:
            _check(_lib().rwkvpeft_model_init(ctx._p(), ctypes.byref(c), ctypes.byref(p),
                                              int(seed), ctypes.byref(out)))
            return cls(ctx, out)

    @property
    def context(self):
        return self._ctx

    @property
    def info(self):
        i = _ffi.rwkvpeft_model_info()
        self._call("rwkvpeft_model_get_info", ctypes.byref(i))
        return _to_dict(i, ModelInfo)

    @property
    def vocab_size(self):
        if self._vocab is None:
            self._vocab = self.info.vocab_size
        return self._vocab

    def save(self, path, format="auto", dtype="bf16"):
        """Writes the base weights as an RWKV checkpoint (format auto/pth/safetensors,
        dtype f32/bf16/f16)."""
        self._call("rwkvpeft_model_save", _encode(path), _enum(_FORMATS, "format")(format),
                   _enum(_DTYPES, "dtype")(dtype))

    # adapters ---------------------------------------------------------------------------
    def attach(self, method="lora", **params):
        """Attaches an adapter (rwkvpeft_adapter_params): method ("lora", "pissa", "bone",
        "bat", "state" or "none"), r, alpha, dropout, train_parts, full_finetune,
        train_emb_head (None = automatic), seed, svd_niter, pissa_init, key_name."""
        params["method"] = method
        if params.get("train_emb_head", -1) is None:
            params["train_emb_head"] = -1
        p = _fill(_ffi.rwkvpeft_adapter_params, "rwkvpeft_adapter_params_init", params,
                  {"method": _enum(_METHODS, "method")})
        self._call("rwkvpeft_adapter_attach", ctypes.byref(p))

    def load_adapter(self, path):
        """Loads trainable tensors from an adapter file (ours or RWKV-PEFT's)."""
        self._call("rwkvpeft_adapter_load", _encode(path))

    def save_adapter(self, path, format="auto", dtype="bf16"):
        """Writes every trainable tensor under the reference's key names."""
        self._call("rwkvpeft_save_adapter", _encode(path), _enum(_FORMATS, "format")(format),
                   _enum(_DTYPES, "dtype")(dtype))

    def save_pissa_init(self, path, format="auto"):
        """PiSSA: writes the init file a later merge needs (RWKV-PEFT's init_pissa.pth)."""
        self._call("rwkvpeft_pissa_save_init", _encode(path), _enum(_FORMATS, "format")(format))

    def check_pissa_init(self, path):
        """PiSSA: raises RwkvpeftError (E_SHAPE) unless the init file at `path` holds the
        init of the attached adapter."""
        self._call("rwkvpeft_pissa_check_init", _encode(path))

    def merge(self):
        """Folds the attached adapter into the weights and detaches it (close this model's
        trainers first)."""
        self._call("rwkvpeft_model_merge")

    # inference --------------------------------------------------------------------------
    def evaluate(self, inputs, targets=None, loss_mask=None):
        """Loss of a batch (no gradients). inputs/targets: [B, T] or [T] ids (or a Batch)."""
        b, keep = _make_batch(inputs, targets, loss_mask)
        r = _ffi.rwkvpeft_eval_result()
        self._call("rwkvpeft_evaluate", ctypes.byref(b), ctypes.byref(r))
        del keep
        return EvalResult(float(r.loss), float(r.n_tokens))

    def logits(self, tokens):
        """float32 logits [B, T, vocab] for ids [B, T] (or [T, vocab] for ids [T])."""
        t = _ids(tokens, "tokens")
        one = t.ndim == 1
        if one:
            t = t.reshape(1, -1)
        if t.ndim != 2 or t.size == 0:
            raise ValueError("tokens must be a non-empty [batch, seq_len] array")
        out = np.empty((t.shape[0], t.shape[1], self.vocab_size), dtype=np.float32)
        self._call("rwkvpeft_model_logits", _ptr(t, _I32P), t.shape[0], t.shape[1],
                   _ptr(out, _F32P))
        return out[0] if one else out

    def generate(self, prompt, max_new_tokens=100, **params):
        """New token ids (int32 array) continuing `prompt` (ids). params
        (rwkvpeft_generate_params): temperature (<= 0 greedy), top_p, seed, stop_token
        (-1 never stops; the stop token is included)."""
        pr = _ids(prompt, "prompt").reshape(-1)
        params["max_new_tokens"] = max_new_tokens
        p = _fill(_ffi.rwkvpeft_generate_params, "rwkvpeft_generate_params_init", params)
        cap = max(int(p.max_new_tokens), 0)
        out = np.zeros(max(cap, 1), dtype=np.int32)
        n = ctypes.c_size_t()
        self._call("rwkvpeft_generate", _ptr(pr, _I32P), pr.size, ctypes.byref(p),
                   _ptr(out, _I32P), cap, ctypes.byref(n))
        return out[:n.value].copy()

    def trainer(self, **params):
        """Trainer(self, **params)."""
        return Trainer(self, **params)

    def __repr__(self):
        return "<rwkvpeft.Model%s>" % (" closed" if self.closed else "")


def merge_files(base_path, adapter_path, output_path, method=None, lora_alpha=None,
                pissa_init=None, format="auto", dtype="bf16", quant="none"):
    """File-to-file merge of an adapter into a base checkpoint (rwkvpeft_merge_files), as
    RWKV-PEFT's merge scripts. method None = from the tensors; lora_alpha is required for
    LoRA adapters; quant = the format the adapter was trained with (merge.py --quant: the
    block linears become dequant(quant(W)) before the adapter is folded in)."""
    opts = {"base_path": base_path, "adapter_path": adapter_path, "output_path": output_path,
            "format": format, "dtype": dtype, "quant": quant}
    if method is not None:
        opts["method"] = method
    if lora_alpha is not None:
        opts["lora_alpha"] = lora_alpha
    if pissa_init is not None:
        opts["pissa_init"] = pissa_init
    p = _fill(_ffi.rwkvpeft_merge_params, "rwkvpeft_merge_params_init", opts,
              {"method": _enum(_METHODS, "method"), "format": _enum(_FORMATS, "format"),
               "dtype": _enum(_DTYPES, "dtype"), "quant": _enum(_QUANTS, "quant")})
    _check(_lib().rwkvpeft_merge_files(ctypes.byref(p)))


# --------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    optimizer_step_taken: bool
    step: int
    tokens: int


class Trainer(_Handle):
    """Optimizer state for a model with an attached adapter. Options
    (rwkvpeft_train_params): lr_init, lr_final, lr_schedule ("cos"/"exp"/"wsd"),
    total_steps, warmup_steps, beta1, beta2, adam_eps, weight_decay, grad_clip,
    accumulate_grad_batches, layerwise_lr, chunk_ctx (long-context training: chunk length,
    0 = off), infctx_full (1: gradients through the carried states; 0: truncated),
    optimizer ("adamw": fp32 moments, default; "adamw8bit": blockwise 8-bit moments)."""
    _free_name = "rwkvpeft_trainer_free"
    _err_name = "rwkvpeft_trainer_last_error"

    def __init__(self, model, **params):
        self._lock = model._lock
        self._model = model
        p = _fill(_ffi.rwkvpeft_train_params, "rwkvpeft_train_params_init", params,
                  {"lr_schedule": _enum(_SCHEDULES, "lr_schedule"), "layerwise_lr": int,
                   "optimizer": _enum(_OPTIMIZERS, "optimizer")})
        out = ctypes.POINTER(_ffi.rwkvpeft_trainer)()
        with self._lock:
            _check(_lib().rwkvpeft_trainer_create(model._p(), ctypes.byref(p),
                                                  ctypes.byref(out)))
            self._ptr = out
            self._adopt(model)

    @property
    def model(self):
        return self._model

    def step(self, inputs, targets=None, loss_mask=None):
        """One micro-batch (forward, backward, optimizer step every
        accumulate_grad_batches calls). inputs/targets [B, T] or [T] ids, or a Batch."""
        b, keep = _make_batch(inputs, targets, loss_mask)
        r = _ffi.rwkvpeft_step_result()
        self._call("rwkvpeft_train_step", ctypes.byref(b), ctypes.byref(r))
        del keep
        return StepResult(float(r.loss), float(r.grad_norm), float(r.lr),
                          bool(r.optimizer_step_taken), int(r.step), int(r.tokens))

    def save_state(self, path):
        self._call("rwkvpeft_trainer_save_state", _encode(path))

    def load_state(self, path):
        self._call("rwkvpeft_trainer_load_state", _encode(path))

    def __repr__(self):
        return "<rwkvpeft.Trainer%s>" % (" closed" if self.closed else "")


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------
class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Tokenizer(_Handle):
    """The RWKV World tokenizer (immutable: may be shared between threads)."""
    _free_name = "rwkvpeft_tokenizer_free"

    def __init__(self, vocab_path):
        self._lock = _NoLock()
        out = ctypes.POINTER(_ffi.rwkvpeft_tokenizer)()
        _check(_lib().rwkvpeft_tokenizer_load(_encode(vocab_path), ctypes.byref(out)))
        self._ptr = out

    @property
    def vocab_size(self):
        return int(_lib().rwkvpeft_tokenizer_vocab_size(self._p()))

    def encode(self, text):
        """Token ids (list of int) of a str (UTF-8) or bytes."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        cap = len(data)  # every token covers at least one byte
        ids = (ctypes.c_int32 * max(cap, 1))()
        n = ctypes.c_size_t()
        buf = ctypes.create_string_buffer(data, len(data) + 1)
        self._call("rwkvpeft_tokenizer_encode", ctypes.cast(buf, ctypes.c_void_p), len(data),
                   ids, cap, ctypes.byref(n))
        return list(ids[:n.value])

    def decode_bytes(self, ids):
        """Bytes of token ids."""
        a = _ids(ids, "ids").reshape(-1)
        cap = max(64, 16 * a.size)
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = ctypes.c_size_t()
            st = _lib().rwkvpeft_tokenizer_decode(self._p(), _ptr(a, _I32P), a.size,
                                                  ctypes.cast(buf, ctypes.c_void_p), cap,
                                                  ctypes.byref(n))
            if st != 0 and n.value > cap:
                cap = n.value  # too small: the call reported the size it needs
                continue
            _check(st)
            return buf.raw[:n.value]

    def decode(self, ids, errors="replace"):
        """Text of token ids (UTF-8; invalid sequences handled by `errors`)."""
        return self.decode_bytes(ids).decode("utf-8", errors)

    def __repr__(self):
        return "<rwkvpeft.Tokenizer%s>" % (" closed" if self.closed else "")


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------
class Dataset(_Handle):
    """A binidx dataset (<prefix>.bin + <prefix>.idx), read-only. len() = documents;
    ds[i] = tokens of document i (int32 array)."""
    _free_name = "rwkvpeft_dataset_free"
    _err_name = "rwkvpeft_dataset_last_error"

    def __init__(self, prefix):
        self._lock = threading.RLock()
        out = ctypes.POINTER(_ffi.rwkvpeft_dataset)()
        _check(_lib().rwkvpeft_dataset_open(_encode(prefix), ctypes.byref(out)))
        self._ptr = out

    @property
    def num_docs(self):
        with self._lock:
            return int(_lib().rwkvpeft_dataset_num_docs(self._p()))

    @property
    def num_tokens(self):
        with self._lock:
            return int(_lib().rwkvpeft_dataset_num_tokens(self._p()))

    def __len__(self):
        return self.num_docs

    def doc(self, index):
        """(token_offset, n_tokens) of document `index`."""
        off, n = ctypes.c_int64(), ctypes.c_int64()
        self._call("rwkvpeft_dataset_doc", int(index), ctypes.byref(off), ctypes.byref(n))
        return int(off.value), int(n.value)

    def read(self, offset, n):
        """n tokens from flat token offset `offset` (int32 array; may cross documents)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        out = np.empty(int(n), dtype=np.int32)
        self._call("rwkvpeft_dataset_read", int(offset), int(n), _ptr(out, _I32P))
        return out

    def __getitem__(self, index):
        if index < 0:
            index += len(self)
        return self.read(*self.doc(index))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


class DatasetWriter(_Handle):
    """Writes <prefix>.bin/.idx. As a context manager it finishes on a clean exit and
    discards the partial files when the block raises."""
    _free_name = "rwkvpeft_dataset_writer_free"
    _err_name = "rwkvpeft_dataset_writer_last_error"

    def __init__(self, prefix, vocab_size=65536, dtype_code=0):
        self._lock = threading.RLock()
        self.finished = False
        out = ctypes.POINTER(_ffi.rwkvpeft_dataset_writer)()
        _check(_lib().rwkvpeft_dataset_writer_create(_encode(prefix), int(dtype_code),
                                                     int(vocab_size), ctypes.byref(out)))
        self._ptr = out

    def add(self, tokens):
        """Appends one document."""
        a = _ids(tokens, "tokens").reshape(-1)
        self._call("rwkvpeft_dataset_writer_add", _ptr(a, _I32P), a.size)

    def finish(self):
        """Writes the index and closes the files."""
        self._call("rwkvpeft_dataset_writer_finish")
        self.finished = True

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None and not self.closed and not self.finished:
                self.finish()
        finally:
            self.close()
        return False


def jsonl_to_binidx(jsonl_path, output_prefix, vocab_path, fields="text", append_eod=True,
                    progress=None):
    """Converts a jsonl file to binidx as json2binidx does. Returns (n_docs, n_skipped).
    progress: callable(bytes_done, bytes_total, docs) -> truthy to cancel."""
    p = _fill(_ffi.rwkvpeft_jsonl_params, "rwkvpeft_jsonl_params_init",
              {"jsonl_path": jsonl_path, "output_prefix": output_prefix,
               "vocab_path": vocab_path, "fields": fields, "append_eod": int(bool(append_eod))})
    raised = []
    cb = None
    if progress is not None:
        def _trampoline(_user, done, total, docs):
            try:
                return 1 if progress(int(done), int(total), int(docs)) else 0
            except BaseException as e:  # cancel, re-raise after the call
                raised.append(e)
                return 1
        cb = _ffi.rwkvpeft_progress_fn(_trampoline)
        p.progress = cb
    n_docs, n_skipped = ctypes.c_int64(), ctypes.c_int64()
    st = _lib().rwkvpeft_jsonl_to_binidx(ctypes.byref(p), ctypes.byref(n_docs),
                                         ctypes.byref(n_skipped))
    if raised:
        raise raised[0]
    _check(st)
    return int(n_docs.value), int(n_skipped.value)


# --------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerInfo:
    n_docs: int
    n_tokens: int
    epoch_steps: int
    ctx_len: int
    micro_bsz: int
    magic_epoch_count: int


class Sampler(_Handle):
    """Training batches from a dataset, as the reference samples them. Options
    (rwkvpeft_sampler_params): data_type, vocab_path, dataload, loss_mask, mask_id,
    sft_fields, ctx_len, micro_bsz, epoch_steps, data_shuffle, seed, my_pile_stage,
    magic_prime, my_pile_shift, and tokenizer (a Tokenizer, kept alive by the sampler).
    Iterating yields Batch objects forever; next_batch() gives one."""
    _free_name = "rwkvpeft_sampler_free"
    _err_name = "rwkvpeft_sampler_last_error"

    def __init__(self, data_file, *, tokenizer=None, **params):
        self._lock = threading.RLock()
        params["data_file"] = data_file
        p = _fill(_ffi.rwkvpeft_sampler_params, "rwkvpeft_sampler_params_init", params,
                  {"data_shuffle": int}, skip=("tokenizer",))
        self._tokenizer = tokenizer
        if tokenizer is not None:
            if not isinstance(tokenizer, Tokenizer):
                raise TypeError("tokenizer must be a rwkvpeft.Tokenizer")
            p.tokenizer = tokenizer._p()
        out = ctypes.POINTER(_ffi.rwkvpeft_sampler)()
        _check(_lib().rwkvpeft_sampler_create(ctypes.byref(p), ctypes.byref(out)))
        self._ptr = out
        if tokenizer is not None:
            self._adopt(tokenizer)
        i = self.info
        self._B, self._T = i.micro_bsz, i.ctx_len

    @property
    def info(self):
        i = _ffi.rwkvpeft_sampler_info()
        self._call("rwkvpeft_sampler_get_info", ctypes.byref(i))
        return _to_dict(i, SamplerInfo)

    @property
    def position(self):
        """(epoch, step) of the next batch; assign a saved position to resume."""
        e, s = ctypes.c_int64(), ctypes.c_int64()
        self._call("rwkvpeft_sampler_get_position", ctypes.byref(e), ctypes.byref(s))
        return int(e.value), int(s.value)

    @position.setter
    def position(self, pos):
        epoch, step = pos
        self._call("rwkvpeft_sampler_set_position", int(epoch), int(step))

    def next_batch(self):
        n = self._B * self._T
        inp = np.empty(n, dtype=np.int32)
        tgt = np.empty(n, dtype=np.int32)
        msk = np.empty(n, dtype=np.float32)
        t = ctypes.c_int32()
        self._call("rwkvpeft_sampler_next", _ptr(inp, _I32P), _ptr(tgt, _I32P),
                   _ptr(msk, _F32P), ctypes.byref(t))
        k = self._B * t.value
        shape = (self._B, t.value)
        return Batch(inp[:k].reshape(shape).copy(), tgt[:k].reshape(shape).copy(),
                     msk[:k].reshape(shape).copy())

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_batch()
