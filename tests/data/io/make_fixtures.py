#!/usr/bin/env python3
"""Regenerates the small fixture files read by tests/test_io.c.

Needs real torch and the `safetensors` package (only to regenerate; the C tests read the
files committed next to this script). Run from anywhere:

    python3 tests/data/io/make_fixtures.py

Every tensor holds arange-based values that test_io.c recomputes, so keep the two in sync.
"""
import collections
import io
import os
import zipfile

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


def save(obj, name, **kw):
    torch.save(obj, out(name), **kw)


def dtype_tensors():
    """One tensor per supported dtype, plus a 0-d and an empty tensor."""
    return {
        "bf16": torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16),
        "f16": (torch.arange(6, dtype=torch.float32) * 0.5).to(torch.float16),
        "f32": (torch.arange(6, dtype=torch.float32) * 0.25).reshape(2, 3),
        "f64": torch.arange(4, dtype=torch.float64) + 0.125,
        "i64": torch.arange(5, dtype=torch.int64) - 2,
        "i32": torch.arange(3, dtype=torch.int32) * 1000,
        "i16": torch.arange(3, dtype=torch.int16) - 1,
        "i8": torch.arange(4, dtype=torch.int8) - 2,
        "u8": torch.arange(4, dtype=torch.uint8) + 250,
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def main():
    torch.manual_seed(0)

    # 1. every dtype, 0-d, empty (plain dict)
    save(dtype_tensors(), "dtypes.pth")

    # 2. an nn.Module state_dict (OrderedDict with _metadata, BUILD opcode) + Parameters
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        lin.bias.copy_(torch.tensor([-1.0, 1.0]))
    save(lin.state_dict(), "state_dict.pth")
    p = torch.nn.Parameter(torch.arange(4, dtype=torch.float32) * 2)
    q = torch.nn.Parameter(torch.arange(2, dtype=torch.float32) + 7)
    q.tag = "extra python attribute"  # -> _rebuild_parameter_with_state
    save({"param": p, "param_state": q}, "params.pth")

    # 3. nested dict with metadata leaves
    save(
        {
            "state_dict": collections.OrderedDict(
                [("a", torch.arange(3, dtype=torch.float32)),
                 ("sub", {"b": torch.arange(2, dtype=torch.int64) + 10})]
            ),
            "epoch": 3,
            "name": "rwkv",
            "lr": 0.1,
            "steps": [1, 2, 3],
            "nothing": None,
        },
        "nested.pth",
    )

    # 4. views: transpose (non-contiguous), row/column slices with offsets, shared storage
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    save({"base": base, "t": base.t(), "row1": base[1], "col2": base[:, 2],
          "elem": base[2, 3]}, "views.pth")

    # 5. fp8 tensors (torch 2.x writes them with _rebuild_tensor_v3 + UntypedStorage)
    save({"e4m3": torch.tensor([0.5, 1.0, -2.0, 448.0]).to(torch.float8_e4m3fn),
          "e5m2": torch.tensor([0.25, -1.0, 3.0]).to(torch.float8_e5m2)}, "fp8.pth")

    # 6. pickle protocol 4 (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL)
    save({"x": torch.arange(4, dtype=torch.float32), "y": torch.arange(3, dtype=torch.int64)},
         "proto4.pth", pickle_protocol=4)

    # 7. the same archive with every entry deflated (Python zipfile, not torch)
    buf = io.BytesIO()
    torch.save({"x": torch.arange(64, dtype=torch.float32), "y": torch.zeros(0)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(out("deflated.pth"), "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))

    # 8. legacy (pre-1.6) format
    save({"x": torch.arange(3)}, "legacy.pth", _use_new_zipfile_serialization=False)

    # 9. safetensors from the reference implementation (with __metadata__)
    st = dtype_tensors()  # includes the 0-d "scalar" (shape []) and the empty tensor
    st["e4m3"] = torch.tensor([0.5, 1.0, -2.0, 448.0]).to(torch.float8_e4m3fn)
    save_file(st, out("dtypes.safetensors"), metadata={"format": "pt", "note": "fixture"})

    for n in sorted(os.listdir(HERE)):
        if n != os.path.basename(__file__):
            print(f"{n:24s} {os.path.getsize(out(n)):6d} bytes")


if __name__ == "__main__":
    main()
