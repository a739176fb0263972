#!/usr/bin/env bash
# gpu_profile.sh — on the GPU machine: build, then per-op profiles (RWKVPEFT_PROFILE=1) of
# training steps at the given shapes. PROFILE="L:C:B ..." (default 24:2048:8 24:2048:1), or
# PROFILE_ARGS: ';'-separated bench_train argument sets (e.g. "--version 7 --layers 24 --embd 2048
# --ffn 8192 --bsz 8"), which replaces PROFILE.
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
if [[ -n ${PROFILE_ARGS:-} ]]; then
  IFS=';' read -ra runs <<< "$PROFILE_ARGS"
else
  runs=()
  for cfg in ${PROFILE:-24:2048:8 24:2048:1}; do
    IFS=: read -r L C BS <<< "$cfg"
    runs+=("--layers $L --embd $C --bsz $BS")
  done
fi
for args in "${runs[@]}"; do
  echo "== $args"
  # shellcheck disable=SC2086
  RWKVPEFT_PROFILE=1 timeout 200 "$B/full/bench_train" --backend cuda --ctx 1024 --r 64 --alpha 128 --grad_cp 1 \
      --warmup 1 --steps 2 $args 2>&1 | tail -${PROFILE_LINES:-30}
done
