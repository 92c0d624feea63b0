#!/usr/bin/env bash
# A from-scratch reward model on the Anthropic hh-rlhf test files, on one GPU, in about 5 minutes.
#
#   bash scripts/hh_reward_gpu.sh            # on the device machine, carry [".whl", "gpu_data"]
#   SKIP_WHEELS=1 PT_STEPS=20 RM_STEPS=20 PT_HIDDEN=64 PT_LAYERS=2 PT_HEADS=4 PT_MLP=128 \
#     OUT=/tmp/hhout bash scripts/hh_reward_gpu.sh   # CPU smoke test
#
# Stages:
#  1. (unless SKIP_WHEELS=1) install the carried wheels (.whl/: ml_collections, datasets, ...).
#  2. pretrain a decoder trunk (LM loss) on gpu_data/pretrain_text.jsonl.gz: AlpacaEval system
#     outputs (minus its helpful_base subset, whose instructions are hh-rlhf test prompts), GSM8K
#     and the Alpaca seed tasks; PLUS (PT_HH_REPEAT copies, default 2) the hh-rlhf dialogues of the
#     RM's TRAINING split only, chosen and rejected full texts: gpu_data/hh_train_text.jsonl.gz,
#     built by scripts/build_hh_pretrain_text.py with the repo's own split (eval 0.2, valid 0.1,
#     key = first human turn), which checks that no text's first human turn is in the eval or
#     valid split. (Without it, the first H100 run's trunk plateaued at eval loss 2.48 by step 1500
#     and the RM fell short of longer-wins on helpful-base: 0.563 vs 0.601.) PT_HH_REPEAT=0 drops
#     it. Tokenizer: gpu_data/tokenizer, the BPE trained on the hh training split only.
#  3. two reward-model runs (configs/reward.py:hh_scratch from the pretrained trunk) that differ
#     only in learning rate, side by side on the one GPU. The hh files are split 80/20 by a hash of
#     the first human turn; 10% of the 80% is a validation slice. The run with the higher FINAL
#     validation accuracy is chosen; only its held-out figures count.
#  4. a per-file table: held-out accuracy beside the better of longer-wins / shorter-wins.
# Files in $OUT: hh_log.txt, summary.json, pt_metrics.jsonl, rm_{a,b}_metrics.jsonl,
# rm_{a,b}_eval_report.json.
set -euo pipefail
export PYTHONUNBUFFERED=1

# ---- knobs (each overridable from the environment) ---------------------------------------------
TOTAL_BUDGET=${TOTAL_BUDGET:-330}   # seconds for the whole script; stages are cut to fit
RM_RESERVE=${RM_RESERVE:-105}       # seconds kept back for the RM stage + report when pretraining
                                    # (the first H100 run's RM stage took 60s)
PY=${PY:-python3}
DATA=${DATA:-gpu_data}
WORK=${WORK:-/tmp/hh_work}          # pretrain and RM workdirs (wiped at start)
# Pretraining: a 21.4M-parameter Llama-style trunk (hidden 512, 6 layers, tied embeddings), 192-
# token rows; 3000 steps x 128 rows = 74M tokens: ~6 epochs of the ~12M-token base corpus alone,
# ~4 with 2 copies of the hh training text added.
PT_STEPS=${PT_STEPS:-3000}
PT_BATCH=${PT_BATCH:-128}
PT_LR=${PT_LR:-1e-3}
PT_WARMUP=${PT_WARMUP:-200}
PT_HIDDEN=${PT_HIDDEN:-512}
PT_LAYERS=${PT_LAYERS:-6}
PT_HEADS=${PT_HEADS:-8}
PT_MLP=${PT_MLP:-1408}
PT_MAX_RECORDS=${PT_MAX_RECORDS:-0}  # 0 = all pretraining documents
PT_HH_REPEAT=${PT_HH_REPEAT:-2}     # copies of the hh TRAINING-split dialogues in the corpus
PT_CKPT_EVERY=${PT_CKPT_EVERY:-500}  # a fallback point if the time guard stops pretraining
# Reward model: two runs, A and B, differing in learning rate only.
RM_STEPS=${RM_STEPS:-400}           # ~2 epochs of the ~6.1k training comparisons at batch 32
RM_BATCH=${RM_BATCH:-32}
RM_LR_A=${RM_LR_A:-1e-4}
RM_LR_B=${RM_LR_B:-3e-4}
RM_WARMUP=${RM_WARMUP:-40}
RM_EVAL_EVERY=${RM_EVAL_EVERY:-100}
RM_VALID=${RM_VALID:-0.1}
RM_MEM_FRACTION=${RM_MEM_FRACTION:-0.4}  # GPU memory per RM process (two share the GPU)
OUT=${OUT:-/tmp/hhout}

