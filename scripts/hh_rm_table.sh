#!/usr/bin/env bash
# The README's hh-rlhf reward-model table, end to end (docs/reward_model.md, "A from-scratch
# reward model on hh-rlhf, on a CPU", steps 1-5), with X = harmless-base:
#   one BPE -> one trunk that never saw a harmless-base dialogue nor any file's held-out or
#   validation dialogues -> a reward model per file -> the helpful-base model scored on all of
#   harmless-base (the cross-file row) -> the model-free length baselines.
# Usage: scripts/hh_rm_table.sh [OUT] (H=path/to/hh-rlhf; a step whose output exists is skipped,
# so a stopped run is resumed by running it again; the trunk and models resume from checkpoints).
set -euo pipefail
H=${H:-../shared/data/hh-rlhf}
X=${X:-harmless-base}
OUT=${1:-runs/hh_table}
mkdir -p "$OUT"
log() { echo "[hh_rm_table $(date +%H:%M:%S)] $*"; }
[ -d "$H/helpful-base" ] || { echo "hh_rm_table: no hh-rlhf data at H=$H" >&2; exit 2; }

if [ ! -d "$OUT/e6/tokenizer" ]; then
  log "1. tokenizer"
  python -m rlhf_jax.main --config=configs/reward.py:hh_scratch --workdir="$OUT/e6" \
    --config.data.source="$H/helpful-base" --config.data.valid_fraction=0.1 \
    --config.train.steps=1 --config.train.eval_every=1000 > "$OUT/e6.log" 2>&1
fi
if [ ! -f "$OUT/text_no_$X.jsonl.gz" ]; then
  log "2. pretraining text without $X"
  python scripts/build_hh_pretrain_text.py --source "$H" --exclude "$X" \
    --out "$OUT/text_no_$X.jsonl.gz" > "$OUT/text.log" 2>&1
fi
if [ ! -f "$OUT/pt_no_$X.done" ]; then
  log "3. trunk"
  python -m rlhf_jax.main --config=configs/pretrain.py:text --workdir="$OUT/pt_no_$X" \
    --config.data.source="$OUT/text_no_$X.jsonl.gz" --config.data.tokenizer="$OUT/e6/tokenizer" \
    --config.data.max_len=192 --config.model.preset=tiny --config.model.vocab_size=4096 \
    --config.model.max_seq_len=192 --config.model.dtype=float32 --config.train.steps=1000 \
    --config.train.batch_size=32 --config.train.eval_every=500 --config.train.eval_batches=8 \
    --config.train.num_samples=0 --config.train.checkpoint_every=250 \
    --config.optim.learning_rate=2e-3 --config.optim.weight_decay=0.1 >> "$OUT/pt.log" 2>&1
  touch "$OUT/pt_no_$X.done"
fi
for F in helpful-base harmless-base helpful-online helpful-rejection-sampled; do
  [ -f "$OUT/rm_$F/eval_report.json" ] && continue
  log "4. reward model on $F"
  python -m rlhf_jax.main --config=configs/reward.py:hh_scratch --workdir="$OUT/rm_$F" \
    --config.data.source="$H/$F" --config.data.tokenizer="$OUT/e6/tokenizer" \
    --config.init.from_workdir="$OUT/pt_no_$X" --config.data.valid_fraction=0.1 \
    --config.model.score_pooling=sum --config.loss.lm_coef=0.0 --config.train.steps=200 \
    --config.train.eval_every=50 --config.optim.learning_rate=1e-4 >> "$OUT/rm_$F.log" 2>&1
done
if [ ! -f "$OUT/cross_$X.json" ]; then
  log "5. cross-file: the helpful-base model on all of $X"
  python -m rlhf_jax.reward.score --workdir="$OUT/rm_helpful-base" --source="$H/$X" \
    --out="$OUT/cross_$X.jsonl" --report="$OUT/cross_$X.json" > "$OUT/cross.log" 2>&1
fi
log "6. length baselines without a model"
python scripts/hh_length_baselines.py --source "$H" --tokenizer="$OUT/e6/tokenizer" \
  > "$OUT/baselines.txt" 2>&1
log "done: $OUT"
