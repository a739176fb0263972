#!/usr/bin/env bash
# gpu_check.sh — everything that needs the GPU machine, in one device call:
#   1. build + op harness (cpu, cuda, cuda with the tiled GEMM) + compute-sanitizer
#      (bench/gpu_ops_check.sh),
#   1b. the quantized-training test's GPU cases (tests/test_qtrain.c "gpu": quantized ==
#      dequantized logits and gradients on the CUDA backend, every format; "gpu_train": QLoRA
#      trains),
#   2. model parity with the independent PyTorch reference (tests/parity): the CPU backend
#      against PyTorch on the GPU (float64), and the CUDA backend (bf16 activations),
#   3. a 50-step LoRA run on CUDA against the same run on the CPU (loss curves),
#   4. training-step benchmarks (bench/bench_train.c): RWKV-6 shapes, an RWKV-7 1.5B row and an
#      nf4 QLoRA row (the side-by-side comparison with RWKV-PEFT is bench/side_by_side.sh).
# Prepare once on the development machine:
#     bench/gpu_ops_check.sh --prepare-carry
#     mkdir -p .carry/vocab && cp "$(scripts/world_vocab.sh)" .carry/vocab/
# Then: run(command="bash bench/gpu_check.sh", carry=[".carry/deps", ".carry/vocab"], timeout_s=600)
# STAGES (default "ops qtrain parity curve bench") selects stages (without "ops" the build runs but
# not the op harness and sanitizers); BENCH lists benchmark configs.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/out/gpu_check}
B=${BUILD_DIR:-/tmp/rwkvpeft-gpu}
stages=${STAGES:-ops qtrain parity curve bench}
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
t0=$(date +%s)
export PATH=/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1

# 1. build and op harness (also leaves the full build in $B/full)
# (without "ops" in STAGES: the build only, ~40 s less device time)
skip_harness=1
[[ $stages == *ops* ]] && skip_harness=
OUT=$out/ops BUILD_DIR=$B SKIP_SANITIZER=${SKIP_SANITIZER:-} SKIP_HARNESS=$skip_harness bash "$root/bench/gpu_ops_check.sh" > "$out/ops.log" 2>&1
say "ops: rc $? ($(tail -1 "$out/ops/summary.txt" 2>/dev/null))"
grep -E "^(ops_|sanitizers|build)" "$out/ops/summary.txt" | sed 's/^/  /' | tee -a "$summary"
timeout 240 cmake --build "$B/full" -j"$(nproc)" --target parity_dump bench_train rwkvpeft-train rwkvpeft-data test_qtrain \
    > "$out/build_extra.log" 2>&1 || { say "extra build failed"; tail -20 "$out/build_extra.log" | tee -a "$summary"; exit 1; }
export RWKVPEFT_MODULE_PATH=$B/full LD_LIBRARY_PATH=$B/rt:${LD_LIBRARY_PATH:-}
say "build ok after $(( $(date +%s) - t0 )) s"

# 1b. quantized training on the CUDA backend (test_qtrain's gpu case)
if [[ $stages == *qtrain* ]]; then
  for case_ in gpu gpu_train; do
    RWKVPEFT_TEST_DATA=$root/tests/data RWKVPEFT_TEST_TMP=/tmp RWKVPEFT_QTEST_REQUIRE_GPU=1 CK_RUN_CASE=$case_ \
        timeout 300 "$B/full/tests/test_qtrain" >> "$out/qtrain_gpu.log" 2>&1
    say "qtrain $case_: rc $? ; $(grep -E '^[0-9]+%' "$out/qtrain_gpu.log" | tail -1)"
  done
fi

# 2. parity with PyTorch: the CPU backend; the CUDA module built with float32 activations
#    (the whole CUDA step at float32 tolerance); the shipped bf16 CUDA module (bf16 tolerance)
if [[ $stages == *parity* ]]; then
  PARITY=${PARITY:-cpu cuda32 cuda}
  if [[ $PARITY == *cuda32* ]]; then
    ( cmake -S "$root/backends/cuda" -B "$B/cuda32" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DRWKVPEFT_CUDA_ACT_F32=ON && timeout 200 cmake --build "$B/cuda32" ) > "$out/build_cuda32.log" 2>&1
  fi
  for v in cpu:1e-4:$B/full cuda32:1e-4:$B/cuda32 cuda:${CUDA_TOL:-0.25}:$B/full; do
    [[ " $PARITY " == *" ${v%%:*} "* ]] || continue
    IFS=: read -r name tol mdir <<< "$v"
    be=$name; [[ $be == cuda32 ]] && be=cuda
    RWKVPEFT_MODULE_PATH=$mdir timeout 200 python3 "$root/tests/parity/run_parity.py" --dump "$B/full/tests/parity_dump" \
        --backend $be --device cuda --tol $tol --json "$out/parity_$name.json" --quiet > "$out/parity_$name.log" 2>&1
    say "parity $name (tol $tol): rc $? ; $(grep -E 'worst relative error' "$out/parity_$name.log")"
    python3 "$root/tests/parity/summarize.py" "$out/parity_$name.json" > "$out/parity_$name.md" 2>/dev/null
  done