mkdir -p "$OUT"
T0=$SECONDS

main() {
  echo "== hh reward model, $(date -u +%FT%TZ), budget ${TOTAL_BUDGET}s"
  # ---- 1. wheels --------------------------------------------------------------------------------
  if [[ "${SKIP_WHEELS:-0}" != 1 ]]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
  "$PY" - <<'EOF'
import importlib, sys
for m in ("jax", "flax", "optax", "orbax.checkpoint", "ml_collections", "datasets", "fsspec",
          "huggingface_hub", "pyarrow", "transformers", "tokenizers"):
  try:
    mod = importlib.import_module(m)
    print(f"  {m} {getattr(mod, '__version__', '?')}")
  except Exception as e:  # reported, the smoke test below decides
    print(f"  {m}: IMPORT FAILED {e!r}")
import jax
print("  python", sys.version.split()[0], "devices", jax.devices())
EOF
  # The loaders read local files through `datasets`; if it cannot (a version clash on the image),
  # a minimal stand-in with the same two calls takes over (local json/jsonl/parquet only).
  if ! "$PY" - "$DATA/hh-rlhf/helpful-online/test.jsonl.gz" <<'EOF'
import sys, datasets
datasets.disable_progress_bars()
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train")
assert len(ds) > 100 and "chosen" in ds[0], ds
print(f"  datasets reads the hh files: {len(ds)} records")
EOF
  then
    echo "  datasets failed: using the local-file stand-in"
    mkdir -p /tmp/dshim/datasets
    cat > /tmp/dshim/datasets/__init__.py <<'EOF'
"""Stand-in for `datasets`: load_dataset(builder, data_files=FILE, split="train") on local files."""
import gzip, json
__version__ = "shim"
def disable_progress_bars():
  pass
def load_dataset(builder, data_files=None, split="train", **kw):
  if not isinstance(data_files, str):
    raise ValueError(f"datasets stand-in: local files only, got {builder!r} {data_files!r}")
  if builder == "parquet":
    import pyarrow.parquet as pq
    return pq.read_table(data_files).to_pylist()
  op = gzip.open if data_files.endswith(".gz") else open
  with op(data_files, "rt", encoding="utf-8") as f:
    text = f.read()
  s = text.lstrip()
  if s.startswith("["):
    return json.loads(s)
  return [json.loads(line) for line in text.splitlines() if line.strip()]
EOF
    export PYTHONPATH=/tmp/dshim:${PYTHONPATH:-}
  fi
  local t_setup=$((SECONDS - T0))

  # ---- 2. pretrain the trunk --------------------------------------------------------------------
  rm -rf "$WORK" && mkdir -p "$WORK"
  # The corpus: a folder of links (the loader reads every json file under a folder, in name order;
  # rows are shuffled after packing), the base file once and the hh training text PT_HH_REPEAT x.
  local pt_src="$DATA/pretrain_text.jsonl.gz"
  if (( PT_HH_REPEAT > 0 )); then
    if [[ ! -f $DATA/hh_train_text.jsonl.gz ]]; then
      "$PY" scripts/build_hh_pretrain_text.py --source "$DATA/hh-rlhf" \
        --out "$DATA/hh_train_text.jsonl.gz" --valid_fraction "$RM_VALID"
    fi
    pt_src="$WORK/pt_corpus"
    mkdir -p "$pt_src"
    ln -s "$(realpath "$DATA/pretrain_text.jsonl.gz")" "$pt_src/base.jsonl.gz"
    for i in $(seq 1 "$PT_HH_REPEAT"); do
      ln -s "$(realpath "$DATA/hh_train_text.jsonl.gz")" "$pt_src/hh_train_$i.jsonl.gz"
    done
    echo "== pretraining corpus: base + ${PT_HH_REPEAT} x hh training-split dialogues" \
         "($(zcat "$DATA/hh_train_text.jsonl.gz" | wc -l) texts per copy)"
  fi
  local pt_limit=$((TOTAL_BUDGET - RM_RESERVE - (SECONDS - T0)))
  echo "== pretrain: ${PT_STEPS} steps x ${PT_BATCH} rows x 192 tokens; time guard ${pt_limit}s"
  local t=$SECONDS rc=0
  HF_DATASETS_CACHE=/tmp/hfds_pt timeout -s TERM -k 10 "$pt_limit" \
  "$PY" -m rlhf_jax.main --config=configs/pretrain.py:text --workdir="$WORK/pt" \
    --config.data.source="$pt_src" \
    --config.data.tokenizer="$DATA/tokenizer" \
    --config.data.max_len=192 \
    --config.data.max_records="$PT_MAX_RECORDS" \
    --config.model.preset=small --config.model.vocab_size=4096 --config.model.max_seq_len=192 \
    --config.model.hidden="$PT_HIDDEN" --config.model.num_layers="$PT_LAYERS" \
    --config.model.num_heads="$PT_HEADS" --config.model.num_kv_heads="$PT_HEADS" \
    --config.model.mlp_dim="$PT_MLP" --config.model.dtype=bfloat16 \
    --config.train.steps="$PT_STEPS" --config.train.batch_size="$PT_BATCH" \
    --config.train.log_every=$(( PT_STEPS >= 2000 ? 250 : (PT_STEPS >= 10 ? PT_STEPS / 5 : 1) )) \
    --config.train.eval_every=$(( PT_STEPS >= 2 ? PT_STEPS / 2 : 1 )) \
    --config.train.eval_batches=8 --config.train.num_samples=0 \
    --config.train.checkpoint_every="$PT_CKPT_EVERY" \
    --config.optim.learning_rate="$PT_LR" --config.optim.warmup_steps="$PT_WARMUP" \
    --config.optim.weight_decay=0.1 || rc=$?
  local t_pt=$((SECONDS - t))
  if [[ $rc != 0 ]]; then
    if ls -d "$WORK"/pt/checkpoints/[0-9]* >/dev/null 2>&1 && [[ -f "$WORK/pt/model.json" ]]; then
      echo "!! pretraining exited with $rc (124 = time guard) after ${t_pt}s; the RM starts from" \
           "its latest checkpoint: $(ls "$WORK/pt/checkpoints" | tr '\n' ' ')"
    else
      echo "!! pretraining failed ($rc) with no checkpoint"; return 1
    fi
  fi

  # ---- 3. two RM runs side by side ----------------------------------------------------------------
  local rm_limit=$((TOTAL_BUDGET - 12 - (SECONDS - T0)))
  echo "== reward models A (lr ${RM_LR_A}) and B (lr ${RM_LR_B}): ${RM_STEPS} steps x ${RM_BATCH}" \
       "comparisons each, in parallel; time guard ${rm_limit}s"
  t=$SECONDS
  for run in a b; do
    local lr=$RM_LR_A
    if [[ $run == b ]]; then lr=$RM_LR_B; fi
    (
      set +e
      XLA_PYTHON_CLIENT_MEM_FRACTION=$RM_MEM_FRACTION HF_DATASETS_CACHE=/tmp/hfds_rm_$run \
      timeout -s TERM -k 10 "$rm_limit" \
      "$PY" -m rlhf_jax.main --config=configs/reward.py:hh_scratch --workdir="$WORK/rm_$run" \
        --config.data.source="$DATA/hh-rlhf" --config.data.tokenizer="$DATA/tokenizer" \
        --config.init.from_workdir="$WORK/pt" \
        --config.data.valid_fraction="$RM_VALID" \
        --config.model.dtype=bfloat16 \
        --config.train.steps="$RM_STEPS" --config.train.batch_size="$RM_BATCH" \
        --config.train.eval_every="$RM_EVAL_EVERY" --config.train.checkpoint_every="$RM_STEPS" \
        --config.train.log_every=$(( RM_STEPS >= 500 ? 100 : (RM_STEPS >= 10 ? RM_STEPS / 5 : 1) )) \
        --config.optim.learning_rate="$lr" --config.optim.warmup_steps="$RM_WARMUP" \
        2>&1 | sed -u "s/^/[rm_$run] /"
      echo "${PIPESTATUS[0]}" > "$WORK/rm_$run.rc"
    ) &
  done
  wait
  local t_rm=$((SECONDS - t))
  echo "== RM exit codes: A $(cat "$WORK/rm_a.rc"), B $(cat "$WORK/rm_b.rc")"

  # ---- 4. selection and report --------------------------------------------------------------------
  if [[ -f $WORK/pt/metrics.jsonl ]]; then cp "$WORK/pt/metrics.jsonl" "$OUT/pt_metrics.jsonl"; fi
  for run in a b; do
    if [[ -f $WORK/rm_$run/metrics.jsonl ]]; then
      cp "$WORK/rm_$run/metrics.jsonl" "$OUT/rm_${run}_metrics.jsonl"
    fi
    if [[ -f $WORK/rm_$run/eval_report.json ]]; then
      cp "$WORK/rm_$run/eval_report.json" "$OUT/rm_${run}_eval_report.json"
    fi
  done
  T_SETUP=$t_setup T_PT=$t_pt T_RM=$t_rm T_TOTAL=$((SECONDS - T0)) WORK=$WORK OUT=$OUT \
  RM_LR_A=$RM_LR_A RM_LR_B=$RM_LR_B RM_STEPS=$RM_STEPS RM_BATCH=$RM_BATCH PT_STEPS=$PT_STEPS \
  PT_BATCH=$PT_BATCH PT_HH_REPEAT=$PT_HH_REPEAT "$PY" - <<'EOF'
import json, os
E = os.environ
work = E["WORK"]

def jsonl(path):
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(l) for l in f if l.strip()]

