#!/usr/bin/env bash
# End-to-end test of the tools: jsonl -> binidx, training with RWKV-PEFT flags, determinism,
# exact resume from a saved checkpoint, evaluation, generation, rejected flags, full fine-tune,
# every PEFT method (LoRA, PiSSA, Bone, Bat, state tuning), merge round trips and quantized
# training (QLoRA nf4 with a --quant merge).
#   test_cli.sh BUILD_DIR SOURCE_DIR   (needs RWKVPEFT_WORLD_VOCAB)
set -euo pipefail
bin=$1
src=$2
vocab=${RWKVPEFT_WORLD_VOCAB:?set RWKVPEFT_WORLD_VOCAB (scripts/world_vocab.sh prints it)}
tmp=$(mktemp -d "${RWKVPEFT_TEST_TMP:-/tmp}/cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. data tool
"$bin/rwkvpeft-data" jsonl --input "$src/data/sample/keeper_notes.jsonl" --output-prefix "$tmp/keeper" \
  --vocab "$vocab" > "$tmp/data.out" 2>&1 || { cat "$tmp/data.out"; fail "rwkvpeft-data jsonl"; }
grep -q "data_nums: 12" "$tmp/data.out" || { cat "$tmp/data.out"; fail "data_nums line"; }
[ -s "$tmp/keeper.bin" ] && [ -s "$tmp/keeper.idx" ] || fail "binidx files missing"
printf '{"text":"ok"}\n{"text":"fine"}\n{"text": 3}\n' > "$tmp/bad.jsonl"
if "$bin/rwkvpeft-data" jsonl --input "$tmp/bad.jsonl" --output-prefix "$tmp/bad" --vocab "$vocab" > "$tmp/bad.out" 2>&1; then
  fail "a bad jsonl line was accepted"
fi
grep -q "bad.jsonl:3" "$tmp/bad.out" || { cat "$tmp/bad.out"; fail "the error does not name line 3"; }
[ ! -e "$tmp/bad.bin" ] || fail "a failed conversion left an output file"

# 2. training with upstream flag names
train() { # proj_dir, extra flags...
  local dir=$1; shift
  "$bin/rwkvpeft-train" --backend cpu --quiet --random_seed 7 --data_file "$tmp/keeper" --data_type binidx \
    --n_layer 2 --n_embd 64 --head_size_a 32 --vocab_size 65536 --ctx_len 16 --micro_bsz 2 \
    --epoch_steps 4 --epoch_count 3 --epoch_save 1 --lr_init 1e-3 --lr_final 1e-4 --warmup_steps 2 \
    --peft lora --lora_config '{"lora_load":"","lora_r":4,"lora_alpha":8,"lora_dropout":0.05}' \
    --train_parts '["time","ln"]' --accumulate_grad_batches 2 --grad_cp 1 --proj_dir "$dir" "$@"
}
losses() { grep -o '"loss":[-0-9.e]*' "$1"; }
train "$tmp/a" > "$tmp/a.out" 2>&1 || { cat "$tmp/a.out"; fail "training run A"; }
for e in 0 1 2; do [ -s "$tmp/a/rwkv-$e.pth" ] || fail "rwkv-$e.pth not saved"; done
[ -s "$tmp/a/rwkv-init.pth" ] || fail "rwkv-init.pth not saved"
[ "$(losses "$tmp/a/train_log.jsonl" | wc -l)" -eq 6 ] || fail "expected 6 optimizer steps in the JSONL log"
grep -q "^0 " "$tmp/a/train_log.txt" || fail "train_log.txt epoch line"
# same seed, same losses, bit for bit
train "$tmp/a2" > /dev/null 2>&1 || fail "training run A2"
cmp <(losses "$tmp/a/train_log.jsonl") <(losses "$tmp/a2/train_log.jsonl") || fail "same seed gave different losses"
# resume from the epoch-0 checkpoint (bf16 adapter + state file): epochs 1-2 identical to run A
train "$tmp/b" --resume "$tmp/a/rwkv-0.pth" > "$tmp/b.out" 2>&1 || { cat "$tmp/b.out"; fail "resumed run"; }
cmp <(losses "$tmp/a/train_log.jsonl" | tail -n 4) <(losses "$tmp/b/train_log.jsonl") \
  || { losses "$tmp/a/train_log.jsonl"; losses "$tmp/b/train_log.jsonl"; fail "resume is not exact"; }

# 8-bit AdamW (--optim adamw8bit): trains, resumes exactly, refuses the fp32 run's state
train "$tmp/q8" --optim adamw8bit > "$tmp/q8.out" 2>&1 || { cat "$tmp/q8.out"; fail "--optim adamw8bit run"; }
[ "$(losses "$tmp/q8/train_log.jsonl" | wc -l)" -eq 6 ] || fail "--optim adamw8bit: expected 6 optimizer steps"
train "$tmp/q8r" --optim adamw8bit --resume "$tmp/q8/rwkv-0.pth" > "$tmp/q8r.out" 2>&1 || { cat "$tmp/q8r.out"; fail "--optim adamw8bit resume"; }
cmp <(losses "$tmp/q8/train_log.jsonl" | tail -n 4) <(losses "$tmp/q8r/train_log.jsonl") \
  || { losses "$tmp/q8/train_log.jsonl"; losses "$tmp/q8r/train_log.jsonl"; fail "8-bit resume is not exact"; }
if train "$tmp/q8x" --optim adamw8bit --resume "$tmp/a/rwkv-0.pth" > "$tmp/q8x.out" 2>&1; then
  fail "an fp32 AdamW state was resumed with --optim adamw8bit"
fi
grep -q "RWKVPEFT_OPTIM_ADAMW_8BIT" "$tmp/q8x.out" || { cat "$tmp/q8x.out"; fail "no clear message for the optimizer mismatch"; }

# long-context (infctx): ctx_len 16 in chunks of 6 (not a divisor); full mode tracks the
# un-chunked run (same math, other rounding order; without dropout, whose masks are drawn
# per chunk), truncated mode differs but trains
nodrop='{"lora_load":"","lora_r":4,"lora_alpha":8,"lora_dropout":0}'
train "$tmp/p0" --lora_config "$nodrop" > "$tmp/p0.out" 2>&1 || { cat "$tmp/p0.out"; fail "plain run without dropout"; }
train "$tmp/ic" --lora_config "$nodrop" --train_type infctx --chunk_ctx 6 > "$tmp/ic.out" 2>&1 \
  || { cat "$tmp/ic.out"; fail "infctx run"; }
train "$tmp/it" --train_type infctx --chunk_ctx 6 --infctx_grad truncated > "$tmp/it.out" 2>&1 \
  || { cat "$tmp/it.out"; fail "infctx truncated run"; }
python3 - "$tmp/p0/train_log.jsonl" "$tmp/ic/train_log.jsonl" "$tmp/it/train_log.jsonl" <<'PY' || fail "infctx losses"
import json, math, sys
a, f, t = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:])
assert len(a) == len(f) == len(t) == 6, (len(a), len(f), len(t))
assert all(math.isfinite(x) for x in f + t)
assert max(abs(x - y) for x, y in zip(a, f)) < 1e-4, ("full infctx should track the plain run", a, f)
PY

