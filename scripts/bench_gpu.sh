#!/usr/bin/env bash
# Issue 5's measurements on one GPU, side by side with the PyTorch peers, in one call:
#
#   bash scripts/bench_gpu.sh      # on the device machine, carry [".whl"]; OUT=/path for logs
#
# Installs the carried wheels that the GPU image lacks (ml_collections, datasets, trl,
# accelerate, ...), then runs, each with --peer and appending to $OUT/bench.jsonl:
#   hardware (bf16 matmul peak, copy bandwidth); generate at qwen05b, batch 64 and 256, prompt
#   128 + 128 new; train at llama1b, SFT and RM losses, 8 x 2048; one RL iteration at qwen05b,
#   64 x (128 + 128), against TRL's GRPOTrainer with the same sampled tokens; and (issue 7) one
#   PPO iteration at llama1b, 16 x (128 + 128), full fine-tuning and LoRA rank 16, for peak memory.
# Prints the comparison table last; every log goes to $OUT. A CPU smoke test of the script:
#   SKIP_WHEELS=1 GEN_SHAPE=tiny TRAIN_SHAPE=tiny GEN_BATCH=8 TRAIN_BATCH=8 SEQ=64 PROMPT=16 \
#     NEW=8 RL_BATCH=16 LORA_SHAPE=tiny LORA_BATCH=8 bash scripts/bench_gpu.sh
#   (the TRL peer needs trl and accelerate)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bench_out}
PY=${PY:-python3}
mkdir -p "$OUT"
if [[ "${SKIP_WHEELS:-0}" != 1 ]]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
J="$OUT/bench.jsonl"
run() {  # name, then the bench arguments; a failure is logged and the next one still runs
  local name=$1; shift
  echo "== $name: python -m rlhf_jax.bench $*"
  timeout "${STEP_TIMEOUT:-240}" "$PY" -m rlhf_jax.bench "$@" --out="$J" > "$OUT/$name.log" 2>&1 \
    || echo "!! $name exited with $? (see $OUT/$name.log)"
  grep -v '^{' "$OUT/$name.log" | tail -n 6
}
run hardware hardware
# Measured once: the later runs take the peak and the bandwidth from here.
read -r PEAK GBS < <("$PY" - "$J" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()] if len(sys.argv) > 1 else []
fig = {r["what"]: r["figures"] for r in recs}
print(fig.get("matmul_peak", {}).get("tflops", 0), fig.get("copy_bandwidth", {}).get("gb_per_s", 0))
PYEOF
)
LIMITS=(--peak_tflops="${PEAK:-0}" --gb_per_s="${GBS:-0}")
GEN_SHAPE=${GEN_SHAPE:-qwen05b} TRAIN_SHAPE=${TRAIN_SHAPE:-llama1b}
PROMPT=${PROMPT:-128} NEW=${NEW:-128}
run generate generate --shape="$GEN_SHAPE" --batch="${GEN_BATCH:-64,256}" --prompt="$PROMPT" \
  --new="$NEW" --peer "${LIMITS[@]}"
run train train --shape="$TRAIN_SHAPE" --loss=sft,rm --batch="${TRAIN_BATCH:-8}" \
  --seq="${SEQ:-2048}" --peer "${LIMITS[@]}"
run rl rl --shape="$GEN_SHAPE" --batch="${RL_BATCH:-64}" --prompt="$PROMPT" --new="$NEW" --peer
# Issue 7: peak memory of one PPO iteration at the LoRA shape, full fine-tuning against LoRA.
LORA_SHAPE=${LORA_SHAPE:-llama1b} LORA_BATCH=${LORA_BATCH:-16}
run rl_full rl --shape="$LORA_SHAPE" --batch="$LORA_BATCH" --prompt="$PROMPT" --new="$NEW" \
  --repeats=1
run rl_lora rl --shape="$LORA_SHAPE" --batch="$LORA_BATCH" --prompt="$PROMPT" --new="$NEW" \
  --repeats=1 --lora_rank="${LORA_RANK:-16}"
echo "================ table ================"
"$PY" -m rlhf_jax.bench report "$J" | tee "$OUT/table.txt"
