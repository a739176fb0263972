#!/usr/bin/env bash
# setup_check.sh — a short device call that checks the side-by-side harness end to end on small
# configs (the reference's kernel builds, its LoRA / state / infctx paths and torch.compile'd
# RWKV-7, plus one 1.6B row to compare with shared/notes/reference-h200.md):
#     run(command="bash bench/ref/setup_check.sh", carry=[".ref", ".carry/deps"], timeout_s=300)
export CONFIGS=${CONFIGS:-"tiny-v6-lora tiny-v6-state tiny-v6-infctx-64k v6-lora-1.6B-B8 v7-lora-0.1B-B1"}
export DEADLINE_S=${DEADLINE_S:-230}
exec bash "$(dirname "${BASH_SOURCE[0]}")/../side_by_side.sh"
