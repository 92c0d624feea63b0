"""In-domain pretraining text for scripts/hh_reward_gpu.sh: the hh-rlhf dialogues of the reward
model's TRAINING split only (both the `chosen` and the `rejected` full text of each record).

  python3 scripts/build_hh_pretrain_text.py [--source gpu_data/hh-rlhf] \
      [--out gpu_data/hh_train_text.jsonl.gz]

The split is the repo's own (rlhf_jax.data.comparisons.split_records) with the settings the RM
run uses: configs/reward.py:hh_scratch's eval_fraction (0.2), valid_fraction 0.1 (the script's
--config.data.valid_fraction), key = the first human turn. As a check, the first human turns of
the held-out (eval) and validation records are collected and no written text may have its first
human turn in either set; the three splits must also partition the records.
"""

import argparse
import gzip
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from rlhf_jax.data import comparisons  # pylint: disable=wrong-import-position


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--source", default="gpu_data/hh-rlhf")
  ap.add_argument("--out", default="gpu_data/hh_train_text.jsonl.gz")
  ap.add_argument("--valid_fraction", type=float, default=0.1)
  args = ap.parse_args()

  eval_fraction = 0.2
  try:  # the preset's own value, when ml_collections is importable
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))
    import reward as reward_config  # pylint: disable=g-import-not-at-top
    eval_fraction = float(reward_config.get_config("hh_scratch").data.eval_fraction)
  except ImportError as e:
    print(f"  (configs/reward.py not importable: {e!r}; using eval_fraction {eval_fraction})")
  assert eval_fraction == 0.2, eval_fraction

  cfg = comparisons.ComparisonConfig(source=args.source, format="hh",
                                     eval_fraction=eval_fraction,
                                     valid_fraction=args.valid_fraction)
  recs = {s: list(comparisons.split_records(cfg, s)) for s in ("train", "valid", "eval")}
  origins = {s: {(o, i) for o, i, _ in r} for s, r in recs.items()}
  total = len({(o, i) for o, i, _ in comparisons.split_records(cfg, "train")} |
              origins["valid"] | origins["eval"])
  assert not origins["train"] & origins["valid"], "train/valid overlap"
  assert not origins["train"] & origins["eval"], "train/eval overlap"
  assert not origins["valid"] & origins["eval"], "valid/eval overlap"
  assert sum(len(v) for v in origins.values()) == total, "the splits do not partition the files"

  key = lambda rec: comparisons.first_human_turn(str(rec["chosen"]))  # noqa: E731
  held = {key(r) for _, _, r in recs["eval"]} | {key(r) for _, _, r in recs["valid"]}

  texts = []
  for _, _, rec in recs["train"]:
    for field in ("chosen", "rejected"):
      t = str(rec[field])
      if t.strip():
        texts.append(t)
  bad = [t for t in texts if comparisons.first_human_turn(t) in held]
  assert not bad, f"{len(bad)} texts have a held-out/valid first human turn: {bad[0][:200]!r}"

  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with gzip.open(args.out, "wt", encoding="utf-8") as f:
    for t in texts:
      f.write(json.dumps({"text": t}) + "\n")
  n_chars = sum(len(t) for t in texts)
  print(f"  hh split (eval_fraction {eval_fraction}, valid_fraction {args.valid_fraction}, key = "
        f"first human turn): {len(recs['train'])} train / {len(recs['valid'])} valid / "
        f"{len(recs['eval'])} eval records of {total}")
  print(f"  checked: none of the {len(texts)} texts has its first human turn among the "
        f"{len(held)} eval+valid first human turns")
  print(f"  wrote {args.out}: {len(texts)} texts, {n_chars / 1e6:.1f}M chars, "
        f"{os.path.getsize(args.out) / 1e6:.1f} MB")


if __name__ == "__main__":
  main()
