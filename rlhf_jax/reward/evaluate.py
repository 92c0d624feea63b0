"""How good is a reward model: held-out metrics computed on the host from its rewards.

Inputs are per-comparison arrays: rewards [N, K], ranks [N, K] (0 = best, -1 = no response),
response lengths [N, K] in words of the full response text (not the possibly truncated token
rows the model read), optionally in characters too, and, on the built-in task, gold scores
[N, K]. Reported:
- pairwise accuracy over every ordered pair (a reward tie counts half);
- the "longer response wins" and "shorter response wins" baselines on the same pairs (words;
  characters beside them when given), and the pairs where only the reward model or only the
  better baseline is right, with the exact McNemar p-value of that split;
- the accuracy on the pairs where the shorter response (in words) won, and on those where the
  longer won: skill beyond length shows on the first, which the longer-wins rule gets all wrong;
- mean and std of the rewards;
- calibration: pairs binned by reward gap |r_i − r_j|, with the accuracy in each bin beside the
  Bradley–Terry prediction σ(gap) — a calibrated model's two columns agree;
- with gold scores: agreement of the RM with the gold preference over every pair of responses
  whose gold scores differ, beside the labels' own agreement with gold on the same pairs.
Not for: the gold ceiling of the simulated labelers (`rlhf_jax.data.labelers`).
"""

from __future__ import annotations

import math

import numpy as np


def ordered_pairs(ranks_NxK: np.ndarray):
  """(n, i, j) index arrays of every pair where response i is ranked above response j."""
  r = np.asarray(ranks_NxK)
  present = r >= 0
  better = (r[:, :, None] < r[:, None, :]) & present[:, :, None] & present[:, None, :]
  return np.nonzero(better)


def unordered_pairs(ranks_NxK: np.ndarray):
  """(n, i, j) of every pair i < j of present responses, labelled or tied."""
  present = np.asarray(ranks_NxK) >= 0
  k = present.shape[1]
  upper = np.triu(np.ones((k, k), bool), 1)
  return np.nonzero(present[:, :, None] & present[:, None, :] & upper)


def _win_rate(a: np.ndarray, b: np.ndarray) -> float:
  """Mean of [a > b] with ties counting half; nan for no pairs."""
  if a.size == 0:
    return float("nan")
  return float(np.mean((a > b) + 0.5 * (a == b)))


def paired_sign_test(model_only: int, baseline_only: int) -> dict:
  """McNemar's exact test on the pairs where exactly one of two judges is right: the two-sided
  binomial p-value of a split at least this uneven if each such pair were a fair coin."""
  m = model_only + baseline_only
  k = min(model_only, baseline_only)
  tail = sum(math.comb(m, x) for x in range(k + 1)) / 2**m if m else 1.0
  return {"model_only": model_only, "baseline_only": baseline_only,
          "p_value": min(1.0, 2 * tail)}


def calibration_table(gaps: np.ndarray, correct: np.ndarray, bins: int = 5) -> list[dict]:
  """Rows {lo, hi, pairs, accuracy, predicted} over quantile bins of the reward gap (>= 0)."""
  if gaps.size == 0:
    return []
  edges = np.unique(np.quantile(gaps, np.linspace(0, 1, bins + 1)))
  if edges.size < 2:
    edges = np.array([gaps.min(), gaps.max() + 1e-9])
  which = np.clip(np.searchsorted(edges, gaps, side="right") - 1, 0, edges.size - 2)
  rows = []
  for b in range(edges.size - 1):
    sel = which == b
    if not sel.any():
      continue
    rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "pairs": int(sel.sum()),
                 "accuracy": float(correct[sel].mean()),
                 "predicted": float(np.mean(1.0 / (1.0 + np.exp(-gaps[sel]))))})
  return rows


