#!/usr/bin/env python3
"""Writes small binidx fixtures (spec §5.1), independently of the C code, with struct only.

For every dtype code 1..8, code<k>.bin/.idx holds DOCS_SMALL; world_u16 (code 8) and
world_i32 (code 4) hold DOCS_WORLD. tests/test_binidx.c knows the same documents.
The layout follows Megatron's MMapIndexedDataset.Index.writer as json2binidx uses it:
magic, u64 version 1, u8 dtype code, u64 len, u64 doc_count, i32 sizes, i64 pointers
(byte offsets = prefix sums of size*itemsize), i64 doc_idx = 0, 1, ..., len.

Usage: python3 make_fixtures.py  (no dependencies)
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

DOCS_SMALL = [[1, 2, 3], [], [7], [0, 5, 9, 11, 127]]
DOCS_WORLD = [[24281, 59, 0], [5585, 41693, 59, 0], [261, 0], [65529, 1, 256, 0]]

# code: (struct format char, item size)
DTYPES = {1: ("B", 1), 2: ("b", 1), 3: ("h", 2), 4: ("i", 4), 5: ("q", 8), 6: ("f", 4),
          7: ("d", 8), 8: ("H", 2)}


def write(prefix, code, docs):
    fmt, size = DTYPES[code]
    with open(prefix + ".bin", "wb") as f:
        for d in docs:
            f.write(struct.pack("<%d%s" % (len(d), fmt), *d))
    sizes = [len(d) for d in docs]
    pointers, addr = [], 0
    for s in sizes:
        pointers.append(addr)
        addr += s * size
    doc_idx = list(range(len(docs) + 1))
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", code))
        f.write(struct.pack("<Q", len(sizes)))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(struct.pack("<%di" % len(sizes), *sizes))
        f.write(struct.pack("<%dq" % len(pointers), *pointers))
        f.write(struct.pack("<%dq" % len(doc_idx), *doc_idx))


def main():
    for code in DTYPES:
        write(os.path.join(HERE, "code%d" % code), code, DOCS_SMALL)
    write(os.path.join(HERE, "world_u16"), 8, DOCS_WORLD)
    write(os.path.join(HERE, "world_i32"), 4, DOCS_WORLD)


if __name__ == "__main__":
    main()