# 3. evaluation and generation with the adapter (no merge)
"$bin/rwkvpeft-train" --help > /dev/null || fail "--help"
"$bin/rwkvpeft-eval" --load_model "$tmp/a/rwkv-init.pth" --adapter "$tmp/a/rwkv-2.pth" --peft lora \
  --lora_config '{"lora_r":4,"lora_alpha":8}' --data_file "$tmp/keeper" --ctx_len 16 --micro_bsz 4 \
  --vocab "$vocab" --prompt "Keeper's note" --max_new_tokens 8 --temperature 0 --backend cpu > "$tmp/eval.out" 2>/dev/null \
  || { cat "$tmp/eval.out"; fail "rwkvpeft-eval"; }
grep -q "perplexity" "$tmp/eval.out" || fail "no perplexity line"
grep -q "^Keeper's note" "$tmp/eval.out" || fail "no generated text"

# 4. flags that are not implemented or unknown are rejected, not ignored
for bad in "--quant int4" "--train_type state" "--peft dora" "--devices 2" "--no_such_flag 1" "--wandb proj" "--optim adam_mini"; do
  # shellcheck disable=SC2086
  if train "$tmp/x" $bad > "$tmp/x.out" 2>&1; then fail "accepted: $bad"; fi
  grep -qE "not implemented|unknown flag|only" "$tmp/x.out" || { cat "$tmp/x.out"; fail "no clear message for $bad"; }
