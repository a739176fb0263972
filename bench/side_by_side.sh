#!/usr/bin/env bash
# side_by_side.sh — librwkvpeft against RWKV-PEFT itself (its own modules, CUDA kernels, LoRA /
# state-tuning / infctx code; bench/ref/ref_bench.py) on the same GPU in one device call. The
# GPU runs one thing at a time: first everything is built (phase 1), then the reference's steps
# and ours are timed one after the other (phase 2).
#
# Prepare once on the development machine:
#     bench/ref/setup.sh                        # RWKV-PEFT source -> .ref/RWKV-PEFT (git-ignored)
#     bench/gpu_ops_check.sh --prepare-carry    # .carry/deps (libcjson etc.), if not there yet
# Then, split over two calls (each must end inside the tool's 10 minutes):
#     run(command="CONFIGS=part1 bash bench/side_by_side.sh", carry=[".ref", ".carry/deps"], timeout_s=600)
#     run(command="CONFIGS=part2 bash bench/side_by_side.sh", carry=[".ref", ".carry/deps"], timeout_s=600)
# Files back ($OUT): side_by_side.md (the table), side_by_side.jsonl (every raw record, both
# sides), summary.txt (this script's log), logs.tgz (every run's log).
#
# CONFIGS: space-separated names from the list below, glob patterns on them, or aliases:
#   part1 (= every RWKV-6 row: v6-lora, v6-state, v6-infctx; ~9 minutes), part2 (= v7; ~8
#   minutes), all (every row: more than one call's time, the deadline cuts it), v6 (= v6-lora +
#   v6-state), v6-lora, v6-state, infctx (= v6-infctx), v7, v7-infctx (= v7 + infctx), tiny
#   (2-layer smoke configs, not part of all; bench/ref/setup_check.sh).
# A config whose estimate would pass the deadline is skipped and recorded as skipped; the last
# line of the log lists those for a further call (CONFIGS="id id ...").
# Other environment: DEADLINE_S (560: counted from the script's start), BUILD_DIR
# (/tmp/rwkvpeft-sbs), STEPS / WARMUP (override every config's counts), OURS_EXTRA (extra
# bench_train arguments), REF_PREWARM (0; 1: during the build, run each selected RWKV-7
# reference config for one step, REF_WARM_PAR (3) at a time, to fill torch.compile's on-disk
# caches: measured to cut the first step from ~24 s to ~16 s).
#
# The reference runs its RWKV-6 configs one process per kernel build (ref_bench.py --batch:
# their rwkvop module reads version, train type and ctx_len from the environment at import),
# one config after another inside it (model and optimizer freed in between); REF_BATCH=0 gives
# every config its own process. RWKV-7 configs get their own process each by default (their
# time-mix is torch.compile'd; REF_BATCH_V7=1 batches them too, with torch._dynamo.reset()
# between configs: ~10 s less a config, not yet run on the GPU; each record's compiled_graphs
# shows whether the config compiled). Ours runs one process per config.
#
# Protocol (shared/notes/reference-h200.md): step = forward + loss (L2Wrap for the reference) +
# backward + grad-norm clip 1.0 + Adam (fp32 master copies + moments of the trainable tensors,
# bf16 weights); median of the timed steps after the warm-ups; tokens/s = B*T / median step;
# LoRA r 64, alpha 128, dropout 0 on all block linears + train_parts time,ln; grad_cp 1; vocab
# 65536; the reference's memory = torch.cuda.max_memory_allocated after a reset.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OUT:-$root/out/side_by_side}
B=${BUILD_DIR:-/tmp/rwkvpeft-sbs}
work=/tmp/rwkvpeft-sbs-work
logs=$work/logs
deadline=${DEADLINE_S:-560}
t_start=$(date +%s)
rm -rf "$work"
mkdir -p "$out" "$logs" "$B"
summary=$out/summary.txt
: >"$summary"
say() { echo "[$(($(date +%s) - t_start))s] $*" | tee -a "$summary"; }
elapsed() { echo $(($(date +%s) - t_start)); }
export PATH=/opt/torch/.venv/bin:/usr/local/cuda/bin:$PATH PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/rwkvpeft-sbs-inductor}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/rwkvpeft-sbs-triton}
py=python3

