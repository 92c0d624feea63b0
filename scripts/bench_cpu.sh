#!/usr/bin/env bash
# The README's CPU side-by-side (issue 18 item 4): ours beside Hugging Face (generate, an SFT
# train step) and TRL's GRPOTrainer (one RL iteration, ours with --algorithm=grpo), at the gpt2
# shape, in float32 and in bfloat16, in one run; then the table. Needs torch (CPU build),
# transformers, trl, accelerate and datasets. Usage: scripts/bench_cpu.sh [OUT.jsonl]
set -euo pipefail
out=${1:-runs/bench_cpu.jsonl}
mkdir -p "$(dirname "$out")"
for dt in float32 bfloat16; do
  python -m rlhf_jax.bench generate --shape=gpt2 --batch=8 --prompt=64 --new=32 --peer \
    --dtype=$dt --out="$out"
  python -m rlhf_jax.bench train --shape=gpt2 --loss=sft --batch=4 --seq=256 --peer \
    --dtype=$dt --out="$out"
  python -m rlhf_jax.bench rl --algorithm=grpo --shape=gpt2 --batch=16 --prompt=32 --new=32 \
    --generations=4 --minibatches=1 --remat=none --repeats=2 --peer --dtype=$dt --out="$out"
done
python -m rlhf_jax.bench report "$out"