done
if "$bin/rwkvpeft-train" --load_model "$tmp/a/rwkv-init.pth" --n_layer 5 --data_file "$tmp/keeper" --backend cpu \
   --proj_dir "$tmp/y" > "$tmp/y.out" 2>&1; then fail "a disagreeing --n_layer was accepted"; fi
grep -q "disagrees" "$tmp/y.out" || { cat "$tmp/y.out"; fail "no message for --n_layer mismatch"; }

# 5. full fine-tune (--peft none, no --train_parts): everything trains; its rwkv-N.pth is a
# whole model, used below as the base for every PEFT method
base0=$tmp/a/rwkv-init.pth
method() { # proj_dir, base, extra flags...
  local dir=$1 base=$2; shift 2
  "$bin/rwkvpeft-train" --backend cpu --quiet --random_seed 3 --load_model "$base" --data_file "$tmp/keeper" \
    --ctx_len 16 --micro_bsz 2 --epoch_steps 6 --epoch_count 2 --epoch_save 1 --lr_init 3e-3 --lr_final 3e-3 \
    --proj_dir "$dir" "$@"
}
evloss() { # model, extra flags... -> loss on the whole dataset
  "$bin/rwkvpeft-eval" --backend cpu --load_model "$1" --data_file "$tmp/keeper" --ctx_len 16 --micro_bsz 4 --max_batches 3 "${@:2}" \
    2>/dev/null | sed -n 's/.*loss \([0-9.]*\).*/\1/p'
}
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
near() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 2e-5 * (a < 0 ? -a : a) + 1e-6) }'; }
method "$tmp/full" "$base0" --peft none > "$tmp/full.out" 2>&1 || { cat "$tmp/full.out"; fail "full fine-tune"; }
grep -q "full fine-tune" "$tmp/full.out" || { cat "$tmp/full.out"; fail "full fine-tune not selected"; }
base=$tmp/full/rwkv-1.pth
l0=$(evloss "$base0"); l1=$(evloss "$base")
lt "$l1" "$l0" || fail "full fine-tune did not lower the loss ($l0 -> $l1)"

# 6. every PEFT method trains (eval loss with the adapter < base loss), and a merge round
# trip (rwkvpeft-merge, fp32) gives the loss of eval with the adapter attached
declare -A flags=(
  [lora]="--peft lora --lora_config {\"lora_load\":\"\",\"lora_r\":8,\"lora_alpha\":16,\"lora_dropout\":0.01}"
  [pissa]="--peft pissa --pissa_config {\"pissa_load\":\"\",\"pissa_init\":\"\",\"pissa_r\":8,\"svd_niter\":4}"
  [bone]="--peft bone --bone_config {\"bone_load\":\"\",\"bone_r\":24,\"bone_mode\":\"bone\"}"
  [nov_bone]="--peft bone --bone_config {\"bone_load\":\"\",\"bone_r\":16}"
  [bat]="--peft disha --disha_config {\"mode\":\"bat\",\"load\":\"\",\"r\":16}"
  [state]="--train_type state --lr_init 0.3 --lr_final 0.3"
)
lb=$(evloss "$base")
for m in lora pissa bone nov_bone bat state; do
  # shellcheck disable=SC2086
  method "$tmp/$m" "$base" ${flags[$m]} > "$tmp/$m.out" 2>&1 || { cat "$tmp/$m.out"; fail "training with $m"; }
  [ -s "$tmp/$m/rwkv-1.pth" ] && [ -s "$tmp/$m/rwkv-1.pth.adapter.json" ] || fail "$m: adapter or sidecar not saved"
  la=$(evloss "$base" --adapter "$tmp/$m/rwkv-1.pth")
  echo "  $m: loss $lb -> $la" >&2
  lt "$la" "$lb" || fail "$m did not lower the loss ($lb -> $la)"
  "$bin/rwkvpeft-merge" --base "$base" --lora "$tmp/$m/rwkv-1.pth" --output "$tmp/$m/merged.pth" --dtype fp32 \
    > "$tmp/$m.merge" 2>&1 || { cat "$tmp/$m.merge"; fail "merging $m"; }
  lm=$(evloss "$tmp/$m/merged.pth")
  near "$lm" "$la" || fail "$m: merged model loss $lm != loss with the adapter attached $la"