# ---- the configs ------------------------------------------------------------------------------
# id ver method layers embd bsz ctx chunk warmup steps est_ref est_ours: the estimates (seconds)
# are the reference's time inside its batch process (which adds ~15 s once) and ours with its
# start-up; they only decide what is skipped near DEADLINE_S
all_configs="
v6-lora-1.6B-B1     6 lora  24 2048 1 1024  0    3 10  10  10
v6-lora-1.6B-B8     6 lora  24 2048 8 1024  0    3 10  12  12
v6-lora-3B-B1       6 lora  32 2560 1 1024  0    3 10  13  13
v6-lora-3B-B8       6 lora  32 2560 8 1024  0    3 10  17  16
v6-lora-7B-B1       6 lora  32 4096 1 1024  0    3 10  20  20
v6-lora-7B-B8       6 lora  32 4096 8 1024  0    3 10  30  28
v6-state-1.6B-B1    6 state 24 2048 1 1024  0    3 10  8   9
v6-state-1.6B-B8    6 state 24 2048 8 1024  0    3 10  10  10
v6-infctx-1.6B-4k   6 lora  24 2048 1 4096  1024 2 5   15  20
v6-infctx-1.6B-16k  6 lora  24 2048 1 16384 1024 1 2   22  25
v6-infctx-1.6B-64k  6 lora  24 2048 1 65536 1024 1 1   50  40
v7-lora-0.1B-B1     7 lora  12 768  1 1024  0    3 10  26  6
v7-lora-0.1B-B8     7 lora  12 768  8 1024  0    3 10  26  6
v7-lora-0.4B-B1     7 lora  24 1024 1 1024  0    3 10  27  7
v7-lora-0.4B-B8     7 lora  24 1024 8 1024  0    3 10  27  8
v7-lora-1.5B-B1     7 lora  24 2048 1 1024  0    3 10  28  8
v7-lora-1.5B-B8     7 lora  24 2048 8 1024  0    3 10  30  10
v7-lora-2.9B-B1     7 lora  32 2560 1 1024  0    3 10  30  10
v7-lora-2.9B-B8     7 lora  32 2560 8 1024  0    3 10  34  12
tiny-v6-lora        6 lora  2  768  1 1024  0    1 3   5   3
tiny-v6-state       6 state 2  768  1 1024  0    1 3   5   3
tiny-v7-lora        7 lora  2  768  1 1024  0    1 3   20  3
tiny-v6-infctx-4k   6 lora  2  768  1 4096  1024 1 3   5   3
tiny-v6-infctx-64k  6 lora  2  768  1 65536 1024 1 1   8   5
"
sel=${CONFIGS:-all}
pats=()
for w in $sel; do
    case $w in
    all) pats+=("v6-*" "v7-*") ;;
    part1) pats+=("v6-*") ;;
    part2) pats+=("v7-*") ;;
    v6) pats+=("v6-lora-*" "v6-state-*") ;;
    v6-lora | v6-state | v6-infctx | v7-lora) pats+=("$w-*") ;;
    infctx) pats+=("v6-infctx-*") ;;
    v7) pats+=("v7-*") ;;
    v7-infctx) pats+=("v7-*" "v6-infctx-*") ;;
    tiny) pats+=("tiny-*") ;;
    *) pats+=("$w") ;;
    esac
done
selected=$work/configs.txt
: >"$selected"
while read -r id rest; do
    [[ -z $id ]] && continue
    for p in "${pats[@]}"; do
        # shellcheck disable=SC2053
        if [[ $id == $p ]]; then
            echo "$id $rest" >>"$selected"
            break
        fi
    done
done <<<"$all_configs"
if [[ -n ${STEPS:-}${WARMUP:-} ]]; then
    awk -v s="${STEPS:-}" -v w="${WARMUP:-}" '{ if (w != "") $9 = w; if (s != "") $10 = s; print }' "$selected" >"$selected.tmp" &&
        mv "$selected.tmp" "$selected"
