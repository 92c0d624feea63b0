"""The length baselines of hh-rlhf held-out splits without any reward model: longer wins and
shorter wins counted in words and in characters of the full responses, beside the same rules on
the token rows the reward model reads (cut to max_len), and how many comparisons were cut.

  python scripts/hh_length_baselines.py --source ../shared/data/hh-rlhf --tokenizer=TOK_DIR

The split and rendering are configs/reward.py:hh_scratch's (20% held out by a hash of the first
human turn, max_len 192, prompt truncated from the left). It shows how far a token-count
baseline on truncated rows can be from the real one (the reward-model report before issue 16
used token counts).
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))

# pylint: disable=wrong-import-position
from rlhf_jax.data import comparisons as cmp  # noqa: E402
from rlhf_jax.data.tokenizer import load_tokenizer  # noqa: E402
from rlhf_jax.reward.evaluate import ordered_pairs  # noqa: E402


def rates(comps, unit):
  lens = cmp.response_lengths(comps, 2, unit)
  n, i, j = ordered_pairs(cmp.rank_matrix(comps, 2))
  a, b = lens[n, i], lens[n, j]
  return float(np.mean((a > b) + 0.5 * (a == b))), float(np.mean((a < b) + 0.5 * (a == b)))


def main():
  import reward  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--source", required=True, help="an hh-rlhf folder of subset folders")
  p.add_argument("--tokenizer", required=True)
  args = p.parse_args()
  d = reward.get_config("hh_scratch").data
  tok = load_tokenizer(args.tokenizer)
  for name in sorted(os.listdir(args.source)):
    if not os.path.isdir(os.path.join(args.source, name)):
      continue
    cfg = cmp.ComparisonConfig(source=os.path.join(args.source, name), format="hh",
                               max_len=d.max_len, truncation=d.truncation,
                               eval_fraction=d.eval_fraction)
    comps, _ = cmp.load_comparisons(cfg, tok, "eval")
    w, c, t = rates(comps, "words"), rates(comps, "chars"), rates(comps, "tokens")
    print(f"{name:<27} {len(comps):4d} pairs  words: longer {w[0]:.3f} shorter {w[1]:.3f}  "
          f"chars: longer {c[0]:.3f} shorter {c[1]:.3f}  tokens as cut: longer {t[0]:.3f} "
          f"shorter {t[1]:.3f}  cut {100 * cmp.truncated_fraction(comps):.1f}%")


if __name__ == "__main__":
  main()
