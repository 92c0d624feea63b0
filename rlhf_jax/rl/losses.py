"""The policy and value objectives of PPO and A2C, token-level, over a minibatch.

All means are over the masked response tokens of the minibatch (every token weighs the same).
  PPO policy:  ρ = exp(log π − log π_old);  L = mean(max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε)))
  A2C policy:  L = mean(−A·ρ): on one on-policy pass ρ = 1 and the gradient is −A·∇log π
  value:       L = ½·mean(max((V − R)², (V_old + clip(V − V_old, −ε_v, ε_v) − R)²)); ε_v = 0
               turns the clipping off
  entropy:     of the (temperature-scaled) next-token distribution at each response token
Each returns (loss, metrics); NumPy-reference tested.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.rl.advantages import masked_mean


def policy_loss(logp_BxN, old_logp_BxN, adv_BxN, mask_BxN, clip_eps: float):
  """PPO's clipped surrogate; clip_eps=0 gives A2C's unclipped −A·ρ."""
  log_ratio = logp_BxN - old_logp_BxN
  ratio = jnp.exp(log_ratio)
  pg1 = -adv_BxN * ratio
  if clip_eps > 0:
    pg2 = -adv_BxN * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    per_token = jnp.maximum(pg1, pg2)
    clipped = (pg2 > pg1).astype(jnp.float32)
  else:
    per_token, clipped = pg1, jnp.zeros_like(pg1)
  metrics = {
      "policy_loss": masked_mean(per_token, mask_BxN),
      "clip_frac": masked_mean(clipped, mask_BxN),
      "approx_kl": masked_mean(0.5 * log_ratio ** 2, mask_BxN),
      "ratio_mean": masked_mean(ratio, mask_BxN),
      "ratio_max": jnp.max(jnp.where(mask_BxN, ratio, 0.0)),
  }
  return metrics["policy_loss"], metrics


def value_loss(values_BxN, old_values_BxN, returns_BxN, mask_BxN, clip_eps: float):
  """Clipped value loss (clip_eps=0: plain squared error)."""
  err = (values_BxN - returns_BxN) ** 2
  if clip_eps > 0:
    clipped_v = old_values_BxN + jnp.clip(values_BxN - old_values_BxN, -clip_eps, clip_eps)
    err_c = (clipped_v - returns_BxN) ** 2
    per_token = jnp.maximum(err, err_c)
    frac = masked_mean((err_c > err).astype(jnp.float32), mask_BxN)
  else:
    per_token, frac = err, jnp.zeros(())
  loss = 0.5 * masked_mean(per_token, mask_BxN)
  return loss, {"value_loss": loss, "value_clip_frac": frac}


def entropy(logits_BxNxV, mask_BxN):
  """Mean entropy (nats) of the distributions at the masked tokens."""
  logp = jax.nn.log_softmax(logits_BxNxV.astype(jnp.float32), axis=-1)
  ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
  return masked_mean(ent, mask_BxN)


def explained_variance(values_BxN, returns_BxN, mask_BxN):
  """1 − Var(R − V) / Var(R) over the masked tokens (1 = perfect, 0 = no better than a constant)."""
  def var(x):
    mu = masked_mean(x, mask_BxN)
    return masked_mean((x - mu) ** 2, mask_BxN)
  return 1.0 - var(returns_BxN - values_BxN) / jnp.maximum(var(returns_BxN), 1e-8)