fi
n_sel=$(wc -l <"$selected")
say "side_by_side: CONFIGS='$sel' -> $n_sel configs; deadline ${deadline}s"
((n_sel > 0)) || { say "nothing selected"; exit 2; }
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    nvcc --version 2>&1 | tail -1
    echo "ninja $(ninja --version 2>&1)"
    $py - <<'PY' 2>&1
import importlib, sys
print("python", sys.version.split()[0])
for m in ["torch", "lightning", "triton", "einops", "rwkvfla", "deepspeed", "bitsandbytes"]:
    try:
        print(m, getattr(importlib.import_module(m), "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(m, "-", type(e).__name__)
PY
} >"$logs/env.txt" 2>&1
sed 's/^/  /' "$logs/env.txt" | tee -a "$summary"
ref_dir=$root/.ref/RWKV-PEFT
ref_commit=$(cat "$ref_dir/REF_COMMIT" 2>/dev/null || echo none)
[[ -f $ref_dir/train.py ]] || say "NO REFERENCE CODE at .ref/RWKV-PEFT: run bench/ref/setup.sh and carry .ref"
say "reference: RWKV-PEFT $ref_commit"
# OUR_REV names the tree (the device copy's git metadata can be older than the tree it carries:
# pass OUR_REV=$(git rev-parse --short HEAD) from the development machine)
our_rev=${OUR_REV:-"working tree (git there: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?"), may be stale)"}

ref_args() { # ver method L C B T chunk -> ref_bench arguments
    local a="--version $1 --method $2 --layers $3 --embd $4 --bsz $5 --ctx $6"
    (($7 > 0)) && a="$a --chunk $7"
    echo "$a"
}
ref_key() { # ver method T chunk -> the reference's kernel build (one process per key)
    if (($1 == 7)); then
        if (($4 > 0)); then echo v7-infctx-fla; elif [[ $2 == state ]]; then echo v7-state-fla; else echo wkv7; fi
    elif (($4 > 0)); then echo "wkv6infctx-T$3"
    elif [[ $2 == state ]]; then echo "wkv6state-T$3"
    else echo "wkv6-T$3"; fi
}

# ---- phase 1 (parallel): our build; the reference's JIT kernel builds -------------------------
# dependencies as bench/gpu_ops_check.sh sets them up (carried Debian packages in .carry/deps)
carry=$root/.carry/deps
ma=x86_64-linux-gnu
mkdir -p "$B/pc" "$B/bin" "$B/rt"
extra_cmake=()
if [[ -d $carry/usr ]]; then
    rewrite_pc() { sed -e "s|=/usr|=$carry/usr|g" "$carry/usr/lib/$ma/pkgconfig/$1.pc" >"$B/pc/$1.pc"; }
    if ! command -v pkg-config >/dev/null; then
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$carry/usr/lib/$ma" "$carry/usr/bin/pkgconf" >"$B/bin/pkg-config"
        chmod +x "$B/bin/pkg-config"
        export PATH=$B/bin:$PATH
    fi
    if ! pkg-config --exists libcjson 2>/dev/null; then
        rewrite_pc libcjson
        ln -sf "$carry/usr/lib/$ma/libcjson.so.1" "$B/rt/libcjson.so.1"
    fi
    if [[ ! -f /usr/include/zlib.h ]]; then
        zlib_so=$(ls /lib/$ma/libz.so.1 /usr/lib/$ma/libz.so.1 2>/dev/null | head -1)
        extra_cmake+=(-DZLIB_INCLUDE_DIR="$carry/usr/include" -DZLIB_LIBRARY="$zlib_so")
    fi
    export PKG_CONFIG_PATH=$B/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
else
    say "no .carry/deps (bench/gpu_ops_check.sh --prepare-carry): our build may miss libcjson"
