"""Token-level losses shared by the language-model stages (pretrain, SFT, PPO-ptx).

Pure functions of arrays; each has a NumPy reference test. Not for: RL objectives (the RL issue
adds its own module) or reward-model losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def next_token_logprobs(logits_BxTxV, tokens_BxT):
  """log p(tokens[t+1] | tokens[:t+1]) for t < T-1: [B, T-1] float32."""
  logp = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], axis=-1)[..., 0]


def masked_nll(logits_BxTxV, tokens_BxT, loss_mask_BxT):
  """(sum of -log p over target tokens, number of target tokens).

  loss_mask[t] marks token t as a target (predicted from the tokens before it), so position 0 is
  never a target. Returned as a sum and a count so the caller can normalise over a whole global
  batch (or a whole eval set) rather than averaging per-batch means.
  """
  mask = loss_mask_BxT[:, 1:].astype(jnp.float32)
  nll = -next_token_logprobs(logits_BxTxV, tokens_BxT)
  return jnp.sum(nll * mask), jnp.sum(mask)
