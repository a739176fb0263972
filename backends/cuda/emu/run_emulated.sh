#!/usr/bin/env bash
# run_emulated.sh — builds the CUDA module's kernels for the CPU emulation (cuda_emu.h) as an
# emulated librwkvpeft_cuda.so and runs the op harness against it: the kernels' logic checked
# on a machine without a GPU. Development tool; nothing here is installed or shipped.
#
#   backends/cuda/emu/run_emulated.sh [OUTDIR]          (warp size 32)
#   RP_EMU_WARP=64 backends/cuda/emu/run_emulated.sh    (AMD wavefront size)
#
# Needs g++ (C++20 <barrier>), python3, gcc, Check and OpenBLAS (pkg-config).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
out=${1:-/tmp/rwkvpeft-emu}
warp=${RP_EMU_WARP:-32}
mkdir -p "$out/src" "$out/mod"
cflags=(-std=c++20 -O1 -g -fPIC -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas -Wno-unused-variable -pthread -DRWKVPEFT_CUDA_EMULATION
        -DRP_EMU_WARP="$warp" ${RP_EMU_FLAGS:-} -I"$root/include" -I"$root/lib" -I"$root/backends/cuda")
objs=()
for f in "$root"/backends/cuda/*.cu; do
  b=$(basename "$f" .cu)
  python3 "$root/backends/cuda/emu/launch_rewrite.py" "$f" "$out/src/$b.cpp"
  g++ "${cflags[@]}" -x c++ -c "$out/src/$b.cpp" -o "$out/src/$b.o" &
  objs+=("$out/src/$b.o")
done
g++ "${cflags[@]}" -c "$root/backends/cuda/emu/cuda_emu.cpp" -o "$out/src/cuda_emu.o" &
wait
g++ -shared -pthread -o "$out/mod/librwkvpeft_cuda.so" "${objs[@]}" "$out/src/cuda_emu.o" \
    -Wl,--version-script="$root/backends/cuda/module.map"
# the harness (static core pieces + both CPU backends)
cf=(-std=c11 -D_GNU_SOURCE -O1 -g -fopenmp -I"$root/include" -I"$root/lib")
gcc "${cf[@]}" -DRP_CPU_REAL=float -DRP_CPU_IS_DOUBLE=0 -c "$root/backends/cpu/cpu_backend.c" -o "$out/c32.o"
gcc "${cf[@]}" -DRP_CPU_REAL=double -DRP_CPU_IS_DOUBLE=1 -c "$root/backends/cpu/cpu_backend.c" -o "$out/c64.o"
gcc "${cf[@]}" "$root/lib/common.c" "$root/lib/backend.c" "$root/lib/optim8.c" "$out/c32.o" "$out/c64.o" \
    "$root/tests/test_backend_ops.c" -o "$out/test_backend_ops" \
    $(pkg-config --cflags --libs check openblas) -fopenmp -ldl -lm
RWKVPEFT_MODULE_PATH="$out/mod" RWKVPEFT_OPS_BACKENDS=cuda CK_DEFAULT_TIMEOUT=600 "$out/test_backend_ops"
