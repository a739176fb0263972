#!/usr/bin/env bash
# Builds librwkvpeft and runs every test: the Check suites under ctest (Release, with
# -Werror), again under AddressSanitizer/UndefinedBehaviorSanitizer, a valgrind pass, and
# compile checks of the GPU modules where their compilers exist (nvcc; Debian's hipcc).
# Installs missing Debian packages first. Exit status non-zero on any failure.
#   RWKVPEFT_TEST_HIP=1   also install hipcc and build the HIP module (CI does)
#   RWKVPEFT_TEST_QUICK=1 skip the sanitizer and valgrind passes
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc 2>/dev/null || echo 2)
step() { printf '\n==== %s ====\n' "$*"; }

step "dependencies"
if [ "${RWKVPEFT_TEST_HIP:-0}" = 1 ]; then scripts/deps.sh --test --hip; else scripts/deps.sh --test; fi
export RWKVPEFT_WORLD_VOCAB=$(scripts/world_vocab.sh)
echo "World vocabulary: $RWKVPEFT_WORLD_VOCAB"

gpu_flags=()
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
  gpu_flags+=(-DRWKVPEFT_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${RWKVPEFT_CUDA_ARCHS:-80;86;89;90}")
fi
if command -v hipcc >/dev/null 2>&1 && [ -x /usr/bin/clang++-15 ]; then
  gpu_flags+=(-DRWKVPEFT_HIP=ON "-DCMAKE_HIP_ARCHITECTURES=gfx90a;gfx1030")
fi

step "release build (-Werror) ${gpu_flags[*]:-}"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DRWKVPEFT_WERROR=ON "${gpu_flags[@]}" >/dev/null
cmake --build build -j"$jobs"
step "exported symbols"
bad=$(nm -D --defined-only build/librwkvpeft.so | awk '{print $3}' | grep -v '^rwkvpeft_' || true)
if [ -n "$bad" ]; then echo "librwkvpeft.so exports non-rwkvpeft_ symbols:"; echo "$bad"; exit 1; fi
echo "only rwkvpeft_* exported ($(nm -D --defined-only build/librwkvpeft.so | wc -l) symbols)"

step "ctest (release)"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${RWKVPEFT_TEST_QUICK:-0}" != 1 ]; then
  step "sanitizer build + ctest (ASan/UBSan)"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DRWKVPEFT_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  RWKVPEFT_BACKEND=cpu ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j"$jobs"

  step "valgrind (memcheck)"
  # test_model's finite-difference case runs thousands of float64 forwards: too slow under
  # valgrind (it runs under ASan above); its other cases run here
  for t in test_io test_binidx test_jsonl test_sampler test_tokenizer test_model:core test_backend_ops test_peft:core test_quant test_wkv7 test_versions:core; do
    name=${t%%:*}; case_=${t#*:}; [ "$case_" = "$t" ] && case_=""
    echo "-- $t"
    ( cd build/tests && RWKVPEFT_TEST_DATA=$PWD/../../tests/data RWKVPEFT_TEST_TMP=$PWD CK_FORK=no CK_DEFAULT_TIMEOUT=0 \
      CK_RUN_CASE=$case_ OMP_NUM_THREADS=1 RWKVPEFT_BACKEND=cpu \
      valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite -q ./$name >/dev/null )
  done

  step "CUDA kernels on the CPU emulator (op harness: the memory-bound kernels, warp 32 and 64)"
  # the GPU modules only compile here; backends/cuda/emu runs their kernels' logic on CPU
  # threads against the CPU backend (the 16-byte vector paths included)
  RWKVPEFT_OPS_ONLY=shift_mix,norm,act,mul_add,rows,lerp,dequant,adam8 backends/cuda/emu/run_emulated.sh build-emu
  RP_EMU_WARP=64 RWKVPEFT_OPS_ONLY=norm,shift_mix,adam8 backends/cuda/emu/run_emulated.sh build-emu64

  step "the model on the emulated CUDA module (test_qtrain's GPU case against cpu64)"
  # the graph's CUDA path — bf16 activations, each block's trainable range narrowed to bf16,
  # the workspace slab, quantized linears — on the emulated module against cpu64; ~3 minutes
  # (its "gpu_train" case, 20 QLoRA steps, takes too long emulated: it runs on the GPU machine)
  mkdir -p build-emu/tmp
  ( RWKVPEFT_MODULE_PATH=$PWD/build-emu/mod RWKVPEFT_TEST_DATA=$PWD/tests/data RWKVPEFT_TEST_TMP=$PWD/build-emu/tmp \
    RWKVPEFT_QTEST_REQUIRE_GPU=1 CK_RUN_CASE=gpu CK_TIMEOUT_MULTIPLIER=3 build/tests/test_qtrain )
fi

step "python tests"
if python3 -c "import torch" 2>/dev/null; then
  python3 tests/parity/test_rwkv6_torch.py
  python3 tests/parity/test_rwkv57_torch.py
  python3 tests/parity/run_parity.py --dump build/tests/parity_dump --backend cpu --quiet
else
  echo "PyTorch is not installed here: the PyTorch parity run is skipped (it runs on the GPU machine: bench/gpu_check.sh)"
fi

step "bindings and install"
scripts/test_bindings.sh
step "all tests passed"