fi

# 3. 50-step LoRA run: CUDA vs CPU
if [[ $stages == *curve* ]]; then
  vocab=$(ls "$root"/.carry/vocab/*.txt 2>/dev/null | head -1)
  if [[ -n $vocab ]]; then
    "$B/full/rwkvpeft-data" jsonl --input "$root/data/sample/keeper_notes.jsonl" --output-prefix "$out/keeper" \
        --vocab "$vocab" > /dev/null 2>&1
    for be in cpu cuda; do
      timeout 200 "$B/full/rwkvpeft-train" --backend $be --quiet --random_seed 3 --data_file "$out/keeper" \
        --n_layer 2 --n_embd 128 --vocab_size 65536 --ctx_len 64 --micro_bsz 4 --epoch_steps 50 --epoch_count 1 \
        --lr_init 2e-3 --lr_final 2e-4 --peft lora --lora_config '{"lora_r":16,"lora_alpha":32,"lora_dropout":0}' \
        --proj_dir "$out/curve_$be" > "$out/curve_$be.log" 2>&1
      say "curve $be: rc $?"
    done
    python3 - "$out/curve_cpu/train_log.jsonl" "$out/curve_cuda/train_log.jsonl" <<'PY' | tee -a "$summary"
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
n = min(len(a), len(b))
d = [abs(x - y) for x, y in zip(a, b)]
print(f"  steps {n}; cpu loss {a[0]:.3f} -> {a[n-1]:.3f}; cuda loss {b[0]:.3f} -> {b[n-1]:.3f}; "
      f"max |diff| {max(d):.4f}; mean |diff| last 10 {sum(d[-10:])/10:.4f}")
for i in range(0, n, 10):
    print(f"  step {i+1:3d}: cpu {a[i]:.4f} cuda {b[i]:.4f}")
PY
  else
    say "curve: no .carry/vocab (see the header)"
  fi
fi

# 4. benchmarks: BENCH is a ';'-separated list of bench_train argument sets (each run also
#    gets --backend cuda --json); the default is the LoRA table of docs/benchmarks.md
if [[ $stages == *bench* ]]; then
  BENCH=${BENCH:-"--layers 24 --embd 2048 --bsz 1;--layers 24 --embd 2048 --bsz 8;--layers 32 --embd 4096 --bsz 8;\
--version 7 --layers 24 --embd 2048 --ffn 8192 --bsz 8;--layers 24 --embd 2048 --bsz 1 --quant nf4"}
  IFS=';' read -ra runs <<< "$BENCH"
  i=0
  for args in "${runs[@]}"; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    timeout ${BENCH_TIMEOUT:-240} "$B/full/bench_train" --backend cuda --ctx 1024 --r 64 --alpha 128 --grad_cp 1 \
        --warmup ${WARMUP:-2} --steps ${STEPS:-6} $args --json "$out/bench.jsonl" > "$out/bench_$i.log" 2>&1
    say "bench [$args]: rc $? ; $(grep -E "median step|^bench_train: memory" "$out/bench_$i.log" | tr "\n" " ")"
  done
fi
say "gpu_check done in $(( $(date +%s) - t0 )) s"
# at most 8 files come back from the device: the summary, the tables, the rest as one archive
find "$out" -name '*.pth' -o -name '*.bin' -o -name '*.idx' -o -name '*.safetensors' | xargs rm -f
tar czf "/tmp/gpu_check_logs.tgz" -C "$out" . && mv /tmp/gpu_check_logs.tgz "$out/logs.tgz"
find "$out" -mindepth 1 ! -name summary.txt ! -name logs.tgz ! -name 'parity_*.md' ! -name bench.jsonl -exec rm -rf {} + 2>/dev/null
ls "$out"
