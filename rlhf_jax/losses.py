"""Token-level losses shared by the language-model stages (pretrain, SFT, PPO-ptx), and the
log-probability of chosen tokens that DPO and RL scoring read, without a [B, T, V] log-softmax.

Pure functions of arrays; each has a NumPy reference test. Not for: RL objectives (the RL issue
adds its own module) or reward-model losses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def token_logprobs(logits_BxTxV, tokens_BxT):
  """log_softmax(logits)[b, t, tokens[b, t]]: [B, T] float32, without the [B, T, V] array.

  The arithmetic of `jax.nn.log_softmax` (logit minus the max, minus the log of the summed
  exponentials), bit for bit, applied to the one logit read. Jitted, so that an eager call
  reduces as a compiled one does (and the values match the full log-softmax there too).
  """
  logits = logits_BxTxV.astype(jnp.float32)
  top_BxTx1 = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  picked_BxTx1 = jnp.take_along_axis(logits, tokens_BxT[..., None], axis=-1) - top_BxTx1
  log_norm_BxTx1 = jnp.log(jnp.sum(jnp.exp(logits - top_BxTx1), axis=-1, keepdims=True))
  return (picked_BxTx1 - log_norm_BxTx1)[..., 0]


def next_token_logprobs(logits_BxTxV, tokens_BxT):
  """log p(tokens[t+1] | tokens[:t+1]) for t < T-1: [B, T-1] float32.

  Every position is scored against the next token (the last against an arbitrary id) and the
  last column dropped from the [B, T] result: no shifted [B, T-1, V] copy of the logits.
  """
  return token_logprobs(logits_BxTxV, next_token_targets(tokens_BxT))[:, :-1]


def next_token_targets(tokens_BxT):
  """[B, T]: position t's target is token t+1; the last position's, dropped by the callers,
  repeats token T-1 (any id would do)."""
  return jnp.concatenate([tokens_BxT[:, 1:], tokens_BxT[:, -1:]], axis=1)


def masked_nll(logits_BxTxV, tokens_BxT, loss_mask_BxT):
  """(sum of -log p over target tokens, number of target tokens).

  loss_mask[t] marks token t as a target (predicted from the tokens before it), so position 0 is
  never a target. Returned as a sum and a count so the caller can normalise over a whole global
  batch (or a whole eval set) rather than averaging per-batch means.
  """
  return nll_sums(next_token_logprobs(logits_BxTxV, tokens_BxT), loss_mask_BxT)


def nll_sums(next_logprobs_BxTm1, loss_mask_BxT):
  """`masked_nll` from the [B, T-1] next-token log-probs, however they were computed."""
  mask = loss_mask_BxT[:, 1:].astype(jnp.float32)
  nll = -next_logprobs_BxTm1
  return jnp.sum(nll * mask), jnp.sum(mask)
