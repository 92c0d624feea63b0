"""No full-vocabulary array where a few columns are read: the sampler's prefill applies the LM
head to the last prompt column only, and the token losses (SFT, PPO-ptx, the RM's LM term, DPO,
RL scoring) read the target's log-probability without a shifted copy of the logits or a
[B, T, V] log-softmax, with the same values as the full log-softmax, bit for bit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import losses
from rlhf_jax.models import ModelConfig, forward, init_params
from rlhf_jax.rl.rollout import response_outputs
from rlhf_jax.sampling import SamplingConfig, generate, left_pad

CFG = ModelConfig(vocab_size=97, hidden=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_dim=64, max_seq_len=64)


def _shapes(jaxpr):
  """Every intermediate's shape in `jaxpr` and the jaxprs nested in it (jit, scan, while)."""
  out = []
  for eqn in jaxpr.eqns:
    out += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")]
    for p in eqn.params.values():
      for sub in p if isinstance(p, (tuple, list)) else (p,):
        sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(sub, "eqns"):
          out += _shapes(sub)
  return out


def _params(cfg, seed=0):
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def test_generate_prefill_builds_no_prompt_by_vocabulary_logits():
  params = _params(CFG)
  tokens, mask = left_pad([[5, 6, 7], [8, 9, 10, 11, 12, 13, 14]], pad_id=0)
  b, p, v = *tokens.shape, CFG.vocab_size
  run = functools.partial(generate, model_cfg=CFG, cfg=SamplingConfig(max_new_tokens=3),
                          eos_id=1, pad_id=0)
  shapes = _shapes(jax.make_jaxpr(run)(params, tokens, mask, jax.random.PRNGKey(0)).jaxpr)
  assert (b, 1, v) in shapes  # the LM head ran (decode steps and the prefill's last column)
  assert (b, p, v) not in shapes


def _old_next_token_logprobs(logits_BxTxV, tokens_BxT):
  logp = jax.nn.log_softmax(logits_BxTxV[:, :-1].astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], axis=-1)[..., 0]


def test_next_token_logprobs_equal_the_full_log_softmax_bitwise():
  rng = np.random.default_rng(0)
  for shape, dtype in [((3, 7, 11), np.float32), ((2, 9, 1000), jnp.bfloat16)]:
    logits = (4.0 * rng.standard_normal(shape)).astype(dtype)
    tokens = rng.integers(0, shape[-1], shape[:2])
    new = losses.next_token_logprobs(logits, tokens)
    np.testing.assert_array_equal(new, _old_next_token_logprobs(logits, tokens))
    np.testing.assert_array_equal(jax.jit(losses.next_token_logprobs)(logits, tokens), new)


def test_the_token_loss_and_its_gradient_hold_no_vocabulary_sized_temporaries():
  b, t, v = 2, 16, 4096
  args = (jax.ShapeDtypeStruct((b, t, v), jnp.float32), jax.ShapeDtypeStruct((b, t), jnp.int32),
          jax.ShapeDtypeStruct((b, t), jnp.bool_))

  def loss(logits, tokens, mask):
    total, count = losses.masked_nll(logits, tokens, mask)
    return total / count
  one_logits_array = b * t * v * 4
  for fn in (loss, jax.grad(loss)):  # before: a shifted copy and a log-softmax, 2 arrays each
    temps = jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert temps < one_logits_array / 4, temps


def test_scoring_logprobs_equal_those_read_beside_the_entropy():
  params = _params(CFG, 1)
  prompt, pmask = left_pad([[5, 6, 7], [8, 9, 10, 11]], pad_id=0)
  resp = np.array([[20, 21, 22], [23, 24, 0]], np.int32)
  tokens = np.concatenate([prompt, resp], axis=1)
  mask = np.concatenate([pmask, resp > 0], axis=1)
  score = jax.jit(response_outputs, static_argnums=(0, 4, 5, 6, 7))
  plain = score(CFG, params, tokens, mask, prompt.shape[1], 0.7, "lm", False)
  full = score(CFG, params, tokens, mask, prompt.shape[1], 0.7, "lm", True)
  np.testing.assert_array_equal(plain["logprobs"], full["logprobs"])


def test_dpo_sequence_logps_equal_the_full_log_softmax_sum():
  from rlhf_jax.dpo.steps import sequence_logps  # pylint: disable=g-import-not-at-top
  params = _params(CFG, 2)
  rng = np.random.default_rng(2)
  tokens = rng.integers(1, CFG.vocab_size, (2, 2, 9)).astype(np.int32)
  mask = np.ones_like(tokens, bool)
  resp = np.zeros_like(mask)
  resp[..., 4:] = True
  got = jax.jit(sequence_logps, static_argnums=(1,))(params, CFG, tokens, mask, resp)
  flat = tokens.reshape(4, 9)
  logits = forward(CFG, params, flat, mask.reshape(4, 9))["logits"]
  old = _old_next_token_logprobs(logits, flat)
  want = jnp.sum(jnp.where(resp.reshape(4, 9)[:, 1:], old, 0.0), axis=-1).reshape(2, 2)
  np.testing.assert_allclose(got, want, rtol=1e-6)
