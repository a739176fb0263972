#!/usr/bin/env bash
# End-to-end test of the tools: jsonl -> binidx, training with RWKV-PEFT flags, determinism,
# exact resume from a saved checkpoint, evaluation, generation, and rejected flags.
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

# 3. evaluation and generation with the adapter (no merge)
"$bin/rwkvpeft-train" --help > /dev/null || fail "--help"
"$bin/rwkvpeft-eval" --load_model "$tmp/a/rwkv-init.pth" --adapter "$tmp/a/rwkv-2.pth" --peft lora \
  --lora_config '{"lora_r":4,"lora_alpha":8}' --data_file "$tmp/keeper" --ctx_len 16 --micro_bsz 4 \
  --vocab "$vocab" --prompt "Keeper's note" --max_new_tokens 8 --temperature 0 --backend cpu > "$tmp/eval.out" 2>/dev/null \
  || { cat "$tmp/eval.out"; fail "rwkvpeft-eval"; }
grep -q "perplexity" "$tmp/eval.out" || fail "no perplexity line"
grep -q "^Keeper's note" "$tmp/eval.out" || fail "no generated text"

# 4. flags that are not implemented or unknown are rejected, not ignored
for bad in "--quant nf4" "--train_type infctx" "--peft pissa" "--devices 2" "--no_such_flag 1" "--wandb proj"; do
  # shellcheck disable=SC2086
  if train "$tmp/x" $bad > "$tmp/x.out" 2>&1; then fail "accepted: $bad"; fi
  grep -qE "not implemented|unknown flag|only" "$tmp/x.out" || { cat "$tmp/x.out"; fail "no clear message for $bad"; }
done
if "$bin/rwkvpeft-train" --load_model "$tmp/a/rwkv-init.pth" --n_layer 5 --data_file "$tmp/keeper" --backend cpu \
   --proj_dir "$tmp/y" > "$tmp/y.out" 2>&1; then fail "a disagreeing --n_layer was accepted"; fi
grep -q "disagrees" "$tmp/y.out" || { cat "$tmp/y.out"; fail "no message for --n_layer mismatch"; }
echo "cli: all checks passed"
