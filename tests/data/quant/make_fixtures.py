#!/usr/bin/env python3
"""Writes the quantization fixtures of tests/test_quant.c (needs torch and bitsandbytes;
only to regenerate). Files (little endian):
  int8_code.f32            bitsandbytes create_dynamic_map(signed=True), 256 float32
  fp8_in.f32 / fp8_out.u8  inputs and torch's float8_e4m3fn bytes
  q4_in.f32                inputs (several 64-element blocks: random, an all-zero block, one
                           huge outlier, values exactly on code midpoints, a ragged tail)
  nf4_q.u8 / nf4_absmax.f32, fp4_q.u8 / fp4_absmax.f32   bitsandbytes quantize_4bit(blocksize 64)
"""
import os
import numpy as np
import torch
import bitsandbytes.functional as F

here = os.path.dirname(os.path.abspath(__file__))
g = torch.Generator().manual_seed(1234)

F.create_dynamic_map(signed=True).numpy().astype("<f4").tofile(os.path.join(here, "int8_code.f32"))

x = torch.cat([torch.randn(4000, generator=g) * 3,
               torch.tensor([0.0, -0.0, 448.0, 449.0, 464.0, 480.0, -1e6, 2**-10, 2**-10 * 1.01, 2**-9 * 1.5,
                             2**-9 * 2.5, 2**-6, 2**-6 * 0.99, 1.0625, 1.1875, 0.001953125])])
x.numpy().astype("<f4").tofile(os.path.join(here, "fp8_in.f32"))
x.to(torch.float8_e4m3fn).view(torch.uint8).numpy().tofile(os.path.join(here, "fp8_out.u8"))

nf4 = [-1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1]
mids = [(a + b) / 2 for a, b in zip(nf4, nf4[1:])]
blocks = [torch.randn(64 * 6, generator=g),
          torch.zeros(64),
          torch.cat([torch.randn(63, generator=g) * 0.01, torch.tensor([1000.0])]),
          torch.tensor(mids + [1.0] + [-m for m in mids] + [-1.0] + [0.5] * 34, dtype=torch.float32)[:64],
          torch.randn(37, generator=g)]  # ragged tail (odd count)
q4 = torch.cat(blocks).contiguous()
q4.numpy().astype("<f4").tofile(os.path.join(here, "q4_in.f32"))
for kind in ("nf4", "fp4"):
    q, st = F.quantize_4bit(q4, blocksize=64, quant_type=kind, quant_storage=torch.uint8)
    q.view(-1).numpy().tofile(os.path.join(here, f"{kind}_q.u8"))
    st.absmax.float().numpy().astype("<f4").tofile(os.path.join(here, f"{kind}_absmax.f32"))
print("fixtures written:", sorted(os.listdir(here)))
