#!/usr/bin/env bash
# gpu_ops_check.sh — on the GPU machine: build librwkvpeft and the CUDA module (sm_90) and run
# the op harness (tests/test_backend_ops.c) on the cpu and cuda backends, with cuBLAS and
# with the module's own tiled GEMM (RWKVPEFT_CUDA_GEMM=tiled, the HIP path's math), then the
# cuda ops under compute-sanitizer. Logs go to $OUT.
#
# 1. Once, on the development machine (Debian, apt reachable), fill the git-ignored carry:
#        bench/gpu_ops_check.sh --prepare-carry
#    .carry/deps then holds extracted Debian packages the GPU machine lacks or may lack:
#    check + libsubunit (static, for -DRWKVPEFT_CHECK_STATIC=ON), libcjson, zlib headers,
#    pkgconf. Each is used there only when the system has no copy of its own.
# 2. Through the device tool, in one call (about 3 to 5 minutes of device time):
#        run(command="bash bench/gpu_ops_check.sh", carry=[".carry/deps"], timeout_s=600)
#    Files back: summary.txt, env.txt, build.log, ops_cuda.log, ops_tiled.log, sanitizer.log.
#
# The GPU machine (Ubuntu 24.04, nvcc 13.0, cmake + ninja in /opt/torch/.venv/bin, OpenBLAS dev,
# no Check, no apt): the full CMake build is tried first (-DRWKVPEFT_CUDA=ON
# -DRWKVPEFT_CHECK_STATIC=ON); if it cannot be configured there, the script falls back to the
# CUDA module's standalone CMake project (backends/cuda) plus a direct gcc build of the harness.
# Environment: OUT (output folder), GPU_ARCH (default 90), BUILD_DIR (default /tmp/rwkvpeft-gpu),
# FORCE_PLAN_B=1 (skip the full build; for testing the fallback), SKIP_TILED=1 (no second harness
# run on the tiled GEMM), SKIP_SANITIZER=1, SKIP_HARNESS=1 (build only: no harness, no
# sanitizer; gpu_check.sh sets it when its STAGES omit "ops"), MEMCHECK_ONLY / RACECHECK_ONLY (the op tests each
# sanitizer runs, comma lists as $RWKVPEFT_OPS_ONLY). Plan A also builds bench_wkv
# ($BUILD_DIR/full/bench_wkv, e.g. for `bench_wkv --op wkv7` after this script in the same call).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
carry=$root/.carry/deps
ma=x86_64-linux-gnu