# Pretraining: shape, steps reached, last losses.
pt = jsonl(f"{work}/pt/metrics.jsonl")
with open(f"{work}/pt/model.json") as f:
  mcfg = json.load(f)["model"]
from rlhf_jax.models.config import ModelConfig
mcfg["rope_llama3_scaling"] = None
params = ModelConfig(**mcfg).num_params()
pt_step = max((r["step"] for r in pt), default=0)
pt_train = [r for r in pt if "loss" in r]
pt_eval = [r for r in pt if "eval_loss" in r]
pt_tps = [r["tokens_per_s"] for r in pt_train if "tokens_per_s" in r]
ckpts = sorted(int(d) for d in os.listdir(f"{work}/pt/checkpoints") if d.isdigit())

runs = {}
for run, lr in (("a", E["RM_LR_A"]), ("b", E["RM_LR_B"])):
  m = jsonl(f"{work}/rm_{run}/metrics.jsonl")
  valid = [r for r in m if "valid_accuracy" in r]
  rep_path = f"{work}/rm_{run}/eval_report.json"
  rep = json.load(open(rep_path)) if os.path.exists(rep_path) else None
  runs[run] = {"lr": lr, "valid": valid[-1] if valid else None, "report": rep,
               "steps": max((r["step"] for r in m), default=0),
               "valid_curve": [(r["step"], round(r["valid_accuracy"], 4)) for r in valid]}