fi
export LD_LIBRARY_PATH=$B/rt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export RWKVPEFT_MODULE_PATH=$B/full
bench_bin=$B/full/bench_train
(
    cmake -S "$root" -B "$B/full" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRWKVPEFT_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 -DBUILD_TESTING=OFF "${extra_cmake[@]}" &&
        timeout 300 cmake --build "$B/full" -j"$(nproc)" --target rwkvpeft_cuda bench_train parity_dump
) >"$logs/build_ours.log" 2>&1 &
pid_build=$!
# PARITY_CASES (run_parity.py case names or groups, e.g. "v5,v7"): after the timings, the CUDA
# step against the PyTorch reference, with float32 activations (a module built with
# RWKVPEFT_CUDA_ACT_F32: float32 tolerance) and as shipped (bf16: PARITY_TOL, default 0.25).
# Leave room for it with DEADLINE_S (about 60 s).
if [[ -n ${PARITY_CASES:-} ]]; then
    (cmake -S "$root/backends/cuda" -B "$B/cuda32" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DRWKVPEFT_CUDA_ACT_F32=ON && timeout 300 cmake --build "$B/cuda32") >"$logs/build_cuda32.log" 2>&1 &
    pid_build32=$!
fi

ref_pids=()
declare -A seen=()
while read -r id ver method L C Bz T chunk _; do
    key=$(ref_key "$ver" "$method" "$T" "$chunk")
    [[ $key == *-fla ]] && continue # their fla-only paths: nothing of theirs to build
    [[ -n ${seen[$key]:-} ]] && continue
    seen[$key]=1
    # shellcheck disable=SC2046
    (
        timeout 400 $py "$root/bench/ref/ref_bench.py" --prebuild $(ref_args "$ver" "$method" 2 768 1 "$T" "$chunk") \
            </dev/null >"$logs/prebuild_$key.log" 2>&1
        echo "rc $?" >>"$logs/prebuild_$key.log"
        if [[ $key == wkv7 && ${REF_PREWARM:-0} == 1 ]]; then
            grep -E '^(v7|tiny-v7)-' "$selected" | {
                while read -r id2 ver2 m2 L2 C2 B2 T2 ch2 _; do
                    ((ch2 > 0)) || [[ $m2 == state ]] && continue
                    while (($(jobs -rp | wc -l) >= ${REF_WARM_PAR:-3})); do wait -n; done
                    timeout 300 $py "$root/bench/ref/ref_bench.py" --warm-only --warmup 1 --tag "$id2" \
                        $(ref_args "$ver2" "$m2" "$L2" "$C2" "$B2" "$T2" "$ch2") </dev/null >"$logs/prewarm_$id2.log" 2>&1 &
                done
                wait
            }
        fi
    ) &
    ref_pids+=($!)
done <"$selected"
wait $pid_build
rc_build=$?
if ((rc_build == 0)) && [[ -x $bench_bin ]]; then
    say "our build ok (bench_train + CUDA module)"
else
    say "our build FAILED (rc $rc_build); ours will be recorded as errors. Tail of build_ours.log:"
    tail -15 "$logs/build_ours.log" | sed 's/^/  /' | tee -a "$summary"
fi
for p in "${ref_pids[@]}"; do wait "$p"; done
for f in "$logs"/prebuild_*.log "$logs"/prewarm_*.log; do
    [[ -f $f ]] || continue
    k=$(basename "$f" .log)
    say "$k: $(grep -oE '"(build_s|first_step_s|error)": [^,}]{0,160}' "$f" | head -2 | tr '\n' ' ') $(tail -1 "$f" | grep -E '^rc ')"
done
say "phase 1 done"

# bench_train's --version: pass it where the source knows it (always for RWKV-7: a bench_train
# without it fails those rows, which is recorded)
has_version=0
grep -q -- '"--version"' "$root/bench/bench_train.c" 2>/dev/null && has_version=1

