#!/usr/bin/env bash
# The demo: builds librwkvpeft, tokenizes the bundled sample text with the RWKV World
# tokenizer, creates a tiny RWKV-6 (2 layers, width 128, World vocabulary) on the fly,
# LoRA-trains it for 300 steps on the CPU, and shows a generated sample before and after.
# Everything lands in demo-out/. Installs missing Debian packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
echo "== building (Release)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target rwkvpeft rwkvpeft-train rwkvpeft-data >/dev/null
vocab=$(scripts/world_vocab.sh)
mkdir -p demo-out
echo "== tokenizing data/sample/keeper_notes.jsonl"
build/rwkvpeft-data jsonl --input data/sample/keeper_notes.jsonl --output-prefix demo-out/keeper --vocab "$vocab"
echo "== training"
build/rwkvpeft-train --backend cpu --random_seed 1 \
  --data_file demo-out/keeper --data_type binidx --dataload get \
  --n_layer 2 --n_embd 128 --vocab_size 65536 --ctx_len 64 --micro_bsz 4 \
  --epoch_steps 100 --epoch_count 3 --epoch_save 1 \
  --lr_init 2e-3 --lr_final 2e-4 --warmup_steps 10 \
  --peft lora --lora_config '{"lora_r":16,"lora_alpha":32,"lora_dropout":0}' \
  --proj_dir demo-out --vocab "$vocab" \
  --sample_prompt "Keeper's note, " --sample_tokens 60 --sample_temperature 0.7 "$@"
echo "== done: adapter demo-out/rwkv-2.pth, log demo-out/train_log.jsonl"
