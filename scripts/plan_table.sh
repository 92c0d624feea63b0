#!/usr/bin/env bash
# The planner's README table: one PPO iteration (rollout 64 x (256 prompt + 256 new tokens), 4
# minibatches, separate critic, frozen reference and reward model of the policy's shape) at
# qwen05b, llama1b and llama8b, on one H100 and on a TPU v5e-16 slice (fsdp=16), computed on
# this machine's CPU with fake devices; each also with model.logits_chunk=128, and with that
# and model.remat=full.
# Usage: scripts/plan_table.sh [OUTDIR]
set -euo pipefail
out=${1:-runs/plan_table}
mkdir -p "$out"
common=(--config=configs/ppo.py --config.init.from_workdir= --config.data.max_prompt_len=256
        --config.rl.max_new_tokens=256 --config.rl.rollout_batch=64 --config.rl.minibatches=4)
for shape in qwen05b llama1b llama8b; do
  python -m rlhf_jax.plan "${common[@]}" --config.model.preset="$shape" --devices=1 \
    --device=h100 > "$out/${shape}_h100.txt" 2>&1
  python -m rlhf_jax.plan "${common[@]}" --config.model.preset="$shape" --devices=16 \
    --config.mesh.data=1 --config.mesh.fsdp=16 --device=v5e > "$out/${shape}_v5e16.txt" 2>&1
  for dev in h100 v5e16; do  # the LM head 128 positions at a time; then also full remat
    mesh=(--devices=1 --device=h100)
    [ "$dev" = v5e16 ] && mesh=(--devices=16 --config.mesh.data=1 --config.mesh.fsdp=16 --device=v5e)
    python -m rlhf_jax.plan "${common[@]}" --config.model.preset="$shape" "${mesh[@]}" \
      --config.model.logits_chunk=128 > "$out/${shape}_${dev}_chunk128.txt" 2>&1
    python -m rlhf_jax.plan "${common[@]}" --config.model.preset="$shape" "${mesh[@]}" \
      --config.model.logits_chunk=128 --config.model.remat=full \
      > "$out/${shape}_${dev}_chunk128_remat.txt" 2>&1
  done
done
tail -n +1 "$out"/*.txt
