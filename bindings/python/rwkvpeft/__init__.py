"""rwkvpeft — Python bindings of librwkvpeft (fine-tuning RWKV language models).

Pure Python over ctypes. Two layers:

* ``rwkvpeft._ffi``: the C API 1:1 (every function and struct of rwkvpeft.h);
* this package: ``Context``, ``Model``, ``Trainer``, ``Tokenizer``, ``Dataset``,
  ``DatasetWriter``, ``Sampler`` with context managers, deterministic freeing, numpy arrays
  and ``RwkvpeftError`` exceptions.

The shared library is found through ``$RWKVPEFT_LIB`` (full path), a copy inside this
package's folder, then the system's search path (see ``rwkvpeft._ffi``). It is loaded on
first use, so importing this package never fails for lack of it.
"""
from .core import (IGNORE_INDEX, BackendInfo, Batch, Context, Dataset, DatasetWriter,
                   EvalResult, Model, ModelInfo, RwkvpeftError, Sampler, SamplerInfo, Status,
                   StepResult, Tokenizer, Trainer, backends, jsonl_to_binidx, last_error,
                   library_path, merge_files, version, version_number)

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX", "BackendInfo", "Batch", "Context", "Dataset", "DatasetWriter",
    "EvalResult", "Model", "ModelInfo", "RwkvpeftError", "Sampler", "SamplerInfo", "Status",
    "StepResult", "Tokenizer", "Trainer", "backends", "jsonl_to_binidx", "last_error",
    "library_path", "merge_files", "version", "version_number", "__version__",
]
