#!/usr/bin/env bash
# bench/ref/setup.sh — copy the reference's own code (RWKV-PEFT: its model modules, PEFT
# machinery and CUDA kernels) out of the git mirror into .ref/RWKV-PEFT, for the side-by-side
# benchmark (bench/side_by_side.sh, bench/ref/ref_bench.py). Run on the development machine;
# the device call then carries it: run(..., carry=[".ref", ".carry/deps"]).
#
# .ref/ is git-ignored: reference code is never committed. Only the source the training path
# needs is exported (cuda/, rwkvt/, train.py, LICENSE, README.md; about 0.3 MB), no data,
# tokenizer files or images.
#
# Environment: REF_MIRROR (git dir of the mirror; default /work/.mirror/JL-er+RWKV-PEFT[/repo]),
# REF_COMMIT (default HEAD).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mirror=${REF_MIRROR:-/work/.mirror/JL-er+RWKV-PEFT}
if ! git --git-dir="$mirror" rev-parse --git-dir >/dev/null 2>&1; then
    mirror=$mirror/repo
fi
git --git-dir="$mirror" rev-parse --git-dir >/dev/null 2>&1 || { echo "setup.sh: no git mirror at $mirror" >&2; exit 1; }
rev=${REF_COMMIT:-HEAD}
commit=$(git --git-dir="$mirror" rev-parse "$rev^{commit}")
dest=$root/.ref/RWKV-PEFT
rm -rf "$dest"
mkdir -p "$dest"
git --git-dir="$mirror" archive "$commit" cuda rwkvt train.py LICENSE README.md | tar -x -C "$dest"
printf '%s\n' "$commit" >"$dest/REF_COMMIT"
git --git-dir="$mirror" log -1 --format='%H %cs %s' "$commit" >"$dest/REF_LOG"
size=$(du -sh "$dest" | cut -f1)
echo "RWKV-PEFT $(cat "$dest/REF_LOG")"
echo "exported to $dest ($size)"
echo "commit $commit"
