"""The LM head's log-probability of chosen tokens, `model.logits_chunk` positions at a time.

At a 150K-token vocabulary the float32 logits [B, T, V] are the largest arrays of a scoring or
training program: 9.3 GiB per model at B = 64 rows of T = 256 response tokens (qwen05b), and the
backward pass keeps them. With `logits_chunk = C > 0` the head runs over C positions at a time
inside a `lax.map`: each chunk's log-probs are reduced from its [B, C, V] logits, which are then
dropped, and the backward pass recomputes one chunk's logits at a time (`jax.checkpoint`) instead
of keeping all of them. C = 0 (the default) computes the whole [B, T, V] at once. Both give the
same values up to float rounding (each logit is the same dot product; tests/test_chunked_head.py).
`forward_next_token_logprobs` and `forward_masked_nll` are the model's forward pass plus the loss,
as the SFT, DPO and PPO-ptx losses call them: through the model's [B, T, V] logits when C = 0
(the code path the stages always had), through the hidden states and the chunks otherwise.
Not for: sampling (the decode step reads one position), or heads other than the LM head (the
reward model's LM regulariser keeps the whole logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax import losses
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import forward, lm_logits


def _over_chunks(cfg: ModelConfig, fn, hidden_BxTxD, targets_BxT):
  """fn(hidden [B, C, D], targets [B, C]) -> a tuple of [B, C] arrays, applied to all T
  positions at once (logits_chunk 0, or T <= C) or C at a time, each chunk recomputed in the
  backward pass; the results are [B, T] each."""
  c, (b, t, d) = cfg.logits_chunk, hidden_BxTxD.shape
  if not c or t <= c:
    return fn(hidden_BxTxD, targets_BxT)
  n = -(-t // c)  # chunks; the last is padded with copies of position 0, then dropped
  h = jnp.pad(hidden_BxTxD, ((0, 0), (0, n * c - t), (0, 0)))
  tok = jnp.pad(targets_BxT, ((0, 0), (0, n * c - t)))
  h_NxBxCxD = h.reshape(b, n, c, d).swapaxes(0, 1)
  tok_NxBxC = tok.reshape(b, n, c).swapaxes(0, 1)
  outs = jax.lax.map(jax.checkpoint(lambda xs: fn(*xs)), (h_NxBxCxD, tok_NxBxC))
  return tuple(o_NxBxC.swapaxes(0, 1).reshape(b, n * c)[:, :t] for o_NxBxC in outs)


def token_logprobs(cfg: ModelConfig, params, hidden_BxTxD, targets_BxT, temperature=1.0):
  """log_softmax(lm_head(hidden) / temperature)[b, t, targets[b, t]]: [B, T] float32."""
  def one(h_BxCxD, tok_BxC):
    return (losses.token_logprobs(lm_logits(cfg, params, h_BxCxD) / temperature, tok_BxC),)
  return _over_chunks(cfg, one, hidden_BxTxD, targets_BxT)[0]


def logprobs_and_entropy(cfg: ModelConfig, params, hidden_BxTxD, targets_BxT, temperature=1.0):
  """([B, T] log-probs of `targets`, [B, T] entropy) of softmax(lm_head(hidden) / temperature),
  from one log-softmax per position (the RL update's policy loss and entropy bonus)."""
  def one(h_BxCxD, tok_BxC):
    logp_all = jax.nn.log_softmax(lm_logits(cfg, params, h_BxCxD) / temperature, axis=-1)
    return (jnp.take_along_axis(logp_all, tok_BxC[..., None], axis=-1)[..., 0],
            -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1))
  return _over_chunks(cfg, one, hidden_BxTxD, targets_BxT)


def next_token_logprobs(cfg: ModelConfig, params, hidden_BxTxD, tokens_BxT):
  """log p(tokens[t+1] | tokens[:t+1]) for t < T-1: [B, T-1] float32 (`losses.next_token_logprobs`
  from hidden states)."""
  return token_logprobs(cfg, params, hidden_BxTxD,
                        losses.next_token_targets(tokens_BxT))[:, :-1]


def forward_next_token_logprobs(cfg: ModelConfig, params, tokens_BxT, attention_mask_BxT,
                                heads: str = "lm"):
  """[B, T-1] float32: the forward pass, then `next_token_logprobs`."""
  if not cfg.logits_chunk:
    logits = forward(cfg, params, tokens_BxT, attention_mask_BxT, outputs=("logits",),
                     heads=heads)["logits"]
    return losses.next_token_logprobs(logits, tokens_BxT)
  hidden = forward(cfg, params, tokens_BxT, attention_mask_BxT, outputs=("hidden",),
                   heads=heads)["hidden"]
  return next_token_logprobs(cfg, params, hidden, tokens_BxT)


def forward_masked_nll(cfg: ModelConfig, params, tokens_BxT, attention_mask_BxT, loss_mask_BxT,
                       heads: str = "lm"):
  """(sum of -log p over target tokens, their count): `losses.masked_nll`'s arithmetic over
  `forward_next_token_logprobs`."""
  return losses.nll_sums(forward_next_token_logprobs(cfg, params, tokens_BxT,
                                                     attention_mask_BxT, heads), loss_mask_BxT)
