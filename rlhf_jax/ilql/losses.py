"""ILQL's arithmetic (Snell et al. 2022, "Offline RL for Natural Language Generation with
Implicit Language Q Learning"), per response token, as small pure functions.

A response of n tokens a_0 … a_{n−1} is a trajectory: state s_t is the prompt and a_0 … a_{t−1}
(the hidden state that predicts a_t), the reward is 0 on every token but the last, which
receives the response's score R. With masks [B, N] marking the response slots:
  terminal_rewards  r_t = R on the last response token, 0 elsewhere
  td_targets        y_t = r_t + γ·V(s_{t+1}), with no bootstrap after the last token
  td_loss           mean over tokens of (Q(s_t, a_t) − y_t)²
  expectile_loss    mean over tokens of |τ − 1[u < 0]|·u², u = Q̂(s_t, a_t) − V(s_t): V learns
                    the τ-expectile of the (target) Q over the data's actions (IQL's V)
  cql_loss          mean over tokens of logsumexp_a Q(s_t, a) − Q(s_t, a_t): the conservative
                    term that pushes down Q of actions the data did not take
  shaped_logits     logits + β·(Q(s, ·) − V(s)): decoding from π_β(a|s)·exp(β·(Q(s,a) − V(s))),
                    since logits and log π_β differ by a per-row constant; β = 0 leaves the
                    logits untouched
Every mean is over the masked tokens of the whole batch (a sum over a count). Each function
has a NumPy reference test (tests/test_ilql.py).
Not for: the model heads (`heads.py`) or the step (`steps.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_mean(x_BxN, mask_BxN):
  m = mask_BxN.astype(jnp.float32)
  return jnp.sum(x_BxN * m) / jnp.maximum(jnp.sum(m), 1.0)


def last_token(mask_BxN):
  """bool[B, N]: the last True slot of each row (none in an empty row)."""
  m = mask_BxN.astype(bool)
  nxt = jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
  return m & ~nxt


def terminal_rewards(reward_B, mask_BxN):
  """float32[B, N]: each row's reward on its last response token, 0 elsewhere."""
  return jnp.where(last_token(mask_BxN), reward_B[:, None].astype(jnp.float32), 0.0)


def td_targets(v_BxN, reward_B, mask_BxN, gamma: float):
  """float32[B, N]: y_t = r_t + γ·V(s_{t+1}) before the last token, R at it (0 past it)."""
  m = mask_BxN.astype(bool)
  last = last_token(m)
  v_next = jnp.concatenate([v_BxN[:, 1:], jnp.zeros_like(v_BxN[:, :1])], axis=1)
  boot = jnp.where(m & ~last, gamma * v_next, 0.0)
  return terminal_rewards(reward_B, m) + boot


def td_loss(q_taken_BxN, target_BxN, mask_BxN):
  return masked_mean((q_taken_BxN - target_BxN) ** 2, mask_BxN)


def expectile_loss(q_taken_BxN, v_BxN, mask_BxN, tau: float):
  """The asymmetric squared loss of V below (weight τ) and above (1 − τ) the Q targets."""
  u = q_taken_BxN - v_BxN
  w = jnp.where(u < 0, 1.0 - tau, tau)
  return masked_mean(w * u ** 2, mask_BxN)


def cql_loss(q_BxNxV, actions_BxN, mask_BxN):
  q = q_BxNxV.astype(jnp.float32)
  taken = jnp.take_along_axis(q, actions_BxN[..., None], axis=-1)[..., 0]
  return masked_mean(jax.nn.logsumexp(q, axis=-1) - taken, mask_BxN)


def shaped_logits(logits_BxV, q_BxV, v_B, beta: float):
  """float32[B, V]: the policy's logits plus β times the advantage of every token (any leading
  axes: [..., V] logits and Qs with [...] values)."""
  return logits_BxV + beta * (q_BxV - v_B[..., None])
