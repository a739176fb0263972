#!/usr/bin/env python3
"""Checks .pth files written by librwkvpeft's writer (lib/io_pth.c) (and, the same way,
.safetensors files from lib/io_safetensors.c, against the reference `safetensors` package).

Each FILE.pth comes with a sidecar FILE.pth.json written by `test_io --export DIR`:

    {"zip64": bool,                       # whether the writer was forced to use zip64
     "tensors": [{"name_hex": "...",      # UTF-8 name, hex
                  "dtype": "float32",     # torch dtype name
                  "shape": [2, 3],
                  "hex": "..."}]}         # expected raw little-endian bytes, row-major

Every file is checked three ways:
  1. zip structure with Python's zipfile (CRCs, all entries stored, the records torch
     expects, 64-byte aligned payloads, zip64 records present when expected);
  2. an independent minimal reader (zipfile + pickle.Unpickler with persistent_load and
     a find_class whitelist; no torch);
  3. torch.load (weights_only=True, and mmap=True), when torch is importable.

Usage:
    ./test_io --export /tmp/rp_export      # writes the files + sidecars
    python3 tests/python/check_pth_written.py /tmp/rp_export [more files or dirs ...]
Exit status 0 when every file passes.
"""
import collections
import json
import os
import pickle
import struct
import sys
import zipfile

DTYPE_SIZE = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1,
    "int16": 2, "int32": 4, "int64": 8, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
}
STORAGE_DTYPE = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "CharStorage": "int8", "ByteStorage": "uint8",
    "ShortStorage": "int16", "IntStorage": "int32", "LongStorage": "int64",
    "BoolStorage": "bool",
}


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


# ------------------------------------------------------------------------------------
# 1. zip structure
# ------------------------------------------------------------------------------------

def check_zip(path, expect_zip64):
    with open(path, "rb") as fh:
        raw = fh.read()
    zf = zipfile.ZipFile(path)
    bad = zf.testzip()
    check(bad is None, f"CRC error in entry {bad}")
    names = zf.namelist()
    prefix = names[0].split("/")[0]
    for n in names:
        check(n.startswith(prefix + "/"), f"entry {n} not under {prefix}/")
    for req in ("data.pkl", "byteorder", "version", ".data/serialization_id"):
        check(f"{prefix}/{req}" in names, f"missing record {prefix}/{req}")
    check(zf.read(f"{prefix}/byteorder") == b"little", "byteorder is not 'little'")
    check(zf.read(f"{prefix}/version") == b"3\n", "version is not '3\\n'")
    check(len(zf.read(f"{prefix}/.data/serialization_id")) == 40, "serialization_id not 40 bytes")
    for info in zf.infolist():
        check(info.compress_type == zipfile.ZIP_STORED, f"{info.filename} is compressed")
        off = info.header_offset
        sig, = struct.unpack_from("<I", raw, off)
        check(sig == 0x04034B50, f"{info.filename}: bad local header")
        nlen, xlen = struct.unpack_from("<HH", raw, off + 26)
        start = off + 30 + nlen + xlen
        if info.filename.startswith(f"{prefix}/data/"):
            check(start % 64 == 0, f"{info.filename}: payload at {start} not 64-byte aligned")
        check(raw[start:start + info.file_size] == zf.read(info.filename),
              f"{info.filename}: payload mismatch")
    eocd = raw.rfind(b"PK\x05\x06")
    has_locator = eocd >= 20 and raw[eocd - 20:eocd - 16] == b"PK\x06\x07"
    big = len(names) > 0xFFFF or len(raw) > 0xFFFFFFFF
    if expect_zip64 or big:
        check(has_locator, "zip64 end-of-central-directory locator missing")
    return zf, prefix


# ------------------------------------------------------------------------------------
# 2. independent reader (no torch)
# ------------------------------------------------------------------------------------

class _Dtype:
    def __init__(self, name):
        self.name = name


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype  # None = untyped


def _rebuild_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    data, dtype = storage
    return _make(data, dtype, offset, size, stride)


def _rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype):
    data, _ = storage
    return _make(data, dtype.name, offset, size, stride)


def _make(data, dtype, offset, size, stride):
    isz = DTYPE_SIZE[dtype]
    out = bytearray()
    numel = 1
    for s in size:
        numel *= s
    if numel:
        idx = [0] * len(size)
        for _ in range(numel):
            e = offset + sum(i * st for i, st in zip(idx, stride))
            check((e + 1) * isz <= len(data), "view outside storage")
            out += data[e * isz:(e + 1) * isz]
            for d in range(len(size) - 1, -1, -1):
                idx[d] += 1
                if idx[d] < size[d]:
                    break
                idx[d] = 0
    return ("tensor", dtype, tuple(size), bytes(out))


