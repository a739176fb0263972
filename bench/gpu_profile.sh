#!/usr/bin/env bash
# gpu_profile.sh — on the GPU machine: build, then per-op profiles (RWKVPEFT_PROFILE=1) of
# training steps at the given shapes. PROFILE="L:C:B ..." (default 24:2048:8 24:2048:1).
# run(command="bash bench/gpu_profile.sh", carry=[".carry/deps"], timeout_s=600)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
B=${BUILD_DIR:-/tmp/rwkvpeft-gpu}
out=${OUT:-/tmp/gpu_profile}
mkdir -p "$out"
if [[ ! -x $B/full/bench_train ]]; then
  STAGES=none SKIP_SANITIZER=1 OUT=/tmp/gpu_check_build BUILD_DIR=$B bash "$root/bench/gpu_check.sh" > "$out/build.log" 2>&1
fi
export RWKVPEFT_MODULE_PATH=$B/full LD_LIBRARY_PATH=$B/rt:${LD_LIBRARY_PATH:-}
for cfg in ${PROFILE:-24:2048:8 24:2048:1}; do
  IFS=: read -r L C BS <<< "$cfg"
  echo "== L$L C$C B$BS"
  RWKVPEFT_PROFILE=1 timeout 200 "$B/full/bench_train" --backend cuda --layers $L --embd $C --bsz $BS --ctx 1024 \
      --r 64 --alpha 128 --grad_cp 1 --warmup 1 --steps 2 2>&1 | tail -26
done
