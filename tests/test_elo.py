"""The Bradley–Terry / Elo fit over systems: recovers known strengths, sits at a stationary point
of its log-posterior, treats ties symmetrically, and reads AlpacaEval's real comparisons."""

import numpy as np
import pytest

from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.reward import elo


def _simulate(strengths, n, seed=0):
  rng = np.random.default_rng(seed)
  names = list(strengths)
  a, b, y = [], [], []
  for _ in range(n):
    i, j = rng.choice(len(names), 2, replace=False)
    p = 1 / (1 + np.exp(-(strengths[names[i]] - strengths[names[j]])))
    a.append(names[i])
    b.append(names[j])
    y.append(float(rng.random() < p))
  return a, b, y


def test_recovers_known_strengths_within_their_errors():
  truth = {"s0": 0.0, "s1": 0.5, "s2": 1.0, "s3": -0.7, "s4": 1.6}
  a, b, y = _simulate(truth, 8000)
  ratings = {r.system: r for r in elo.fit_bradley_terry(a, b, y)}
  centred = np.array(list(truth.values())) - np.mean(list(truth.values()))
  for (name, _), want in zip(truth.items(), centred):
    got = (ratings[name].rating - elo.BASE_RATING) / elo.ELO_PER_LOGIT
    se = ratings[name].stderr / elo.ELO_PER_LOGIT
    assert abs(got - want) < 4 * se, (name, got, want, se)
  order = [r.system for r in elo.fit_bradley_terry(a, b, y)]
  assert order == sorted(truth, key=lambda s: -truth[s])


def test_fit_is_a_stationary_point_of_the_log_posterior():
  a, b, y = _simulate({"x": 0.0, "y": 1.0, "z": 2.0}, 300, seed=3)
  prior_sd = 2.0
  ratings = {r.system: r.rating for r in elo.fit_bradley_terry(a, b, y, prior_sd=prior_sd)}
  # At the MAP point the likelihood's gradient balances the prior's pull, θ / prior_sd²; the
  # likelihood gradient sums to zero, so θ has mean zero and recentring changes nothing.
  theta = {k: (v - elo.BASE_RATING) / elo.ELO_PER_LOGIT for k, v in ratings.items()}
  grad = dict.fromkeys(theta, 0.0)
  for sa, sb, yy in zip(a, b, y):
    p = 1 / (1 + np.exp(-(theta[sa] - theta[sb])))
    grad[sa] += yy - p
    grad[sb] -= yy - p
  for k in theta:
    assert grad[k] == pytest.approx(theta[k] / prior_sd ** 2, abs=1e-6)


def test_ties_and_swapped_sides_give_the_same_ratings():
  a, b, y = ["p", "q", "p", "q"], ["q", "p", "q", "p"], [1.0, 0.0, 0.5, 0.5]
  r1 = {r.system: r.rating for r in elo.fit_bradley_terry(a, b, y)}
  r2 = {r.system: r.rating for r in elo.fit_bradley_terry(b, a, [1 - v for v in y])}
  assert r1 == pytest.approx(r2)
  assert r1["p"] > r1["q"]


def test_bad_input():
  with pytest.raises(ConfigError, match="itself"):
    elo.fit_bradley_terry(["a"], ["a"], [1.0])
  with pytest.raises(ConfigError, match=r"\[0, 1\]"):
    elo.fit_bradley_terry(["a"], ["b"], [2.0])
  with pytest.raises(DataError, match="winner"):
    elo.outcomes_from_records([("f.jsonl:1", 0, {"model_a": "x", "model_b": "y",
                                                 "winner": "z"})])


def test_alpaca_eval_comparisons(shared_data):
  from rlhf_jax.data.demonstrations import read_records
  sa, sb, ys = elo.outcomes_from_records(
      read_records(str(shared_data / "alpaca_eval" / "comparisons.jsonl.gz")), "generator_1",
      "generator_2", "preference")
  ratings = elo.fit_bradley_terry(sa, sb, ys)
  assert len(ratings) > 10
  by_name = {r.system: r for r in ratings}
  # The reference system played every other one, so its rating is the best determined.
  ref = max(ratings, key=lambda r: r.games)
  assert ref.stderr == min(r.stderr for r in ratings)
  assert all(np.isfinite(r.rating) and r.stderr > 0 for r in by_name.values())
  print("\n" + elo.format_table(ratings[:5]))