class MiniUnpickler(pickle.Unpickler):
    def __init__(self, fh, zf, prefix):
        super().__init__(fh)
        self.zf, self.prefix = zf, prefix

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_v2
        if (module, name) == ("torch._utils", "_rebuild_tensor_v3"):
            return _rebuild_v3
        if module == "torch" and name in STORAGE_DTYPE:
            return _StorageType(STORAGE_DTYPE[name])
        if (module, name) == ("torch.storage", "UntypedStorage"):
            return _StorageType(None)
        if module == "torch" and name in DTYPE_SIZE:
            return _Dtype(name)
        raise pickle.UnpicklingError(f"global {module}.{name} not allowed")

    def persistent_load(self, pid):
        check(isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage", f"bad pid {pid}")
        _, stype, key, location, numel = pid
        data = self.zf.read(f"{self.prefix}/data/{key}")
        isz = 1 if stype.dtype is None else DTYPE_SIZE[stype.dtype]
        check(len(data) == numel * isz, f"storage {key}: {len(data)} bytes != {numel}*{isz}")
        check(location == "cpu", f"storage {key} location {location}")
        return (data, stype.dtype)


def check_independent(zf, prefix, expected):
    with zf.open(f"{prefix}/data.pkl") as fh:
        obj = MiniUnpickler(fh, zf, prefix).load()
    check(isinstance(obj, dict), "top level is not a dict")
    got_names = list(obj.keys())
    want_names = [bytes.fromhex(t["name_hex"]).decode("utf-8") for t in expected]
    check(got_names == want_names, "names/order differ")
    for t, name in zip(expected, want_names):
        kind, dtype, shape, data = obj[name]
        check(dtype == t["dtype"], f"{name}: dtype {dtype} != {t['dtype']}")
        check(list(shape) == t["shape"], f"{name}: shape {shape} != {t['shape']}")
        check(data == bytes.fromhex(t["hex"]), f"{name}: bytes differ")


# ------------------------------------------------------------------------------------
# 3. torch.load
# ------------------------------------------------------------------------------------

def check_torch(path, expected):
    try:
        import torch
    except ImportError:
        return "torch not importable: skipped"
    for kw in ({"weights_only": True}, {"weights_only": True, "mmap": True}):
        sd = torch.load(path, map_location="cpu", **kw)
        want_names = [bytes.fromhex(t["name_hex"]).decode("utf-8") for t in expected]
        check(list(sd.keys()) == want_names, f"torch.load({kw}): names differ")
        for t, name in zip(expected, want_names):
            x = sd[name]
            check(str(x.dtype) == "torch." + t["dtype"], f"{name}: dtype {x.dtype}")
            check(list(x.shape) == t["shape"], f"{name}: shape {list(x.shape)}")
            check(x.is_contiguous(), f"{name}: not contiguous")
            raw = x.reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b""
            check(raw == bytes.fromhex(t["hex"]), f"{name}: bytes differ (torch.load {kw})")
    return "torch.load ok"


# ------------------------------------------------------------------------------------
# .safetensors written by the same writer: a struct/json reader, then the reference
# `safetensors` package when importable
# ------------------------------------------------------------------------------------

ST_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
            "I8": "int8", "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64",
            "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def check_safetensors(path, expected):
    with open(path, "rb") as fh:
        raw = fh.read()
    n, = struct.unpack_from("<Q", raw, 0)
    check(n % 8 == 0, f"header length {n} not a multiple of 8")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    want_names = [bytes.fromhex(t["name_hex"]).decode("utf-8") for t in expected]
    check(list(header.keys()) == want_names, "names/order differ")
    base = 8 + n
    for t, name in zip(expected, want_names):
        h = header[name]
        check(ST_NAMES[h["dtype"]] == t["dtype"], f"{name}: dtype {h['dtype']}")
        check(h["shape"] == t["shape"], f"{name}: shape {h['shape']}")
        b, e = h["data_offsets"]
        check(raw[base + b:base + e] == bytes.fromhex(t["hex"]), f"{name}: bytes differ")
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError:
        return "safetensors package not importable: reference check skipped"
    sd = load_file(path)
    for t, name in zip(expected, want_names):
        x = sd[name]
        check(str(x.dtype) == "torch." + t["dtype"], f"{name}: dtype {x.dtype} (safetensors)")
        check(list(x.shape) == t["shape"], f"{name}: shape (safetensors)")
        raw = x.reshape(-1).view(torch.uint8).numpy().tobytes() if x.numel() else b""
        check(raw == bytes.fromhex(t["hex"]), f"{name}: bytes differ (safetensors)")
    return "safetensors.torch.load_file ok"


def check_file(path):
    side = path + ".json"
    with open(side) as fh:
        meta = json.load(fh)
    if path.endswith(".safetensors"):
        return f"{len(meta['tensors'])} tensors, {check_safetensors(path, meta['tensors'])}"
    zf, prefix = check_zip(path, meta.get("zip64", False))
    check_independent(zf, prefix, meta["tensors"])
    note = check_torch(path, meta["tensors"])
    return f"{len(meta['tensors'])} tensors, {note}"


def main(argv):
    files = []
    for a in argv[1:]:
        if os.path.isdir(a):
            files += sorted(os.path.join(a, n) for n in os.listdir(a)
                           if n.endswith(".pth") or n.endswith(".safetensors"))
        else:
            files.append(a)
    if not files:
        print(__doc__)
        return 2
    failed = 0
    for p in files:
        try:
            print(f"PASS {p}: {check_file(p)}")
        except Exception as e:  # noqa: BLE001 - report every failure kind
            failed += 1
            print(f"FAIL {p}: {type(e).__name__}: {e}")
    print(f"{len(files) - failed}/{len(files)} files passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