# ---- phase 2 (sequential): per kernel group, the reference's batch, then ours config by config
rec=$work/records.jsonl
: >"$rec"
skipped=()
write_table() {
    $py "$root/bench/ref/sbs_table.py" "$selected" "$rec" \
        --header "# librwkvpeft vs RWKV-PEFT, side by side ($(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1))" \
        --header "" \
        --header "RWKV-PEFT $ref_commit (their modules + CUDA kernels, bench/ref/ref_bench.py); librwkvpeft $our_rev (bench/bench_train.c, CUDA backend). CONFIGS='$sel'." \
        >"$out/side_by_side.md" 2>>"$logs/table.log"
    cp "$rec" "$out/side_by_side.jsonl"
}
add_error() { # impl id mode version msg
    $py - "$rec" "$@" <<'PY'
import json, sys
path, impl, cid, mode, ver, msg = sys.argv[1:7]
r = {"impl": impl, "config": cid, "version": int(ver), "error": msg}
if mode:
    r["mode"] = mode
open(path, "a").write(json.dumps(r) + "\n")
PY
}
skip_config() { # id ver chunk
    skipped+=("$1")
    add_error rwkv-peft "$1" "" "$2" "skipped: time budget of this call"
    if (($3 > 0)); then
        add_error librwkvpeft "$1" full "$2" "skipped: time budget of this call"
        add_error librwkvpeft "$1" truncated "$2" "skipped: time budget of this call"
    else
        add_error librwkvpeft "$1" "" "$2" "skipped: time budget of this call"
    fi
}
run_ours() { # id ver method L C B T chunk warm steps
    local id=$1 ver=$2 method=$3 L=$4 C=$5 Bz=$6 T=$7 chunk=$8 warm=$9 steps=${10}
    local modes=("") mode
    ((chunk > 0)) && modes=(full truncated)
    for mode in "${modes[@]}"; do
        local now cap s rc raw log
        now=$(elapsed)
        cap=$((deadline - now - 5))
        ((cap > 400)) && cap=400
        if ((cap < 15)); then
            add_error librwkvpeft "$id" "$mode" "$ver" "skipped: time budget of this call"
            continue
        fi
        local a=(--backend cuda --layers "$L" --embd "$C" --vocab 65536 --ctx "$T" --bsz "$Bz" --method "$method"
            --r 64 --alpha 128 --grad_cp 1 --warmup "$warm" --steps "$steps")
        ((ver == 7)) && a+=(--ffn $((4 * C)))
        ((ver != 6 || has_version)) && a+=(--version "$ver")
        ((chunk > 0)) && a+=(--chunk "$chunk" --infctx "$mode")
        raw=$work/ours_${id}_${mode:-x}.jsonl
        log=$logs/ours_${id}${mode:+_$mode}.log
        rm -f "$raw"
        s=$(date +%s)
        # shellcheck disable=SC2086
        timeout -k 10 "$cap" "$bench_bin" "${a[@]}" ${OURS_EXTRA:-} --json "$raw" </dev/null >"$log" 2>&1
        rc=$?
        $py - "$rec" "$raw" "$id" "$mode" "$ver" "$rc" "$log" "${a[*]}" <<'PY'
import json, sys
path, raw, cid, mode, ver, rc, log, argv = sys.argv[1:9]
try:
    r = json.loads(open(raw).read().splitlines()[-1])
except (OSError, IndexError, ValueError):
    try:
        tail = open(log, errors="replace").read().strip().splitlines()[-3:]
    except OSError:
        tail = []
    r = {"error": "exit %s: %s" % (rc, " | ".join(tail)[:400])}
r.update({"impl": "librwkvpeft", "config": cid, "version": int(ver), "args": argv})
if mode:
    r["mode"] = mode
open(path, "a").write(json.dumps(r) + "\n")
PY
        say "$id ours${mode:+ $mode}: rc $rc in $(($(date +%s) - s))s; $(tail -1 "$rec" | grep -oE '"(tokens_per_s|peak_gib|median_ms|error)": [^,}]{0,200}' | tr '\n' ' ')"
    done
}
run_group() { # the configs in $work/group.txt share one reference process
    local g=$work/group.txt batch=$work/batch.txt now remaining sum_ref=0 sum_ours=0 cap s rc
    : >"$batch"
    now=$(elapsed)
    remaining=$((deadline - now))
    local used=15 id ver method L C Bz T chunk warm steps er eo
    while read -r id ver method L C Bz T chunk warm steps er eo; do
        if ((used + er + eo > remaining)); then
            say "$id: SKIPPED (at ${now}s; with its estimate the group would pass the ${deadline}s deadline)"
            skip_config "$id" "$ver" "$chunk"
            continue
        fi
        used=$((used + er + eo))
        sum_ref=$((sum_ref + er))
        sum_ours=$((sum_ours + eo))
        echo "$id $ver $method $L $C $Bz $T $chunk $warm $steps" >>"$batch"
    done <"$g"
    [[ -s $batch ]] || return 0
    # the reference: one process for the group; it writes one record per config
    cap=$((remaining - sum_ours - 10))
    ((cap > 2 * sum_ref + 90)) && cap=$((2 * sum_ref + 90))
    ((cap < 30)) && cap=30
    read -r id ver method L C Bz T chunk _ <"$batch"
    s=$(date +%s)
    # shellcheck disable=SC2046
    timeout -k 15 "$cap" $py "$root/bench/ref/ref_bench.py" --batch "$batch" $(ref_args "$ver" "$method" "$L" "$C" "$Bz" "$T" "$chunk") \
        --json "$rec" </dev/null >"$logs/ref_$id.log" 2>&1
    rc=$?
    say "reference batch ($(wc -l <"$batch") configs, log ref_$id.log): rc $rc in $(($(date +%s) - s))s"
    while read -r id ver method L C Bz T chunk warm steps; do
        if ! grep -q "\"impl\": \"rwkv-peft\", \"config\": \"$id\"" "$rec"; then
            add_error rwkv-peft "$id" "" "$ver" "no record: the batch process ended (rc $rc) before it: $(tail -1 "$logs/ref_$id.log" | cut -c1-200)"
        fi
        say "$id ref: $(grep "\"impl\": \"rwkv-peft\", \"config\": \"$id\"" "$rec" | tail -1 | grep -oE '"(tokens_per_s|peak_gib|step_ms|first_step_s|setup_s|error)": [^,}]{0,200}' | tr '\n' ' ')"
    done <"$batch"
    write_table
    # ours, config by config
    while read -r id ver method L C Bz T chunk warm steps; do
        run_ours "$id" "$ver" "$method" "$L" "$C" "$Bz" "$T" "$chunk" "$warm" "$steps"
        write_table
    done <"$batch"
}
prev_key=""
: >"$work/group.txt"
while read -r id ver method L C Bz T chunk warm steps er eo; do
    key=$(ref_key "$ver" "$method" "$T" "$chunk")
    # one reference process per config: RWKV-7 by default (REF_BATCH_V7=1 batches it too, ~10 s
    # less a config; not yet checked on the GPU), everything with REF_BATCH=0
    if [[ ${REF_BATCH:-1} == 0 ]] || { ((ver == 7)) && [[ ${REF_BATCH_V7:-0} == 0 ]]; }; then key="$key-$id"; fi
    if [[ -n $prev_key && $key != "$prev_key" ]]; then
        run_group
        : >"$work/group.txt"
    fi
    prev_key=$key
    echo "$id $ver $method $L $C $Bz $T $chunk $warm $steps $er $eo" >>"$work/group.txt"
