"""From many pairwise comparisons of several systems to one ranking: a Bradley–Terry fit on the
Elo scale, with standard errors.

Model: P(a beats b) = σ(θ_a − θ_b). The strengths θ are the maximum a-posteriori estimate under a
weak Gaussian prior θ ~ N(0, prior_sd²) (it keeps a system that won or lost everything finite and
fixes the free offset), found by Newton's method on the concave log-posterior. Ties count half a
win to each side. Ratings are reported on the Elo scale, rating = 1000 + (400 / ln 10) · θ (a 400
point gap means 10:1 odds), recentred so the mean rating is 1000; the standard errors come from
the inverse Hessian of the log-posterior (the Laplace approximation) of the centred ratings, on
the same scale.

    python -m rlhf_jax.reward.elo comparisons.jsonl [--a=model_a --b=model_b --winner=winner]

reads records naming two systems and the winner ("a", "b", "tie", a system name, or
AlpacaEval's numeric preference in [1, 2], 1 meaning the first system is better; soft values
are soft outcomes).
Not for: reward-model training (Bradley–Terry over responses is `rlhf_jax.reward.losses`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from rlhf_jax.data.demonstrations import where
from rlhf_jax.errors import ConfigError, DataError

ELO_PER_LOGIT = 400.0 / math.log(10.0)
BASE_RATING = 1000.0


@dataclasses.dataclass(frozen=True)
class Rating:
  system: str
  rating: float  # Elo scale
  stderr: float  # Elo points
  wins: float  # ties count half
  games: int


def fit_bradley_terry(systems_a: Sequence[str], systems_b: Sequence[str],
                      outcomes: Sequence[float], prior_sd: float = 10.0,
                      max_iter: int = 100) -> list[Rating]:
  """Ratings, best first. outcomes[i] is 1 if systems_a[i] won, 0 if systems_b[i] won, 0.5 a tie."""
  if not len(systems_a) == len(systems_b) == len(outcomes):
    raise ConfigError(f"{len(systems_a)} a's, {len(systems_b)} b's and {len(outcomes)} outcomes")
  if not len(outcomes):
    raise ConfigError("no comparisons to fit")
  if prior_sd <= 0:
    raise ConfigError(f"prior_sd={prior_sd} must be positive")
  y = np.asarray(outcomes, np.float64)
  if np.any((y < 0) | (y > 1)):
    raise ConfigError("outcomes must lie in [0, 1] (1: a won, 0: b won, 0.5: tie)")
  names = sorted(set(systems_a) | set(systems_b))
  index = {n: i for i, n in enumerate(names)}
  a = np.array([index[s] for s in systems_a])
  b = np.array([index[s] for s in systems_b])
  if np.any(a == b):
    raise ConfigError("a comparison pits a system against itself")
  n = len(names)
  theta = np.zeros(n)
  precision = 1.0 / prior_sd ** 2
  for _ in range(max_iter):
    p = 1.0 / (1.0 + np.exp(-(theta[a] - theta[b])))
    r = y - p  # d loglik / d(θ_a − θ_b)
    grad = np.bincount(a, r, n) - np.bincount(b, r, n) - precision * theta
    w = p * (1 - p)
    hess = np.diag(np.bincount(a, w, n) + np.bincount(b, w, n) + precision)
    np.add.at(hess, (a, b), -w)
    np.add.at(hess, (b, a), -w)
    step = np.linalg.solve(hess, grad)  # Newton ascent: H here is minus the Hessian
    theta += step
    if np.max(np.abs(step)) < 1e-10:
      break
  # The ratings are reported centred, so their errors are those of θ − mean(θ): the common
  # offset, fixed only by the prior, does not inflate them.
  centre = np.eye(n) - 1.0 / n
  cov = centre @ np.linalg.inv(hess) @ centre.T
  stderr = np.sqrt(np.clip(np.diag(cov), 0, None)) * ELO_PER_LOGIT
  ratings = BASE_RATING + (theta - theta.mean()) * ELO_PER_LOGIT
  wins = np.bincount(a, y, n) + np.bincount(b, 1 - y, n)
  games = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
  out = [Rating(names[i], float(ratings[i]), float(stderr[i]), float(wins[i]), int(games[i]))
         for i in range(n)]
  return sorted(out, key=lambda r: -r.rating)


def format_table(ratings: Sequence[Rating]) -> str:
  lines = [f"{'rank':>4}  {'system':<32} {'elo':>7} {'± se':>6} {'win%':>6} {'games':>6}"]
  for i, r in enumerate(ratings):
    lines.append(f"{i + 1:>4}  {r.system[:32]:<32} {r.rating:7.1f} {r.stderr:6.1f} "
                 f"{100 * r.wins / max(r.games, 1):6.1f} {r.games:6d}")
  return "\n".join(lines)


def outcomes_from_records(records, a_field: str = "model_a", b_field: str = "model_b",
                          winner_field: str = "winner"):
  """(systems_a, systems_b, outcomes) from dicts; winner is "a", "b", "tie" or a system name."""
  sa, sb, ys = [], [], []
  for origin, i, rec in records:
    try:
      a, b, w = str(rec[a_field]), str(rec[b_field]), rec[winner_field]
    except (KeyError, TypeError):
      raise DataError(f"{where(origin, i)}: lacks one of the fields {a_field!r}, {b_field!r}, "
                      f"{winner_field!r}") from None
    if isinstance(w, str):
      w = w.strip().lower()
      y = {"a": 1.0, a.lower(): 1.0, "b": 0.0, b.lower(): 0.0, "tie": 0.5, "draw": 0.5}.get(w)
    elif isinstance(w, (int, float)) and 1 <= w <= 2:
      y = 2.0 - float(w)  # AlpacaEval's "preference": 1 = output_1 better, 2 = output_2, soft
    else:
      y = None
    if y is None:
      raise DataError(f"{where(origin, i)}: has winner {rec[winner_field]!r}: expected 'a', "
                      "'b', 'tie', one of the two system names, or a number in [1, 2]")
    sa.append(a)
    sb.append(b)
    ys.append(y)
  return sa, sb, ys


def main(argv=None) -> None:
  import argparse  # pylint: disable=g-import-not-at-top
  from rlhf_jax.data.demonstrations import read_records  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("source", help="local .json/.jsonl/.parquet file(s) or a hub dataset")
  parser.add_argument("--a", default="model_a")
  parser.add_argument("--b", default="model_b")
  parser.add_argument("--winner", default="winner")
  parser.add_argument("--split", default="train")
  args = parser.parse_args(argv)
  sa, sb, ys = outcomes_from_records(read_records(args.source, args.split), args.a, args.b,
                                     args.winner)
  print(format_table(fit_bradley_terry(sa, sb, ys)))


if __name__ == "__main__":
  main()
