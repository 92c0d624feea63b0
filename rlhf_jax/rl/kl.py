"""KL to the reference, per token, and the adaptive KL controller.

Per-token estimators of KL(π ‖ π_ref) from the log-probs of the SAMPLED tokens (Schulman's
"Approximating KL divergence" notes), with log r = log π_ref(y_t) − log π(y_t):
  k1 = −log r           unbiased, can be negative per token (the classic RLHF penalty)
  k2 = ½ (log r)²       biased, low variance, non-negative
  k3 = (r − 1) − log r  unbiased, non-negative
The adaptive controller (Ziegler et al. 2019) moves β so the measured KL tracks a target:
  e = clip(KL / target − 1, −0.2, 0.2);  β ← β · (1 + e · n / horizon)
with n the number of samples in the batch. Pure functions of arrays; NumPy-reference tested.
"""

from __future__ import annotations

import jax.numpy as jnp

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_per_token(logp_BxN, ref_logp_BxN, estimator: str = "k1"):
  """float32[B, N]: the chosen estimate of KL(π ‖ π_ref) at each sampled token (mask it after)."""
  log_r = ref_logp_BxN - logp_BxN
  if estimator == "k1":
    return -log_r
  if estimator == "k2":
    return 0.5 * log_r ** 2
  if estimator == "k3":
    return jnp.expm1(log_r) - log_r
  raise ValueError(f"KL estimator {estimator!r} is not one of {KL_ESTIMATORS}")


def masked_kl_per_token(logp_BxN, ref_logp_BxN, mask_BxN, estimator: str = "k1"):
  """float32[B, N]: `kl_per_token` on the response tokens, exactly 0 elsewhere. The log-probs
  are masked BEFORE the estimator: past EOS the slots hold whatever the caller left there (a
  zeroed reference against a policy log-prob of −100, say), and k3's expm1 of that overflows to
  inf, which a mask applied afterwards turns into inf·0 = NaN, in the value and the gradient."""
  m = mask_BxN.astype(bool)
  est = kl_per_token(jnp.where(m, logp_BxN, 0.0), jnp.where(m, ref_logp_BxN, 0.0), estimator)
  return jnp.where(m, est, 0.0)


def adaptive_kl_coef(beta, kl, n_samples, target: float, horizon: float):
  """β after one batch whose mean sequence KL was `kl` (Ziegler et al. 2019, proportional
  controller with the error clipped to ±20%)."""
  err = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return beta * (1.0 + err * n_samples / horizon)
