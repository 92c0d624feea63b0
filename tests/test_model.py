"""Model equivalences: cached decode = full forward, remat/scan/unscanned agree, sampling agrees
with a naive loop and with teacher forcing, losses and RoPE against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import losses
from rlhf_jax.models import Decoder, KVCache, ModelConfig, PRESETS, forward, init_params
from rlhf_jax.models.layers import rope_inverse_frequencies
from rlhf_jax.sampling import SamplingConfig, compute_copy, generate, left_pad

LLAMA = ModelConfig(vocab_size=97, hidden=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    mlp_dim=64, max_seq_len=64)
GPT2 = LLAMA.replace(norm="layer", position="learned", mlp="gelu", qkv_bias=True, out_bias=True,
                     mlp_bias=True, tie_embeddings=True, num_kv_heads=4)
CONFIGS = {"llama_gqa": LLAMA, "gpt2": GPT2,
           "qwen_like": LLAMA.replace(qkv_bias=True, tie_embeddings=True)}


def _perturb(params, seed=0):
  # Random init has zero biases and unit norms; perturb everything so each parameter matters.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def _unstacked(params, cfg):
  layers = params.pop("layers")
  for i in range(cfg.num_layers):
    params[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], layers)
  return params


@pytest.mark.parametrize("scan", [True, False])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_cached_decode_equals_full_forward_with_left_padding(name, scan):
  # Unrolled, each layer writes its slots of the every-layer cache in place (the sampler's
  # decode loop, `unroll_decode`); scanned, the scan hands each layer its own slice.
  cfg = CONFIGS[name].replace(scan_layers=scan)
  params = _perturb(init_params(CONFIGS[name], jax.random.key(0)))
  if not scan:
    params = _unstacked(params, cfg)
  tokens, mask = left_pad([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15]], pad_id=0)
  full = forward(cfg, params, tokens, mask)["logits"]
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  cache = KVCache.init(cfg, 2, 12)
  model = Decoder(cfg)
  out, cache = model.apply({"params": params}, tokens[:, :4], mask[:, :4], positions[:, :4], cache)
  steps = [out["logits"]]
  for t in range(4, 7):
    out, cache = model.apply({"params": params}, tokens[:, t:t + 1], mask[:, t:t + 1],
                             positions[:, t:t + 1], cache)
    steps.append(out["logits"])
  cached = jnp.concatenate(steps, axis=1)
  np.testing.assert_allclose(np.where(mask[..., None], cached, 0),
                             np.where(mask[..., None], full, 0), atol=1e-5)
  assert int(cache.index) == 7


def test_left_padding_does_not_change_logits():
  params = _perturb(init_params(LLAMA, jax.random.key(1)))
  ids = [3, 4, 5, 6, 7]
  alone = forward(LLAMA, params, jnp.array([ids]), jnp.ones((1, 5), bool))["logits"][0]
  tokens, mask = left_pad([ids, [8, 9, 10, 11, 12, 13, 14, 15]], pad_id=0)
  padded = forward(LLAMA, params, tokens, mask)["logits"][0, -5:]
  np.testing.assert_allclose(padded, alone, atol=1e-5)


@pytest.mark.parametrize("variant", [dict(remat="full"), dict(remat="dots_no_batch"),
                                     dict(scan_layers=False)])
def test_remat_and_unscanned_layers_give_same_loss_and_grads(variant):
  cfg = LLAMA.replace(**variant)
  params = _perturb(init_params(LLAMA, jax.random.key(2)))
  if not cfg.scan_layers:
    params = _unstacked(params, cfg)
  tokens = jax.random.randint(jax.random.key(3), (2, 16), 0, cfg.vocab_size)
  mask = jnp.ones_like(tokens, bool)

  def loss(p, c):
    logits = forward(c, p, tokens, mask)["logits"]
    total, count = losses.masked_nll(logits, tokens, mask)
    return total / count

  base_params = params if cfg.scan_layers else _perturb(init_params(LLAMA, jax.random.key(2)))
  l0, g0 = jax.value_and_grad(loss)(base_params, LLAMA)
  l1, g1 = jax.value_and_grad(loss)(params, cfg)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  if cfg.scan_layers:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g0)
  else:
    np.testing.assert_allclose(g1["layer_1"]["mlp"]["up_kernel"],
                               g0["layers"]["mlp"]["up_kernel"][1], atol=1e-6)


def test_score_head_reads_every_position():
  params = init_params(LLAMA, jax.random.key(0), heads="lm+score")
  tokens = jnp.arange(12).reshape(2, 6)
  out = forward(LLAMA, params, tokens, jnp.ones_like(tokens, bool), outputs=("scores", "hidden"),
                heads="lm+score")
  assert out["scores"].shape == (2, 6)
  expect = out["hidden"] @ params["score_kernel"][:, 0] + params["score_bias"][0]
  np.testing.assert_allclose(out["scores"], expect, atol=1e-5)


@pytest.mark.slow  # 42 s; the default suite keeps the cached decode = full forward and the
# sampled = teacher-forced log-prob tests of the same sampler (the suite under 30 min)
def test_greedy_sampling_equals_naive_no_cache_loop():
  cfg = LLAMA
  params = _perturb(init_params(cfg, jax.random.key(4)))
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12]]
  tokens, mask = left_pad(prompts, pad_id=0)
  n = 10
  out = generate(params, tokens, mask, jax.random.PRNGKey(0), model_cfg=cfg,
                 cfg=SamplingConfig(max_new_tokens=n, temperature=0.0), eos_id=-1, pad_id=0)
  for row, prompt in enumerate(prompts):
    seq = list(prompt)
    for _ in range(n):
      logits = forward(cfg, params, jnp.array([seq]), jnp.ones((1, len(seq)), bool))["logits"]
      seq.append(int(jnp.argmax(logits[0, -1])))
    assert list(np.asarray(out["tokens"][row])) == seq[len(prompt):]


def test_sampled_logprobs_equal_teacher_forced_and_eos_stops():
  cfg = LLAMA
  params = _perturb(init_params(cfg, jax.random.key(5)))
  prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [20]]
  tokens, mask = left_pad(prompts, pad_id=0)
  temp, eos = 0.7, 3
  out = generate(params, tokens, mask, jax.random.PRNGKey(1), model_cfg=cfg,
                 cfg=SamplingConfig(max_new_tokens=12, temperature=temp), eos_id=eos, pad_id=0)
  toks, rmask, logp = (np.asarray(out[k]) for k in ("tokens", "mask", "logprobs"))
  for row, prompt in enumerate(prompts):
    n = int(rmask[row].sum())
    gen = list(toks[row, :n])
    # The mask covers generated tokens up to and including the first EOS.
    assert eos not in gen[:-1]
    assert (gen[-1] == eos) or n == 12
    seq = jnp.array([prompt + gen])
    logits = forward(cfg, params, seq, jnp.ones_like(seq, bool))["logits"] / temp
    lp = jax.nn.log_softmax(logits[0, len(prompt) - 1:-1], axis=-1)
    tf = np.asarray(jnp.take_along_axis(lp, jnp.array(gen)[:, None], axis=-1)[:, 0])
    np.testing.assert_allclose(logp[row, :n], tf, atol=1e-5)
    assert np.all(logp[row, n:] == 0) and np.all(toks[row, n:] == 0)


def test_masked_nll_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 7, 11)).astype(np.float32)
  tokens = rng.integers(0, 11, size=(3, 7))
  mask = rng.random((3, 7)) > 0.4
  total, count = losses.masked_nll(jnp.array(logits), jnp.array(tokens), jnp.array(mask))
  ref, n = 0.0, 0
  for b in range(3):
    for t in range(1, 7):
      if mask[b, t]:
        z = logits[b, t - 1]
        ref += np.log(np.exp(z - z.max()).sum()) + z.max() - z[tokens[b, t]]
        n += 1
  np.testing.assert_allclose(total, ref, rtol=1e-5)
  assert count == n


def test_llama3_rope_scaling_matches_numpy():
  cfg = LLAMA.replace(head_dim=64, rope_theta=500000.0,
                      rope_llama3_scaling=(32.0, 1.0, 4.0, 8192))
  got = np.asarray(rope_inverse_frequencies(cfg))
  inv = 1.0 / (500000.0 ** (np.arange(0, 64, 2) / 64))
  ref = []
  for f in inv:
    wl = 2 * np.pi / f
    if wl < 8192 / 4.0:
      ref.append(f)
    elif wl > 8192 / 1.0:
      ref.append(f / 32.0)
    else:
      s = (8192 / wl - 1.0) / (4.0 - 1.0)
      ref.append((1 - s) * f / 32.0 + s * f)
  np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_config_errors_name_the_field():
  from rlhf_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="num_kv_heads"):
    ModelConfig(num_heads=4, num_kv_heads=3)
  with pytest.raises(ConfigError, match="hiddn"):
    ModelConfig.from_dict({"hiddn": 3})
  with pytest.raises(ConfigError, match="preset"):
    ModelConfig.from_dict({"preset": "nope"})
  assert ModelConfig.from_dict({"preset": "qwen05b"}).num_kv_heads == 2


def test_param_count_matches_tree():
  for cfg in list(CONFIGS.values()) + [PRESETS["tiny"]]:
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert n == cfg.num_params(), cfg


def test_sequence_longer_than_the_model_is_refused():
  from rlhf_jax.errors import ShapeError
  params = init_params(LLAMA, jax.random.key(0))
  tokens = jnp.zeros((1, LLAMA.max_seq_len + 1), jnp.int32)
  with pytest.raises(ShapeError, match="max_seq_len=64"):
    forward(LLAMA, params, tokens, jnp.ones_like(tokens, bool))
  t, m = left_pad([[1] * 60], 0)
  with pytest.raises(ShapeError, match="longer than the model"):
    generate(params, t, m, jax.random.PRNGKey(0), model_cfg=LLAMA,
             cfg=SamplingConfig(max_new_tokens=8), eos_id=2, pad_id=0)


def test_bf16_compute_keeps_fp32_params_and_tracks_fp32_logits():
  cfg16 = LLAMA.replace(dtype="bfloat16")
  params = _perturb(init_params(cfg16, jax.random.key(7)))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  tokens = jax.random.randint(jax.random.key(8), (2, 12), 0, LLAMA.vocab_size)
  mask = jnp.ones_like(tokens, bool)
  lo = forward(cfg16, params, tokens, mask)["logits"]
  hi = forward(LLAMA, params, tokens, mask)["logits"]
  assert lo.dtype == jnp.float32  # logits accumulate in float32 whatever the compute dtype
  assert float(jnp.max(jnp.abs(lo - hi))) < 0.1
  assert float(jnp.max(jnp.abs(lo - hi))) > 0  # bf16 really was used


_MATRIX_SUFFIXES = ("_kernel", "_lora_a", "_lora_b")  # and the embedding tables, the LM head


def _read_in_compute_dtype(path):
  """Whether the forward casts this leaf to the compute dtype at its every use: the weight
  matrices, by their names (not norm scales and biases, which the norms use in float32, nor the
  score head, computed in float32)."""
  name = str(path[-1].key)
  return (name.endswith(_MATRIX_SUFFIXES) or name in ("embed", "pos_embed", "lm_head")) \
      and not name.startswith("score")


@pytest.mark.parametrize("scan", [True, False])
def test_compute_copy_changes_no_value_the_model_computes_with(scan):
  # A sampler casts the fp32 master weights to bf16 once; the forward casts each matrix at its
  # use anyway. So the copy computes exactly what the master weights with their matrices
  # rounded to bf16 compute. Under scan_layers the norm scales and biases are [L, D]: rank says
  # "matrix", but the norms compute with them in float32, so the copy keeps them (issue 14).
  # (Not bitwise what the fp32 master weights compute on the CPU: XLA's excess-precision
  # rewrite there may drop an f32 -> bf16 -> f32 round trip and multiply unrounded weights.)
  def rounded(path, x):
    return x.astype(jnp.bfloat16).astype(jnp.float32) if _read_in_compute_dtype(path) else x

  for base in (LLAMA, GPT2):
    cfg = base.replace(dtype="bfloat16", scan_layers=scan, lora_rank=0 if scan else 2)
    params = _perturb(init_params(cfg, jax.random.key(3), heads="lm+score"))
    copy = compute_copy(params, cfg)
    leaves = jax.tree_util.tree_leaves_with_path(copy)
    masters = jax.tree.leaves(params)
    for (p, x), master in zip(leaves, masters):
      if _read_in_compute_dtype(p):
        assert x.dtype == jnp.bfloat16, jax.tree_util.keystr(p)
      else:  # norm gains, biases, the score head: the master values, bitwise
        assert x.dtype == jnp.float32, jax.tree_util.keystr(p)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(master))
    assert any("norm" in jax.tree_util.keystr(p) and x.ndim == 2 for p, x in leaves) == scan
    if not scan:
      continue  # the forwards below are the scanned model's (the one issue 14 is about)
    tokens = jax.random.randint(jax.random.key(4), (2, 9), 0, cfg.vocab_size)
    mask = jnp.ones_like(tokens, bool)
    a = forward(cfg, jax.tree_util.tree_map_with_path(rounded, params), tokens, mask,
                heads="lm+score")
    b = forward(cfg, copy, tokens, mask, heads="lm+score")
    c = forward(cfg, params, tokens, mask, heads="lm+score")
    for k in ("logits", "scores"):
      np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
      np.testing.assert_allclose(np.asarray(b[k]), np.asarray(c[k]), atol=0.05)
  assert compute_copy(params, LLAMA) is params  # fp32 compute: nothing to cast


# gpt2 in the slow set: test_rl_stage's sampler-trainer check runs the unrolled decode at both
# families in bf16 by default.
@pytest.mark.parametrize("name", ["llama_gqa", pytest.param("gpt2", marks=pytest.mark.slow)])
def test_unrolled_decode_samples_what_the_scanned_decode_samples(name):
  # The sampler cuts the scanned stack into per-layer weights once and unrolls its decode loop
  # (`unroll_decode`, issue 18): from left-padded prompts, the same tokens, and the same
  # log-probs up to float rounding (XLA fuses the unrolled layers' ops differently: 1 ulp).
  tokens, mask = left_pad([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], [3]], pad_id=0)
  sc = SamplingConfig(max_new_tokens=12, temperature=1.0)
  for dtype in ("float32", "bfloat16"):
    cfg = CONFIGS[name].replace(dtype=dtype)
    params = _perturb(init_params(cfg, jax.random.key(7)))
    out = {u: generate(params, tokens, mask, jax.random.key(8), model_cfg=cfg.replace(
        unroll_decode=u), cfg=sc, eos_id=-1, pad_id=0) for u in (True, False)}
    np.testing.assert_array_equal(out[True]["tokens"], out[False]["tokens"])
    np.testing.assert_array_equal(out[True]["mask"], out[False]["mask"])
    np.testing.assert_allclose(out[True]["logprobs"], out[False]["logprobs"],
                               atol=1e-5 if dtype == "float32" else 2e-2)


def test_flops_per_token_counts_the_tied_lm_head():
  tied = LLAMA.replace(tie_embeddings=True)
  untied = LLAMA.replace(tie_embeddings=False)
  head = 6 * LLAMA.vocab_size * LLAMA.hidden
  assert tied.flops_per_token(16) == pytest.approx(untied.flops_per_token(16))
  assert tied.flops_per_token(16) - tied.flops_per_token(16, lm_head=False) == head
  assert untied.flops_per_token(16) - untied.flops_per_token(16, lm_head=False) == head