done <"$selected"
[[ -s $work/group.txt ]] && run_group
write_table
cat "$out/side_by_side.md" | tee -a "$summary"
say "side_by_side done in $(elapsed) s"
((${#skipped[@]})) && say "skipped for time: CONFIGS=\"${skipped[*]}\""
if [[ -n ${PARITY_CASES:-} ]]; then
    wait "$pid_build32"
    say "cuda32 module build: rc $?"
    for v in cuda32:1e-4:$B/cuda32 cuda:${PARITY_TOL:-0.25}:$B/full; do
        IFS=: read -r name tol mdir <<<"$v"
        RWKVPEFT_MODULE_PATH=$mdir timeout 150 $py "$root/tests/parity/run_parity.py" --dump "$B/full/tests/parity_dump" \
            --backend cuda --device cuda --cases "$PARITY_CASES" --tol "$tol" --json "$out/parity_$name.json" \
            >"$logs/parity_$name.log" 2>&1
        say "parity $name (tol $tol, cases $PARITY_CASES): rc $? ; $(grep -E 'worst relative error' "$logs/parity_$name.log")"
        $py "$root/tests/parity/summarize.py" "$out/parity_$name.json" >"$out/parity_$name.md" 2>/dev/null
    done
fi
tar czf "$work/logs.tgz" -C "$work" logs configs.txt 2>/dev/null && cp "$work/logs.tgz" "$out/logs.tgz"
ls "$out"