print("\n================ summary ================")
print(f"trunk: {params / 1e6:.2f}M params ({mcfg['num_layers']} layers, hidden {mcfg['hidden']}, "
      f"vocab {mcfg['vocab_size']}, {mcfg['dtype']}); pretraining reached step {pt_step} of "
      f"{E['PT_STEPS']} (x {E['PT_BATCH']} rows x 192 tokens); the RMs start from its checkpoint "
      f"at step {max(ckpts) if ckpts else None}; corpus = base + {E['PT_HH_REPEAT']} x the hh "
      "training-split dialogues (chosen and rejected)")
if pt_eval:
  print(f"  pretrain eval loss: " + ", ".join(f"step {r['step']}: {r['eval_loss']:.3f}" for r in pt_eval))
if pt_tps:
  print(f"  pretrain throughput: {pt_tps[-1]:,.0f} tokens/s at the last log "
        f"({pt_tps[-1] / (int(E['PT_BATCH']) * 192):.1f} steps/s)")
print(f"reward models: {E['RM_STEPS']} steps x {E['RM_BATCH']} comparisons, from the trunk")
print("selection rule: the run with the higher FINAL validation accuracy (valid slice = 10% of "
      "the training 80%, by hash) is chosen; the held-out 20% is not looked at to choose.")
