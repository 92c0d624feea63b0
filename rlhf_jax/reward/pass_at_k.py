"""pass@k: the chance that at least one of k answers is right, from n ≥ k samples per prompt.

The unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on
Code"): with c of n samples right, pass@k = 1 − C(n−c, k) / C(n, k), computed as the product
1 − Π_{i=n−c+1}^{n} (1 − k/i), which never forms the binomial coefficients (they overflow a
float long before n reaches the hundreds). Averaged over prompts.
Not for: sampling the n answers or deciding which are right (the RL stage's evaluation).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rlhf_jax.errors import ConfigError


def pass_at_k(n: int, c: int, k: int) -> float:
  """The unbiased pass@k of one prompt with c right answers among n samples."""
  if not (0 <= c <= n and 1 <= k <= n):
    raise ConfigError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
  if n - c < k:  # every k-subset holds a right answer
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(correct_PxN: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
  """{k: pass@k averaged over prompts} from a bool [prompts, n] table of right answers."""
  correct = np.asarray(correct_PxN, bool)
  if correct.ndim != 2 or correct.shape[0] == 0:
    raise ConfigError(f"pass@k wants a [prompts, n] table with at least one prompt, got shape "
                      f"{correct.shape}")
  n = correct.shape[1]
  counts = correct.sum(axis=1)
  return {int(k): float(np.mean([pass_at_k(n, int(c), int(k)) for c in counts])) for k in ks}


def parse_ks(spec: str, n: int) -> tuple[int, ...]:
  """The k's of a "1,4,8" string, each in 1..n, sorted and unique."""
  try:
    ks = sorted({int(x) for x in str(spec).split(",") if x.strip()})
  except ValueError:
    raise ConfigError(f"reward.pass_k={spec!r} is not a comma list of integers") from None
  if not ks or ks[0] < 1 or ks[-1] > n:
    raise ConfigError(f"reward.pass_k={spec!r}: each k must be in 1..reward.pass_n={n}")
  return tuple(ks)
