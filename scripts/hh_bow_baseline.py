"""A non-neural reference for the hh-rlhf reward models: logistic regression on the difference of
two responses' hashed word and bigram indicators plus log word-count, on the repo's own split.

  python scripts/hh_bow_baseline.py --source ../shared/data/hh-rlhf/helpful-base

It answers "is there signal beyond length in this little data?" for the small from-scratch RMs
(README, "The reward model"); it is not a reward model. The split is `configs/reward.py`'s:
20% held out by a hash of the first human turn, 10% of the rest for validation. Prints held-out
accuracy per file for a length-only model and four L2 strengths, with validation accuracy
beside each (choose on validation), and the longer-wins baseline in words.
"""

import argparse
import re
import zlib

import numpy as np
import scipy.sparse as sp

from rlhf_jax.data.comparisons import ComparisonConfig, group_of, split_hh_pair, split_records

DIM = 1 << 18


def features(text):
  words = re.findall(r"[a-z']+|[0-9]+|[^\sa-z0-9]", text.lower())
  grams = words + [a + " " + b for a, b in zip(words, words[1:])]
  return {zlib.crc32(g.encode()) % DIM for g in grams}, len(words)


def load(cfg, split):
  pairs, lengths, groups = [], [], []
  for origin, _, rec in split_records(cfg, split):
    s = split_hh_pair(rec["chosen"], rec["rejected"])
    if s is None or not s[1].strip() or not s[2].strip() or s[1].strip() == s[2].strip():
      continue
    (fc, lc), (fr, lr) = features(s[1]), features(s[2])
    pairs.append((fc, fr))
    lengths.append((lc, lr))
    groups.append(group_of(origin))
  return pairs, np.array(lengths), np.array(groups)


def design(data, flip):
  """(sparse [N, DIM] indicator differences, [N] log-length difference), signs flipped where
  `flip` (so both labels occur)."""
  pairs, lengths, _ = data
  rows, cols, vals = [], [], []
  for n, (fc, fr) in enumerate(pairs):
    s = -1.0 if flip[n] else 1.0
    for j in fc - fr:
      rows.append(n), cols.append(j), vals.append(s)
    for j in fr - fc:
      rows.append(n), cols.append(j), vals.append(-s)
  m = sp.csr_matrix((vals, (rows, cols)), shape=(len(pairs), DIM))
  ld = (np.log1p(lengths[:, 0]) - np.log1p(lengths[:, 1])) * np.where(flip, -1, 1)
  return m, ld


def fit(m, ld, y, l2, use_words, steps=600, lr=0.5):
  w, a = np.zeros(DIM), 0.0
  for _ in range(steps):
    z = (m @ w if use_words else 0) + a * ld
    g = 1 / (1 + np.exp(-z)) - y
    if use_words:
      w -= lr * (m.T @ g / len(y) + l2 * w)
    a -= lr * 4 * np.mean(g * ld)
  return w, a


def accuracy(w, a, data, use_words):
  m, ld = design(data, np.zeros(len(data[0]), bool))
  right = ((m @ w if use_words else 0) + a * ld) > 0
  return {g: float(right[data[2] == g].mean()) for g in sorted(set(data[2]))}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--source", required=True, help="an hh-rlhf file or folder of files")
  args = p.parse_args()
  cfg = ComparisonConfig(source=args.source, eval_fraction=0.2, valid_fraction=0.1)
  train, valid, held = load(cfg, "train"), load(cfg, "valid"), load(cfg, "eval")
  print(f"pairs: train {len(train[0])}, valid {len(valid[0])}, held out {len(held[0])}")
  flip = np.random.default_rng(0).random(len(train[0])) < 0.5
  m, ld = design(train, flip)
  y = (~flip).astype(float)
  for use_words, l2 in ((False, 0.0), (True, 1e-2), (True, 3e-3), (True, 1e-3), (True, 3e-4)):
    w, a = fit(m, ld, y, l2, use_words)
    va, ev = accuracy(w, a, valid, use_words), accuracy(w, a, held, use_words)
    name = f"words+bigrams+length, L2 {l2:g}" if use_words else "log length only"
    print(f"{name:<34} valid {np.mean(list(va.values())):.4f}  held out " +
          "  ".join(f"{g} {v:.4f}" for g, v in ev.items()))
  lw = {g: float(np.mean(held[1][held[2] == g, 0] > held[1][held[2] == g, 1]))
        for g in sorted(set(held[2]))}
  print("longer wins (words), held out: " + "  ".join(f"{g} {v:.4f}" for g, v in lw.items()))


if __name__ == "__main__":
  main()