done
grep -q "lora_alpha 16 from" "$tmp/lora.merge" || { cat "$tmp/lora.merge"; fail "lora_alpha not taken from the sidecar"; }
grep -q '"key":.*"bone"' "$tmp/bone/rwkv-1.pth.adapter.json" || fail "bone key name not recorded"
[ -s "$tmp/pissa/init_pissa.pth" ] || fail "init_pissa.pth not written"
# the default bf16 merge is close, and the adapter's own keys are gone (checked by loading it as a model)
"$bin/rwkvpeft-merge" --base "$base" --lora "$tmp/lora/rwkv-1.pth" --output "$tmp/lora/merged16.pth" > /dev/null 2>&1 \
  || fail "bf16 merge"
l16=$(evloss "$tmp/lora/merged16.pth")
awk -v a="$l16" -v b="$(evloss "$tmp/lora/merged.pth")" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.01) }' \
  || fail "bf16 merge loss $l16 far from fp32"
# a LoRA merge without the sidecar needs --lora_alpha (no silent default of 16)
cp "$tmp/lora/rwkv-1.pth" "$tmp/bare.pth"
if "$bin/rwkvpeft-merge" --base "$base" --lora "$tmp/bare.pth" --output "$tmp/bare-merged.pth" > "$tmp/bare.out" 2>&1; then
  fail "a LoRA merge without alpha was accepted"
fi
grep -q "lora_alpha" "$tmp/bare.out" || { cat "$tmp/bare.out"; fail "no lora_alpha message"; }
"$bin/rwkvpeft-merge" --base "$base" --lora "$tmp/bare.pth" --lora_alpha 16 --type lora --output "$tmp/bare-merged.pth" \
  --dtype fp32 > /dev/null 2>&1 || fail "merge with --lora_alpha"
near "$(evloss "$tmp/bare-merged.pth")" "$(evloss "$tmp/lora/merged.pth")" || fail "explicit alpha merge differs"
# PiSSA: the same run again in the same proj_dir reuses its init; another rank is refused (the
# reference aborts whenever the file exists); resuming with pissa_load + pissa_init works
# shellcheck disable=SC2086
method "$tmp/pissa" "$base" ${flags[pissa]} --epoch_count 1 > /dev/null 2>&1 || fail "PiSSA rerun in the same proj_dir"
if method "$tmp/pissa" "$base" --peft pissa --pissa_config '{"pissa_r":4}' > "$tmp/p4.out" 2>&1; then
  fail "a PiSSA run with another init in the same proj_dir was accepted"
fi
grep -q "another PiSSA init" "$tmp/p4.out" || { cat "$tmp/p4.out"; fail "no message for a foreign init_pissa.pth"; }
method "$tmp/pissa2" "$base" --peft pissa --epoch_count 1 \
  --pissa_config "{\"pissa_load\":\"$tmp/pissa/rwkv-0.pth\",\"pissa_init\":\"$tmp/pissa/init_pissa.pth\",\"pissa_r\":8}" \
  > "$tmp/p5.out" 2>&1 || { cat "$tmp/p5.out"; fail "PiSSA resume with pissa_load + pissa_init"; }

