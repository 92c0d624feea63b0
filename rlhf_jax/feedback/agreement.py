"""Inter-labeler agreement and labeler bias, from answers as plain data (no database here).

Over the tasks two or more labelers answered:
- pairwise agreement (InstructGPT's measure): every ranking expanded to its response pairs; for
  each two labelers and each pair both ordered strictly, do they order it the same way? Ties are
  excluded;
- Kendall's τ-b (scipy) between two labelers' ranks of one task, averaged over (task, labeler
  pair) where both rankings vary;
- Krippendorff's α, ordinal, of the 1–7 ratings (the `krippendorff` package), units = (task,
  response);
- Fleiss' κ per flag (statsmodels), units = (task, response) with the modal number of raters;
- per labeler: agreement with the majority of the OTHER labelers on each strictly ordered pair
  (pairs where the others split evenly are left out), and with gold on gold tasks;
and over every answer: position bias (how often, of two strictly ordered responses, the one shown
first wins; 0.5 = none, with a two-sided binomial test) and length bias (how often the longer
wins, pairs of equal length left out), and seconds per task.
Not for: reading the database (`report.py`).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
from typing import Sequence

import krippendorff
import numpy as np
from scipy import stats
from statsmodels.stats import inter_rater


@dataclasses.dataclass(frozen=True)
class Judgement:
  """One labeler's answer to one comparison task; lists are in the task's imported order."""

  task: int
  labeler: str
  ranks: tuple  # 0 = best, equal = tie
  ratings: tuple = ()  # 1..7 or None per response
  flags: tuple = ()  # per response, a collection of flag keys
  shown: tuple = ()  # imported indices in the order shown
  lengths: tuple = ()  # words per response
  seconds: float = float("nan")
  gold: tuple | None = None  # gold ranks of a gold task


def strict_pairs(ranks: Sequence[int]) -> dict[tuple[int, int], int]:
  """{(i, j), i < j: +1 if i is ranked better, -1 if worse}; tied pairs left out."""
  return {(i, j): (1 if ranks[i] < ranks[j] else -1)
          for i, j in itertools.combinations(range(len(ranks)), 2) if ranks[i] != ranks[j]}


def by_task(js: Sequence[Judgement]) -> dict[int, list[Judgement]]:
  out = collections.defaultdict(list)
  for j in js:
    out[j.task].append(j)
  return {t: v for t, v in out.items() if len(v) >= 2}


def _rate(agree: int, total: int) -> float:
  return agree / total if total else float("nan")


def pairwise_agreement(js: Sequence[Judgement]) -> tuple[float, int]:
  """(agreement rate, number of (labeler pair, response pair) comparisons)."""
  agree = total = 0
  for group in by_task(js).values():
    for a, b in itertools.combinations(group, 2):
      pa, pb = strict_pairs(a.ranks), strict_pairs(b.ranks)
      for key in pa.keys() & pb.keys():
        total += 1
        agree += pa[key] == pb[key]
  return _rate(agree, total), total


def kendall_tau_b(js: Sequence[Judgement]) -> tuple[float, int]:
  """(mean τ-b over (task, labeler pair) where both rankings vary, how many)."""
  taus = []
  for group in by_task(js).values():
    for a, b in itertools.combinations(group, 2):
      if len(set(a.ranks)) > 1 and len(set(b.ranks)) > 1:
        taus.append(stats.kendalltau(a.ranks, b.ranks, variant="b").statistic)
  taus = [t for t in taus if not math.isnan(t)]
  return (float(np.mean(taus)) if taus else float("nan")), len(taus)


def ratings_alpha(js: Sequence[Judgement]) -> tuple[float, int]:
  """(Krippendorff's ordinal α of the 1–7 ratings on the overlap, units with >= 2 ratings)."""
  groups = by_task(js)
  labelers = sorted({j.labeler for g in groups.values() for j in g})
  units = [(t, i) for t, g in sorted(groups.items()) for i in range(len(g[0].ranks))]
  col = {u: n for n, u in enumerate(units)}
  data = np.full((len(labelers), len(units)), np.nan)
  for t, g in groups.items():
    for j in g:
      for i, r in enumerate(j.ratings):
        if r is not None:
          data[labelers.index(j.labeler), col[(t, i)]] = r
  paired = int(np.sum(np.sum(~np.isnan(data), axis=0) >= 2)) if units else 0
  if paired == 0 or len(np.unique(data[~np.isnan(data)])) < 2:
    return float("nan"), paired
  return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                                  value_domain=list(range(1, 8)))), paired


