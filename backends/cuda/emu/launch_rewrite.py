#!/usr/bin/env python3
"""Rewrites CUDA launches `k<T>(optional)<<<grid, block, smem, stream>>>(args)` into
`emu_launch(grid, block, [&] { k<T>(args); })` for the CPU emulation (cuda_emu.h).
Usage: launch_rewrite.py IN.cu OUT.cpp"""
import sys


def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{':
            depth += 1
        elif ch in ')]}':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def rewrite(src):
    out, pos = [], 0
    while True:
        i = src.find('<<<', pos)
        if i < 0:
            out.append(src[pos:])
            return ''.join(out)
        # kernel expression: identifier, optionally followed by <template args>
        j = i
        while j > 0 and src[j - 1].isspace():
            j -= 1
        if src[j - 1] == '>':
            depth, j = 0, j - 1
            while True:
                if src[j] == '>':
                    depth += 1
                elif src[j] == '<':
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
        while j > 0 and (src[j - 1].isalnum() or src[j - 1] in '_:'):
            j -= 1
        kernel = src[j:i].strip()
        k = src.index('>>>', i)
        cfg = split_top(src[i + 3:k])
        if len(cfg) != 4:
            raise SystemExit('launch with %d config values at offset %d' % (len(cfg), i))
        a = k + 3
        while src[a].isspace():
            a += 1
        assert src[a] == '(', 'expected ( after >>>'
        depth, b = 0, a
        while True:
            if src[b] == '(':
                depth += 1
            elif src[b] == ')':
                depth -= 1
                if depth == 0:
                    break
            b += 1
        args = src[a + 1:b]
        out.append(src[pos:j])
        out.append('emu_launch(dim3(%s), dim3(%s), [&] { %s(%s); })' % (cfg[0], cfg[1], kernel, args))
        pos = b + 1


if __name__ == '__main__':
    with open(sys.argv[1]) as f:
        text = f.read()
    with open(sys.argv[2], 'w') as f:
        f.write(rewrite(text))