# 7. quantized training (QLoRA, nf4): it trains, the sidecar records the format, rwkvpeft-eval
# takes it from there, and a --quant merge gives the loss of the quantized model with its
# adapter (a merge onto the unquantized base does not). The run keeps emb.weight on the host
# (--embedding_on_host 1: same numbers, less device memory)
# shellcheck disable=SC2086
method "$tmp/qlora" "$base" ${flags[lora]} --quant nf4 --embedding_on_host 1 > "$tmp/qlora.out" 2>&1 || { cat "$tmp/qlora.out"; fail "QLoRA training"; }
grep -q "quant nf4" "$tmp/qlora.out" || { cat "$tmp/qlora.out"; fail "QLoRA banner"; }
grep -q '"quant":.*"nf4"' "$tmp/qlora/rwkv-1.pth.adapter.json" || fail "quant not recorded in the sidecar"
lq=$(evloss "$base" --adapter "$tmp/qlora/rwkv-1.pth")
echo "  qlora nf4: loss $lb -> $lq" >&2
lt "$lq" "$lb" || fail "QLoRA did not lower the loss ($lb -> $lq)"
"$bin/rwkvpeft-merge" --base "$base" --lora "$tmp/qlora/rwkv-1.pth" --quant nf4 --output "$tmp/qlora/merged.pth" \
  --dtype fp32 > "$tmp/qlora.merge" 2>&1 || { cat "$tmp/qlora.merge"; fail "--quant merge"; }
lm=$(evloss "$tmp/qlora/merged.pth")
near "$lm" "$lq" || fail "QLoRA: merged model loss $lm != loss of the quantized model with its adapter $lq"
"$bin/rwkvpeft-merge" --base "$base" --lora "$tmp/qlora/rwkv-1.pth" --quant none --output "$tmp/qlora/merged-nq.pth" \
  --dtype fp32 > /dev/null 2>&1 || fail "--quant none merge"
if near "$(evloss "$tmp/qlora/merged-nq.pth")" "$lq"; then fail "--quant none merge equals the quantized model"; fi
# 8. RWKV-5 (x052) and RWKV-7 (x070): a fresh tiny model of each trains with falling loss
# (full fine-tune through --my_testing), LoRA on it trains and merges back exactly, and the
# RWKV-7 model state-tunes
for ver in x052 x070; do
  d=$tmp/$ver
  "$bin/rwkvpeft-train" --backend cpu --quiet --random_seed 5 --my_testing $ver --data_file "$tmp/keeper" \
    --data_type binidx --n_layer 2 --n_embd 64 --head_size_a 32 --vocab_size 65536 --ctx_len 16 --micro_bsz 2 \
    --epoch_steps 6 --epoch_count 2 --epoch_save 1 --lr_init 3e-3 --lr_final 3e-3 --peft none --proj_dir "$d/full" \
    > "$d.out" 2>&1 || { cat "$d.out"; fail "$ver: fresh full fine-tune"; }
  l0=$(evloss "$d/full/rwkv-init.pth"); l1=$(evloss "$d/full/rwkv-1.pth")
  echo "  $ver full fine-tune: loss $l0 -> $l1" >&2
  lt "$l1" "$l0" || fail "$ver: full fine-tune did not lower the loss ($l0 -> $l1)"
  vbase=$d/full/rwkv-1.pth
  ms="lora"; [ $ver = x070 ] && ms="lora state"
  for m in $ms; do
    # shellcheck disable=SC2086
    method "$d/$m" "$vbase" ${flags[$m]} > "$d.$m.out" 2>&1 || { cat "$d.$m.out"; fail "$ver: training with $m"; }
    la=$(evloss "$vbase" --adapter "$d/$m/rwkv-1.pth")
    echo "  $ver $m: loss $l1 -> $la" >&2
    lt "$la" "$l1" || fail "$ver: $m did not lower the loss ($l1 -> $la)"
    "$bin/rwkvpeft-merge" --base "$vbase" --lora "$d/$m/rwkv-1.pth" --output "$d/$m/merged.pth" --dtype fp32 \
      > "$d.$m.merge" 2>&1 || { cat "$d.$m.merge"; fail "$ver: merging $m"; }
    near "$(evloss "$d/$m/merged.pth")" "$la" || fail "$ver: merged $m model differs from the adapter's loss"
  done
done
# RWKV-5 has no state tuning in the reference: refused with a message
if method "$tmp/x052/state" "$tmp/x052/full/rwkv-1.pth" --train_type state > "$tmp/x052.state.out" 2>&1; then
  fail "x052 state tuning was accepted"
fi
grep -q "RWKV-5" "$tmp/x052.state.out" || { cat "$tmp/x052.state.out"; fail "x052 state refusal message"; }
echo "cli: all checks passed"
