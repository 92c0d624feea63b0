"""`model.logits_chunk`: the LM head's token log-probs C positions at a time give NumPy's
log-softmax values and the unchunked path's gradients, on uneven chunk counts, and a train step's
XLA temporaries no longer hold the [B, T, V] logits; the RL scoring pass and a DPO step agree
with the unchunked ones."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.errors import ConfigError
from rlhf_jax.models import ModelConfig, chunked_head, forward, init_params
from rlhf_jax.rl.rollout import response_outputs

CFG = ModelConfig(vocab_size=512, hidden=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_dim=64, max_seq_len=64, tie_embeddings=False)


def _chunked(c):
  return dataclasses.replace(CFG, logits_chunk=c)


def _batch(b=3, t=11, seed=0):
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(1, CFG.vocab_size, (b, t)), jnp.int32)
  mask = jnp.asarray(np.arange(t)[None, :] >= rng.integers(0, 3, (b, 1)))  # left padding
  return tokens, mask


def _numpy_logprobs(logits, targets):
  x = np.asarray(logits, np.float64)
  x = x - x.max(-1, keepdims=True)
  logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
  return np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]


@pytest.fixture(scope="module")
def scored():
  """(params, hidden [B, T, D], the whole logits [B, T, V], next-token targets), T = 11."""
  params = init_params(CFG, jax.random.PRNGKey(0))
  tokens, mask = _batch()
  out = jax.jit(lambda p: forward(CFG, p, tokens, mask, outputs=("hidden", "logits")))(params)
  return params, out["hidden"], out["logits"], jnp.roll(tokens, -1, axis=1)


@pytest.mark.parametrize("chunk", [0, 3, 16])  # 11 positions: 4 chunks of 3, the last padded
def test_token_logprobs_equal_numpy_log_softmax(scored, chunk):
  params, hidden, logits, targets = scored
  got = chunked_head.token_logprobs(_chunked(chunk), params, hidden, targets, 0.7)
  np.testing.assert_allclose(np.asarray(got), _numpy_logprobs(logits / 0.7, targets),
                             rtol=1e-5, atol=1e-5)


def test_chunked_loss_and_gradients_equal_the_whole_logits():
  params = init_params(CFG, jax.random.PRNGKey(1))
  tokens, mask = _batch(4, 13, seed=1)
  loss_mask = mask & (jnp.arange(13)[None, :] > 5)

  @jax.jit
  def loss_and_grads(p):
    def loss(p, cfg):
      total, count = chunked_head.forward_masked_nll(cfg, p, tokens, mask, loss_mask)
      return total / count
    return [jax.value_and_grad(loss)(p, c) for c in (CFG, _chunked(4))]

  (a, ga), (b, gb) = loss_and_grads(params)
  np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), ga, gb)


def test_a_train_steps_temporaries_drop_the_whole_logits():
  cfg = ModelConfig(vocab_size=16384, hidden=32, num_layers=1, num_heads=4, num_kv_heads=2,
                    mlp_dim=64, max_seq_len=256, tie_embeddings=False)
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  tok = jax.ShapeDtypeStruct((4, 256), jnp.int32)
  msk = jax.ShapeDtypeStruct((4, 256), bool)

  def temps(c):
    chunked = dataclasses.replace(cfg, logits_chunk=c)
    grad = jax.jit(jax.grad(lambda p, t, m: chunked_head.forward_masked_nll(
        chunked, p, t, m, m)[0]))
    return grad.lower(params, tok, msk).compile().memory_analysis().temp_size_in_bytes

  whole = 4 * 256 * 16384 * 4  # one [B, T, V] float32 array: 64 MiB
  assert temps(0) > 2 * whole  # the logits and their gradient (143 MiB measured)
  assert temps(16) < whole / 2  # 16 positions' logits at a time (25 MiB measured)


def test_rl_scoring_and_dpo_agree_with_the_whole_logits():
  from rlhf_jax.dpo.steps import sequence_logps  # pylint: disable=g-import-not-at-top
  params = init_params(CFG, jax.random.PRNGKey(2))
  tokens, mask = _batch(4, 20, seed=2)
  resp = jnp.broadcast_to(jnp.arange(20) >= 8, (2, 2, 20))
  toks, msk = tokens.reshape(2, 2, 20), mask.reshape(2, 2, 20)

  @jax.jit
  def both(p):
    return [(response_outputs(c, p, tokens, mask, 8, 0.9)["logprobs"],
             response_outputs(c, p, tokens, mask, 8, 0.9, want_entropy=True),
             sequence_logps(p, c, toks, msk, resp)) for c in (CFG, _chunked(5))]

  (rl_a, upd_a, dpo_a), (rl_b, upd_b, dpo_b) = both(params)
  np.testing.assert_allclose(np.asarray(rl_a), np.asarray(rl_b), rtol=1e-5, atol=1e-6)
  for k in ("logprobs", "entropy"):  # the update's pass: 12 positions, chunks of 5
    np.testing.assert_allclose(np.asarray(upd_a[k]), np.asarray(upd_b[k]), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(upd_a["logprobs"]), np.asarray(rl_a), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(dpo_a), np.asarray(dpo_b), rtol=1e-5)


def test_a_negative_chunk_is_refused():
  with pytest.raises(ConfigError, match="model.logits_chunk=-1: must be >= 0"):
    _chunked(-1)
