"""The report of a reward model on a set of comparisons, and its per-record rewards: one code
path for the reward-model stage's held-out report and for `python -m rlhf_jax.reward.score`.

`comparison_report` turns rewards [N, K] of comparisons into the metrics of
`rlhf_jax.reward.evaluate` with the length baselines on the full texts (words, characters), the
truncation rate, the accuracy where the shorter response won, and per-file figures when the
comparisons come from several files. `write_rewards` writes one JSON line per record.
Not for: computing the rewards (the stage's eval step, or `rlhf_jax.reward.score`).
"""

from __future__ import annotations

import json

import numpy as np

from rlhf_jax.data import comparisons as cmp
from rlhf_jax.reward import evaluate as rm_eval


def comparison_metrics(rewards_NxK, comps, k: int, gold_NxK=None) -> dict:
  """evaluate_rewards on `comps` with full-text lengths, plus the truncation rate."""
  ev = rm_eval.evaluate_rewards(rewards_NxK, cmp.rank_matrix(comps, k),
                                cmp.response_lengths(comps, k, "words"), gold_NxK,
                                chars_NxK=cmp.response_lengths(comps, k, "chars"))
  ev["truncated_fraction"] = cmp.truncated_fraction(comps)
  return ev


def comparison_report(rewards_NxK, comps, k: int, gold_NxK=None, labeler_ceiling=None,
                      what: str = "held-out") -> tuple[dict, str]:
  """(metrics with "by_group" when several files, the printed report)."""
  rewards_NxK = np.asarray(rewards_NxK)
  ev = comparison_metrics(rewards_NxK, comps, k, gold_NxK)
  if labeler_ceiling is not None:
    ev["labeler_ceiling"] = labeler_ceiling
  lines = [rm_eval.format_report(ev, what=what)]
  groups = sorted({c.group for c in comps})
  if len(groups) > 1:
    ev["by_group"] = {}
    for g in groups:
      sel = np.array([c.group == g for c in comps])
      evg = comparison_metrics(rewards_NxK[sel], [c for c in comps if c.group == g], k)
      ev["by_group"][g] = {key: v for key, v in evg.items() if not key.endswith("_table")}
      lines.append(group_line(g, evg))
  return ev, "\n".join(lines)


def group_line(name: str, ev: dict) -> str:
  return (f"  {name:<28} {ev['pairs']:5d} pairs  accuracy {ev['accuracy']:.4f}  longer wins "
          f"{ev['longer_wins']:.4f}  shorter wins {ev['shorter_wins']:.4f} (words)  where the "
          f"shorter won {ev['shorter_won_accuracy']:.4f}  margin over the better baseline "
          f"{ev['accuracy'] - ev['length_baseline']:+.4f} (paired p {ev['paired_p_value']:.2g})"
          f"  truncated {100 * ev['truncated_fraction']:.1f}%")


def reward_records(comps, rewards_NxK, norm: dict | None = None):
  """One dict per comparison: its record, file group, ranks and rewards (raw, and normalised
  with `norm`'s gain and bias when given)."""
  for c, r in zip(comps, np.asarray(rewards_NxK)):
    raw = [float(x) for x in r[:c.k]]
    row = {"record": c.record, "group": c.group, "ranks": list(c.ranks), "rewards": raw}
    if norm is not None:
      row["normalized"] = [norm["gain"] * x + norm["bias"] for x in raw]
    yield row


def write_rewards(path: str, rows) -> int:
  """Writes dicts as JSON lines; returns how many."""
  n = 0
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
      n += 1
  return n