for run, r in runs.items():
  v = r["valid"]
  print(f"  run {run.upper()} (lr {r['lr']}): final valid accuracy "
        f"{v['valid_accuracy']:.4f} at step {v['step']} over {int(v['valid_pairs'])} pairs; curve {r['valid_curve']}"
        if v else f"  run {run.upper()} (lr {r['lr']}): NO validation figures (failed?)")
ok = {k: r for k, r in runs.items() if r["valid"] and r["report"] and r["valid"]["step"] == r["steps"]}
chosen = max(ok, key=lambda k: (ok[k]["valid"]["valid_accuracy"], k == "a")) if ok else None
summary = {"params": params, "pt_hh_repeat": int(E["PT_HH_REPEAT"]),
           "pretrain_eval_loss": [[r["step"], r["eval_loss"]] for r in pt_eval],
           "pretrain_steps": max(ckpts) if ckpts else 0, "wall_s": {
    "setup": int(E["T_SETUP"]), "pretrain": int(E["T_PT"]), "reward_models": int(E["T_RM"]),
    "total_before_report": int(E["T_TOTAL"])}, "chosen": chosen,
    "runs": {k: {"lr": r["lr"], "final_valid_accuracy": r["valid"] and r["valid"]["valid_accuracy"],
                 "held_out": r["report"] and r["report"].get("by_group")} for k, r in runs.items()}}

def table(rep, label):
  print(f"\n{label}")
  print(f"  {'file':<27} {'pairs':>5} {'accuracy':>8} {'longer':>7} {'shorter':>7} "
        f"{'better baseline':>15} {'margin':>7}")
  rows = sorted(rep.get("by_group", {}).items()) + [("ALL", rep)]
  for g, e in rows:
    base = max(e["longer_wins"], e["shorter_wins"])
    which = "longer" if e["longer_wins"] >= e["shorter_wins"] else "shorter"
    print(f"  {g:<27} {int(e['pairs']):>5} {e['accuracy']:>8.4f} {e['longer_wins']:>7.4f} "
          f"{e['shorter_wins']:>7.4f} {base:>8.4f} ({which[0]}) {e['accuracy'] - base:>+7.4f}")

if chosen:
  r = runs[chosen]
  table(r["report"], f"HELD-OUT (20% split), SELECTED run {chosen.upper()} (lr {r['lr']}) -- these "
        "are the figures that count:")
  hb = r["report"].get("by_group", {}).get("helpful-base")
  if hb:
    base = max(hb["longer_wins"], hb["shorter_wins"])
    verdict = "BEATS" if hb["accuracy"] > base else "does NOT beat"
    print(f"  helpful-base: {hb['accuracy']:.4f} {verdict} the better length baseline {base:.4f} "
          f"({hb['accuracy'] - base:+.4f} on {int(hb['pairs'])} pairs)")
    summary["helpful_base"] = {"accuracy": hb["accuracy"], "baseline": base,
                               "beats": hb["accuracy"] > base}
  for k, o in runs.items():
    if k != chosen and o["report"]:
      table(o["report"], f"held-out, run {k.upper()} (lr {o['lr']}) -- NOT SELECTED, for reference only:")
else:
  print("\nno run finished with a validation figure and a held-out report: nothing to select")
w = summary["wall_s"]
print(f"\nwall times: setup {w['setup']}s, pretrain {w['pretrain']}s, reward models (2 in parallel) "
      f"{w['reward_models']}s, total {w['total_before_report']}s")
with open(os.path.join(E["OUT"], "summary.json"), "w") as f:
  json.dump(summary, f, indent=1)
EOF
}

main 2>&1 | tee "$OUT/hh_log.txt"
