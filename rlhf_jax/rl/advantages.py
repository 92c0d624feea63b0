"""From a rollout's scores to advantages: per-token rewards, GAE by a reverse scan, whitening.

Shapes: B rollouts, N response slots; `mask_BxN` marks real response tokens (a prefix of each
row: the response up to and including EOS). Positions past a row's end hold zeros in every output.
  token_rewards:  r_t = −β·kl_t on every response token, plus the sequence score on the last one
  gae:            δ_t = r_t + γ·V_{t+1}·m_{t+1} − V_t;  A_t = δ_t + γλ·m_{t+1}·A_{t+1}
                  (the value after the last token is 0: the episode ends there); returns = A + V
  whiten:         (x − mean) / std over the masked entries of the whole batch
Pure functions; each has a NumPy reference test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x, mask, axis=None):
  mask = mask.astype(x.dtype)
  return jnp.sum(x * mask, axis=axis) / jnp.maximum(jnp.sum(mask, axis=axis), 1.0)


def masked_var(x, mask, unbiased: bool = True):
  mean = masked_mean(x, mask)
  n = jnp.sum(mask.astype(x.dtype))
  var = masked_mean((x - mean) ** 2, mask)
  return var * n / jnp.maximum(n - 1.0, 1.0) if unbiased else var


def whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8):
  """x normalised to unit variance over its masked entries (zero mean unless shift_mean=False);
  entries outside the mask become 0."""
  mean, var = masked_mean(x, mask), masked_var(x, mask)
  out = (x - mean) * jax.lax.rsqrt(var + eps)
  if not shift_mean:
    out = out + mean
  return jnp.where(mask.astype(bool), out, 0.0)


def last_index(mask_BxN):
  """int32[B]: index of each row's last real token (0 for an empty row)."""
  n = mask_BxN.shape[-1]
  return jnp.max(jnp.where(mask_BxN.astype(bool), jnp.arange(n), 0), axis=-1)


def token_rewards(score_B, kl_BxN, mask_BxN, beta):
  """float32[B, N]: −β·KL at each response token, the score added at the row's last token."""
  m = mask_BxN.astype(jnp.float32)
  r = -beta * kl_BxN * m
  last = jax.nn.one_hot(last_index(mask_BxN), mask_BxN.shape[-1], dtype=jnp.float32)
  has_any = jnp.any(mask_BxN, axis=-1, keepdims=True)
  return r + jnp.where(has_any, last * score_B[:, None], 0.0)


def gae(rewards_BxN, values_BxN, mask_BxN, gamma: float, lam: float):
  """(advantages [B, N], returns [B, N]) by a reverse `lax.scan` over the N slots."""
  m = mask_BxN.astype(jnp.float32)
  v = values_BxN * m
  next_m = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
  next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
  deltas = (rewards_BxN + gamma * next_v * next_m - v) * m

  def step(adv_next, xs):
    delta_t, m_t, next_m_t = xs
    adv = (delta_t + gamma * lam * next_m_t * adv_next) * m_t
    return adv, adv

  _, adv_NxB = jax.lax.scan(step, jnp.zeros(rewards_BxN.shape[0], jnp.float32),
                            (deltas.T, m.T, next_m.T), reverse=True)
  adv = adv_NxB.T
  return adv, (adv + v) * m
