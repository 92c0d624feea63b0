"""Reward-model losses: Bradley–Terry over pairs and over K-way rankings, from one forward pass.

Every batch element is one prompt with K responses (K = 2 for a plain comparison) and their
ranks (0 = best, equal ranks = a tie, -1 = no response in this slot). The element's pairs are
all (i, j) with rank_i < rank_j; each costs

    -log σ(r_i - r_j - m_ij)

(m_ij an optional margin, Llama 2's "the preference was clear" term). InstructGPT's objective
averages the K(K-1)/2 pairs of a prompt and then the prompts, so a ranking of 9 responses weighs
as one prompt, not 36 independent pairs; `per_prompt=False` averages over pairs instead. The
scores of the K responses come from one forward pass over the K sequences, so each response is
seen once per step however many pairs it is in.

The optional centring penalty, coef · mean(r²) over the real responses, keeps rewards near zero
without changing their differences (the preference loss only sees differences).
`last_token_scores` reads a score head's output at each row's last real token (the RM's reward);
`pooled_scores` also offers the mean or the sum over the row's real tokens (model.score_pooling).
Not for: the model, the data, or evaluation metrics (see `rlhf_jax.reward.evaluate`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def last_token_scores(scores_BxT, mask_BxT):
  """float32[B]: the score head's value at each row's last real token (right or left padded).

  Rows with no real token give the value at position 0; callers mask them out.
  """
  t = scores_BxT.shape[-1]
  last = jnp.max(jnp.where(mask_BxT.astype(bool), jnp.arange(t), 0), axis=-1)
  return jnp.take_along_axis(scores_BxT, last[..., None], axis=-1)[..., 0]


def pooled_scores(scores_BxT, mask_BxT, pooling: str = "last", sum_scale: float = 1.0):
  """float32[B]: one reward per row from per-token scores: "last" (last real token), "mean"
  over the real tokens, or "sum" over them times `sum_scale` (a constant: the model passes
  1 / max_seq_len so a reward stays of order one and additive over tokens whatever the row's
  padded length). Rows with no real token give 0 for "mean" and "sum"."""
  if pooling == "last":
    return last_token_scores(scores_BxT, mask_BxT)
  m = mask_BxT.astype(scores_BxT.dtype)
  total = jnp.sum(scores_BxT * m, axis=-1)
  if pooling == "sum":
    return total * sum_scale
  if pooling == "mean":
    return total / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
  raise ValueError(f"pooling={pooling!r} must be 'last', 'mean' or 'sum'")


def row_rewards(scores_BxT, mask_BxT, model_cfg):
  """float32[B]: a reward model's reward of each row, pooled as its config says
  (`model.score_pooling`; "sum" scaled by 1 / max_seq_len)."""
  return pooled_scores(scores_BxT, mask_BxT, model_cfg.score_pooling,
                       1.0 / model_cfg.max_seq_len)


def preference_matrix(ranks_BxK):
  """float32[B, K, K]: 1 where response i is ranked strictly above response j (both present)."""
  present = ranks_BxK >= 0
  better = (ranks_BxK[:, :, None] < ranks_BxK[:, None, :]) & present[:, :, None] & (
      present[:, None, :])
  return better.astype(jnp.float32)


def ranking_loss(rewards_BxK, ranks_BxK, margin_BxKxK=None, per_prompt: bool = True,
                 center_coef: float = 0.0):
  """(loss, metrics) of the Bradley–Terry ranking objective; see the module doc.

  metrics: "pair_accuracy" (fraction of pairs with r_i > r_j), "pairs" (count), "prompts"
  (elements with at least one pair), "reward_mean", "reward_sq" (mean r² over responses).
  """
  better = preference_matrix(ranks_BxK)
  diff = rewards_BxK[:, :, None] - rewards_BxK[:, None, :]
  if margin_BxKxK is not None:
    diff_m = diff - margin_BxKxK
  else:
    diff_m = diff
  nll = -jax.nn.log_sigmoid(diff_m)
  pairs_B = better.sum(axis=(1, 2))
  has_pairs = (pairs_B > 0).astype(jnp.float32)
  prompts = has_pairs.sum()
  total_pairs = pairs_B.sum()
  if per_prompt:
    per_elem = (better * nll).sum(axis=(1, 2)) / jnp.maximum(pairs_B, 1.0)
    pref = (per_elem * has_pairs).sum() / jnp.maximum(prompts, 1.0)
  else:
    pref = (better * nll).sum() / jnp.maximum(total_pairs, 1.0)
  present = (ranks_BxK >= 0).astype(jnp.float32)
  n_resp = jnp.maximum(present.sum(), 1.0)
  reward_sq = (present * rewards_BxK ** 2).sum() / n_resp
  loss = pref + center_coef * reward_sq
  metrics = {
      "preference_loss": pref,
      "pair_accuracy": (better * (diff > 0)).sum() / jnp.maximum(total_pairs, 1.0),
      "pairs": total_pairs,
      "prompts": prompts,
      "reward_mean": (present * rewards_BxK).sum() / n_resp,
      "reward_sq": reward_sq,
  }
  return loss, metrics
