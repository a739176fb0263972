#!/usr/bin/env bash
# Prints the path of the RWKV World vocabulary (rwkv_vocab_v20230424.txt), fetching it from
# the PyPI package `rwkv` (Apache-2.0, by BlinkDL) into build/vocab/ when it is not there.
# The file is not part of this repository. $RWKVPEFT_WORLD_VOCAB wins when set.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "${RWKVPEFT_WORLD_VOCAB:-}" ] && [ -f "$RWKVPEFT_WORLD_VOCAB" ]; then echo "$RWKVPEFT_WORLD_VOCAB"; exit 0; fi
dst="$here/build/vocab/rwkv_vocab_v20230424.txt"
if [ ! -f "$dst" ]; then
  mkdir -p "$here/build/vocab"
  tmp=$(mktemp -d)
  # download only (works on externally-managed Pythons too) and take the file from the wheel
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" rwkv >&2
  python3 - "$tmp" "$dst" <<'PY'
import glob, sys, zipfile
whl = sorted(glob.glob(sys.argv[1] + "/rwkv-*.whl"))[-1]
with zipfile.ZipFile(whl) as z:
    data = z.read("rwkv/rwkv_vocab_v20230424.txt")
open(sys.argv[2], "wb").write(data)
PY
  rm -rf "$tmp"
fi
echo "$dst"
