"""In-domain pretraining text for scripts/hh_reward_gpu.sh: the hh-rlhf dialogues of the reward
model's TRAINING split only (both the `chosen` and the `rejected` full text of each record).

  python3 scripts/build_hh_pretrain_text.py [--source gpu_data/hh-rlhf] \
      [--out gpu_data/hh_train_text.jsonl.gz] [--exclude harmless-base ...]

The split is the repo's own (rlhf_jax.data.comparisons.split_records) with the settings the RM
run uses: configs/reward.py:hh_scratch's eval_fraction (0.2), valid_fraction 0.1 (the script's
--config.data.valid_fraction), key = the first human turn. As a check, the first human turns of
the held-out (eval) and validation records are collected and no written text may have its first
human turn in either set; the three splits must also partition the records.

`--exclude F` (repeatable) leaves out every record of a file: F is a subset folder name
("harmless-base") or a path to the file or its folder. A trunk built without F has seen none of
F's dialogues, so a reward model from it can be tested on all of F (a cross-file figure). An
exclusion that matches no record stops the script (a misspelt name would otherwise exclude
nothing).
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
  ap.add_argument("--exclude", action="append", default=[],
                  help="a subset folder name or a file/folder path whose records are left out")
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
  left_out = excluded(recs, args.exclude)
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
  for origin, _, rec in recs["train"]:
    if _matches(origin, args.exclude):
      continue
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
  for name, n in left_out.items():
    print(f"  excluded {name}: {n} records (train, valid and eval alike), none written")
  print(f"  checked: none of the {len(texts)} texts has its first human turn among the "
        f"{len(held)} eval+valid first human turns")
  print(f"  wrote {args.out}: {len(texts)} texts, {n_chars / 1e6:.1f}M chars, "
        f"{os.path.getsize(args.out) / 1e6:.1f} MB")


def _matches(origin: str, exclude) -> bool:
  """Whether a record's file is one of `exclude` (subset names or paths)."""
  path = os.path.abspath(origin.rsplit(":", 1)[0])
  group = comparisons.group_of(origin)
  return any(e == group or path == os.path.abspath(e) or
             path.startswith(os.path.abspath(e).rstrip(os.sep) + os.sep) for e in exclude)


def excluded(recs: dict, exclude) -> dict:
  """{exclusion: records it matches over all splits}; SystemExit naming one that matches none."""
  out = {}
  for e in exclude:
    out[e] = sum(_matches(o, [e]) for rs in recs.values() for o, _, _ in rs)
    if not out[e]:
      groups = sorted({comparisons.group_of(o) for rs in recs.values() for o, _, _ in rs})
      raise SystemExit(f"--exclude {e!r} matches no record of the source (its files: {groups})")
  return out


if __name__ == "__main__":
  main()