def evaluate_rewards(rewards_NxK, ranks_NxK, lengths_NxK, gold_NxK=None, bins: int = 5,
                     chars_NxK=None) -> dict:
  """The metrics of the module doc; keys ending in "_table" hold lists of dicts. `lengths_NxK`
  are the full responses' word counts; `chars_NxK` (optional) their character counts."""
  r = np.asarray(rewards_NxK, np.float64)
  ranks = np.asarray(ranks_NxK)
  lens = np.asarray(lengths_NxK)
  n, i, j = ordered_pairs(ranks)
  ri, rj = r[n, i], r[n, j]
  present = ranks >= 0
  out = {
      "pairs": int(n.size),
      "accuracy": _win_rate(ri, rj),
      "length_unit": "words of the full response text",
      "longer_wins": _win_rate(lens[n, i], lens[n, j]),
      "shorter_wins": _win_rate(lens[n, j], lens[n, i]),
      "reward_mean": float(r[present].mean()) if present.any() else float("nan"),
      "reward_std": float(r[present].std()) if present.any() else float("nan"),
  }
  out["length_baseline"] = max(out["longer_wins"], out["shorter_wins"])
  if chars_NxK is not None:
    c = np.asarray(chars_NxK)
    out["longer_wins_chars"] = _win_rate(c[n, i], c[n, j])
    out["shorter_wins_chars"] = _win_rate(c[n, j], c[n, i])
  shorter_won, longer_won = lens[n, i] < lens[n, j], lens[n, i] > lens[n, j]
  out.update(shorter_won_pairs=int(shorter_won.sum()),
             shorter_won_accuracy=_win_rate(ri[shorter_won], rj[shorter_won]),
             longer_won_pairs=int(longer_won.sum()),
             longer_won_accuracy=_win_rate(ri[longer_won], rj[longer_won]))
  gaps = np.abs(ri - rj)
  correct = (ri > rj) + 0.5 * (ri == rj)
  # The same pairs judged by the better length rule: is the reward model's edge more than luck?
  li, lj = lens[n, i], lens[n, j]
  base = (li > lj) if out["longer_wins"] >= out["shorter_wins"] else (li < lj)
  decided = (ri != rj) & (li != lj)
  test = paired_sign_test(int(np.sum(decided & (ri > rj) & ~base)),
                          int(np.sum(decided & (ri < rj) & base)))
  out.update(model_only_right=test["model_only"], baseline_only_right=test["baseline_only"],
             paired_p_value=test["p_value"])
  out["calibration_table"] = calibration_table(gaps, correct, bins)
  if gold_NxK is not None:
    g = np.asarray(gold_NxK, np.float64)
    un, ui, uj = unordered_pairs(ranks)
    gi, gj = g[un, ui], g[un, uj]
    differ = gi != gj
    rd = r[un, ui] - r[un, uj]
    gd = gi - gj
    agree = (np.sign(rd) == np.sign(gd)) + 0.5 * (rd == 0)
    out["gold_pairs"] = int(differ.sum())
    out["gold_agreement"] = float(agree[differ].mean()) if differ.any() else float("nan")
    # How often the labels themselves side with gold (over the labelled pairs).
    gl = g[n, i] != g[n, j]
    out["label_gold_agreement"] = (float(np.mean(g[n, i][gl] > g[n, j][gl])) if gl.any()
                                   else float("nan"))
  return out


def format_report(ev: dict, title: str = "reward model", what: str = "held-out") -> str:
  lines = [f"[{title}] {what}: {ev['pairs']} pairs, accuracy {ev['accuracy']:.4f}; "
           f"rewards mean {ev['reward_mean']:+.3f} std {ev['reward_std']:.3f}",
           f"[{title}] length baselines on the full texts, in words: longer wins "
           f"{ev['longer_wins']:.4f}, shorter wins {ev['shorter_wins']:.4f}"
           + (f"; in characters: longer wins {ev['longer_wins_chars']:.4f}, shorter wins "
              f"{ev['shorter_wins_chars']:.4f}" if "longer_wins_chars" in ev else "")
           + (f"; {100 * ev['truncated_fraction']:.1f}% of the comparisons had a row cut to "
              "max_len" if "truncated_fraction" in ev else ""),
           f"[{title}] accuracy where the shorter response won (words): "
           f"{ev['shorter_won_accuracy']:.4f} on {ev['shorter_won_pairs']} pairs; where the "
           f"longer won: {ev['longer_won_accuracy']:.4f} on {ev['longer_won_pairs']} pairs"]
  if "paired_p_value" in ev:
    lines.append(f"[{title}] against the better length baseline on the same pairs: the reward "
                 f"model alone right on {ev['model_only_right']}, the baseline alone on "
                 f"{ev['baseline_only_right']} (exact McNemar p = {ev['paired_p_value']:.3g})")
  if "gold_agreement" in ev:
    lines.append(f"[{title}] agreement with the gold preference: {ev['gold_agreement']:.4f} on "
                 f"{ev['gold_pairs']} pairs (labels vs gold: {ev['label_gold_agreement']:.4f}"
                 + (f"; simulated labelers' ceiling {ev['labeler_ceiling']:.4f}"
                    if "labeler_ceiling" in ev else "") + ")")
  if ev.get("calibration_table"):
    lines.append(f"[{title}] calibration (pairs by reward gap): gap range   pairs  accuracy  "
                 "σ(gap)")
    for row in ev["calibration_table"]:
      lines.append(f"    {row['lo']:6.2f} – {row['hi']:6.2f}  {row['pairs']:6d}  "
                   f"{row['accuracy']:8.3f}  {row['predicted']:6.3f}")
  return "\n".join(lines)
