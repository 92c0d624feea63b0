"""pass@k: the unbiased estimator against a brute-force count over every k-subset of the n
samples, its stability where the binomial coefficients overflow, and its input checks."""

import itertools

import numpy as np
import pytest
from scipy.special import comb

from rlhf_jax.errors import ConfigError
from rlhf_jax.reward.pass_at_k import mean_pass_at_k, parse_ks, pass_at_k


def _brute_force(n: int, c: int, k: int) -> float:
  """The share of the k-subsets of n samples (c of them right) that hold a right one."""
  right = [True] * c + [False] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(right[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_equals_brute_force_over_all_subsets(n):
  for c in range(n + 1):
    for k in range(1, n + 1):
      assert pass_at_k(n, c, k) == pytest.approx(_brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_1_is_the_share_right_and_mean_over_prompts():
  assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
  table = np.array([[1, 0, 0, 0], [1, 1, 0, 1], [0, 0, 0, 0]], bool)
  got = mean_pass_at_k(table, (1, 2, 4))
  want = {k: np.mean([_brute_force(4, c, k) for c in (1, 3, 0)]) for k in (1, 2, 4)}
  assert got == pytest.approx(want)


def test_stable_where_the_binomials_overflow_a_float():
  n, c, k = 5000, 7, 300
  assert not np.isfinite(float(comb(n, k)))  # the naive formula would divide inf by inf
  exact = 1 - comb(n - c, k, exact=True) / comb(n, k, exact=True)  # Python's exact integers
  assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_bad_inputs_are_named():
  for n, c, k in ((4, 5, 1), (4, 1, 0), (4, 1, 5)):
    with pytest.raises(ConfigError, match="pass@k needs"):
      pass_at_k(n, c, k)
  assert parse_ks("8, 1,4,1", 8) == (1, 4, 8)
  with pytest.raises(ConfigError, match="each k must be in 1..reward.pass_n=4"):
    parse_ks("1,8", 4)
  with pytest.raises(ConfigError, match="not a comma list"):
    parse_ks("one", 4)