prepare_carry() {
    set -e
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download check libsubunit-dev libsubunit0 libcjson-dev libcjson1 zlib1g-dev \
        pkgconf pkgconf-bin libpkgconf3)
    rm -rf "$carry"
    mkdir -p "$carry"
    for f in "$tmp"/*.deb; do dpkg -x "$f" "$carry"; done
    rm -rf "$carry/usr/share/doc" "$carry/usr/share/man" "$carry/usr/share/info" "$carry/usr/share/lintian"
    rm -rf "$tmp"
    du -sh "$carry"
    echo "carry ready: pass carry=[\".carry/deps\"] to the device run"
}
if [[ ${1:-} == --prepare-carry ]]; then
    prepare_carry
    exit $?
fi

out=${OUT:-$root/out/gpu_ops_check}
arch=${GPU_ARCH:-90}
B=${BUILD_DIR:-/tmp/rwkvpeft-gpu}
jobs=$(nproc 2>/dev/null || echo 8)
mkdir -p "$out" "$B"
summary=$out/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }

export PATH=/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH
export NCCL_NVLS_ENABLE=0

# ---- what the machine has ------------------------------------------------------------------
{
    date
    uname -a
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
    nvcc --version | tail -2
    cmake --version | head -1
    echo "ninja $(ninja --version 2>&1)"
    gcc --version | head -1
    echo "pkg-config: $(command -v pkg-config || echo none)"
    ls -l /usr/include/$ma/cblas.h /usr/include/cblas.h /usr/include/zlib.h 2>&1
    ldconfig -p | grep -E "openblas|cjson|libz\.so|subunit|libcublas\.so" 2>&1
    command -v compute-sanitizer
} >"$out/env.txt" 2>&1
say "gpu_ops_check: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), sm_$arch, $jobs jobs"

# ---- dependencies: the system's, else the carried ones ---------------------------------------
have_carry=0
[[ -d $carry/usr ]] && have_carry=1
mkdir -p "$B/pc" "$B/bin" "$B/rt"
rewrite_pc() { sed -e "s|=/usr|=$carry/usr|g" "$carry/usr/lib/$ma/pkgconfig/$1.pc" >"$B/pc/$1.pc"; }
if ! command -v pkg-config >/dev/null && ((have_carry)); then
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$carry/usr/lib/$ma" "$carry/usr/bin/pkgconf" >"$B/bin/pkg-config"
    chmod +x "$B/bin/pkg-config"
    export PATH=$B/bin:$PATH
    say "pkg-config: carried pkgconf"
fi
extra_cmake=()
if ((have_carry)); then
    rewrite_pc check
    rewrite_pc libsubunit
    if ! pkg-config --exists libcjson 2>/dev/null; then
        rewrite_pc libcjson
        ln -sf "$carry/usr/lib/$ma/libcjson.so.1" "$B/rt/libcjson.so.1"
        say "libcjson: carried"
    fi
    if [[ ! -f /usr/include/zlib.h ]]; then
        zlib_so=$(ls /lib/$ma/libz.so.1 /usr/lib/$ma/libz.so.1 2>/dev/null | head -1)
        extra_cmake+=(-DZLIB_INCLUDE_DIR="$carry/usr/include" -DZLIB_LIBRARY="$zlib_so")
        say "zlib: carried headers, $zlib_so"
    fi
    export PKG_CONFIG_PATH=$B/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
    # Check and subunit: the static archives, named directly (tests/CMakeLists.txt finds them with
    # find_library, which keeps a preset cache value)
    extra_cmake+=(-DCHECK_A="$carry/usr/lib/$ma/libcheck_pic.a" -DSUBUNIT_A="$carry/usr/lib/$ma/libsubunit.a")
else
    say "no .carry/deps: run 'bench/gpu_ops_check.sh --prepare-carry' on the development machine"
fi
export LD_LIBRARY_PATH=$B/rt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- build: plan A, the full project ----------------------------------------------------------
test_bin=""
module_dir=""
{
    echo "### plan A: full CMake build"
    cmake -S "$root" -B "$B/full" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRWKVPEFT_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="$arch" -DBUILD_TESTING=ON -DRWKVPEFT_CHECK_STATIC=ON "${extra_cmake[@]}" &&
        timeout 200 cmake --build "$B/full" -j"$jobs" --target rwkvpeft rwkvpeft_cuda test_backend_ops bench_wkv
} >"$out/build.log" 2>&1
if [[ -z ${FORCE_PLAN_B:-} && -x $B/full/tests/test_backend_ops && -f $B/full/librwkvpeft_cuda.so ]]; then
    test_bin=$B/full/tests/test_backend_ops
    module_dir=$B/full
    say "build: plan A (full CMake build) ok after $(elapsed) s"
else
    say "build: plan A failed (see build.log); trying plan B"
    {
        echo "### plan B: standalone CUDA module + direct harness build"
        cmake -S "$root/backends/cuda" -B "$B/cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release \
            -DCMAKE_CUDA_ARCHITECTURES="$arch" && timeout 200 cmake --build "$B/cuda" -j"$jobs"
        cf=(-std=c11 -D_GNU_SOURCE -O2 -g -fopenmp -I"$root/include" -I"$root/lib")
        gcc "${cf[@]}" -DRP_CPU_REAL=float -DRP_CPU_IS_DOUBLE=0 -c "$root/backends/cpu/cpu_backend.c" -o "$B/c32.o" &&
            gcc "${cf[@]}" -DRP_CPU_REAL=double -DRP_CPU_IS_DOUBLE=1 -c "$root/backends/cpu/cpu_backend.c" -o "$B/c64.o" &&
            gcc "${cf[@]}" -I"$carry/usr/include" "$root/lib/common.c" "$root/lib/backend.c" "$B/c32.o" "$B/c64.o" \
                "$root/tests/test_backend_ops.c" -o "$B/test_backend_ops" \
                "$carry/usr/lib/$ma/libcheck_pic.a" "$carry/usr/lib/$ma/libsubunit.a" \
                -lopenblas -fopenmp -ldl -lm -lrt -pthread
    } >>"$out/build.log" 2>&1
    if [[ -x $B/test_backend_ops && -f $B/cuda/librwkvpeft_cuda.so ]]; then
        test_bin=$B/test_backend_ops
        module_dir=$B/cuda
        say "build: plan B ok after $(elapsed) s"
    else
        say "build: plan B failed too (see build.log)"
        tail -30 "$out/build.log" | tee -a "$summary"
        exit 1
    fi
fi
grep -iE "warning" "$out/build.log" | grep -v "^--" | head -20 | sed 's/^/build warning: /' | tee -a "$summary"

# ---- the op harness --------------------------------------------------------------------------
export RWKVPEFT_MODULE_PATH=$module_dir
export CK_DEFAULT_TIMEOUT=600
rc_all=0
run_harness() { # name, timeout, env...
    local name=$1 tmo=$2
    shift 2
    local s=$(date +%s)
    env "$@" timeout "$tmo" "$test_bin" >"$out/$name.log" 2>&1
    local rc=$?
    say "$name: rc $rc in $(($(date +%s) - s)) s; $(grep -E '^[0-9]+%: Checks' "$out/$name.log" | tail -1)"
    grep -E ':[FE]:' "$out/$name.log" | head -20 | tee -a "$summary"
    ((rc != 0)) && rc_all=1
    return 0
}
if [[ -n ${SKIP_HARNESS:-} ]]; then
    say "harness and sanitizers skipped (SKIP_HARNESS); done in $(elapsed) s"
    exit 0
fi
run_harness ops_cuda 120 RWKVPEFT_OPS_BACKENDS=cpu,cuda RWKVPEFT_OPS_VERBOSE=1
if [[ -z ${SKIP_TILED:-} ]]; then
    run_harness ops_tiled 90 RWKVPEFT_OPS_BACKENDS=cuda RWKVPEFT_CUDA_GEMM=tiled
fi
grep -E "SKIP" "$out/ops_cuda.log" | head -5 | tee -a "$summary"
# the largest errors relative to their limits, for the record
python3 - "$out/ops_cuda.log" <<'EOF' | tee -a "$summary"
import re, sys
rows = []
for line in open(sys.argv[1]):
    m = re.search(r'nerr ([0-9.e+-]+) \(limit ([0-9.e+-]+)\)', line)
    if m and line.lstrip().startswith('cuda'):
        rows.append((float(m.group(1)) / float(m.group(2)), line.strip()))
rows.sort()
print('cuda comparisons: %d; worst five (error/limit):' % len(rows))
for r in rows[-5:]:
    print('  %.3f  %s' % r)
EOF

# ---- compute-sanitizer (time-capped; the cuda ops only) --------------------------------------
if [[ -n ${SKIP_SANITIZER:-} ]]; then
    say "compute-sanitizer skipped (SKIP_SANITIZER)"
elif command -v compute-sanitizer >/dev/null; then
    {
        echo "### memcheck, all op tests, cuda only"
        env CK_FORK=no RWKVPEFT_OPS_BACKENDS=cuda RWKVPEFT_OPS_ONLY=${MEMCHECK_ONLY:-memory,gemm,embedding,norm,shift_mix,act,mul_add,rows,dropout,wkv6,lerp,v7_kprep,v7_bonus,wkv7,cross_entropy,sumsq,adam,adam8,dequant} \
            timeout 90 compute-sanitizer --tool memcheck --leak-check no --error-exitcode 9 "$test_bin"
        echo "memcheck rc $?"
        echo "### racecheck (shared memory), kernels with block-level cooperation"
        env CK_FORK=no RWKVPEFT_OPS_BACKENDS=cuda RWKVPEFT_CUDA_GEMM=tiled RWKVPEFT_OPS_ONLY=${RACECHECK_ONLY:-gemm,norm,wkv6,wkv7,cross_entropy,sumsq,adam8} \
            timeout 45 compute-sanitizer --tool racecheck --error-exitcode 9 "$test_bin"
        echo "racecheck rc $?"
    } >"$out/sanitizer.log" 2>&1
    say "sanitizers: $(grep -E '^(memcheck|racecheck) rc|ERROR SUMMARY|RACECHECK SUMMARY' "$out/sanitizer.log" | tr '\n' ';')"
else
    say "compute-sanitizer not found"
fi
say "done in $(elapsed) s; harness $([[ $rc_all == 0 ]] && echo passed || echo FAILED)"
exit $rc_all