def flag_kappas(js: Sequence[Judgement], flag_keys: Sequence[str]) -> dict[str, tuple[float, int]]:
  """{flag: (Fleiss' κ, units)} over (task, response) units with the modal number of raters
  (Fleiss' κ needs the same number of raters per unit)."""
  groups = [g for g in by_task(js).values() if all(j.flags for j in g)]
  if not groups:
    return {f: (float("nan"), 0) for f in flag_keys}
  m = collections.Counter(len(g) for g in groups).most_common(1)[0][0]
  groups = [g for g in groups if len(g) == m]
  out = {}
  for f in flag_keys:
    table = np.array([[sum(f not in j.flags[i] for j in g), sum(f in j.flags[i] for j in g)]
                      for g in groups for i in range(len(g[0].ranks))])
    p = table.sum(axis=0) / table.sum()
    # With one category never (or always) used, κ is 0/0: report it as undefined.
    kappa = (float("nan") if np.any(p == 0) else
             float(inter_rater.fleiss_kappa(table, method="fleiss")))
    out[f] = (kappa, len(table))
  return out


def majority_agreement(js: Sequence[Judgement]) -> dict[str, tuple[float, int]]:
  """{labeler: (agreement with the others' majority, pairs counted)}."""
  agree, total = collections.Counter(), collections.Counter()
  for group in by_task(js).values():
    pairs = {j.labeler: strict_pairs(j.ranks) for j in group}
    for j in group:
      for key, mine in pairs[j.labeler].items():
        vote = sum(p[key] for who, p in pairs.items() if who != j.labeler and key in p)
        if vote:
          total[j.labeler] += 1
          agree[j.labeler] += mine == (1 if vote > 0 else -1)
  return {who: (_rate(agree[who], total[who]), total[who]) for who in sorted(total)}


def gold_agreement(js: Sequence[Judgement]) -> dict[str, tuple[float, int]]:
  """{labeler: (agreement with gold on gold tasks' strictly ordered pairs, pairs counted)}."""
  agree, total = collections.Counter(), collections.Counter()
  for j in js:
    if j.gold is None:
      continue
    gold, mine = strict_pairs(j.gold), strict_pairs(j.ranks)
    for key in gold.keys() & mine.keys():
      total[j.labeler] += 1
      agree[j.labeler] += gold[key] == mine[key]
  return {who: (_rate(agree[who], total[who]), total[who]) for who in sorted(total)}


@dataclasses.dataclass(frozen=True)
class Bias:
  rate: float  # how often the favoured side wins; 0.5 = no bias
  n: int
  p_value: float  # two-sided binomial test against 0.5


def _bias(wins: int, n: int) -> Bias:
  p = stats.binomtest(wins, n, 0.5).pvalue if n else float("nan")
  return Bias(_rate(wins, n), n, float(p))


def position_bias(js: Sequence[Judgement]) -> Bias:
  """How often, of two strictly ordered responses, the one shown earlier wins."""
  wins = n = 0
  for j in js:
    where = {idx: pos for pos, idx in enumerate(j.shown)}
    for (a, b), sign in strict_pairs(j.ranks).items():
      winner = a if sign > 0 else b
      loser = b if sign > 0 else a
      n += 1
      wins += where[winner] < where[loser]
  return _bias(wins, n)


def length_bias(js: Sequence[Judgement]) -> Bias:
  """How often, of two strictly ordered responses of different lengths, the longer wins."""
  wins = n = 0
  for j in js:
    for (a, b), sign in strict_pairs(j.ranks).items():
      if j.lengths[a] == j.lengths[b]:
        continue
      winner = a if sign > 0 else b
      n += 1
      wins += j.lengths[winner] == max(j.lengths[a], j.lengths[b])
  return _bias(wins, n)


def seconds_per_task(js: Sequence[Judgement]) -> dict[str, dict[str, float]]:
  """{labeler (and "all"): {"median", "mean", "n"}} of seconds on the page."""
  groups = collections.defaultdict(list)
  for j in js:
    if not math.isnan(j.seconds):
      groups[j.labeler].append(j.seconds)
      groups["all"].append(j.seconds)
  return {k: {"median": float(np.median(v)), "mean": float(np.mean(v)), "n": len(v)}
          for k, v in sorted(groups.items())}
