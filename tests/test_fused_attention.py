"""The attention kernels agree: jax.nn.dot_product_attention ("xla") against the written-out
einsum, at both model families (Llama-style RoPE with grouped-query heads, GPT-2-style), with
left padding (query rows with no valid key), through the KV cache (a fused prefill, a fused
second chunk, then einsum decode steps = one full forward), in bf16, and in the kernels'
gradients. Plus the switch itself: validation, "auto" off a GPU, "cudnn" refused off a GPU, and
the field surviving HF and workdir loading as a runtime override.

Measured on CPU (jax 0.10.2): the two kernels give bitwise-equal logits and gradients in fp32
and in bf16 (XLA compiles them to the same arithmetic); bf16 against the fp32 einsum differs
by 8.6e-3 (Llama-style) and 7.2e-3 (GPT-2-style) at logits of order 1. Bounds: 1e-5 (fp32),
2e-2 (bf16, both comparisons), for kernels that round differently (cuDNN's on a GPU)."""

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import ml_collections as mc
import numpy as np
import pytest

from rlhf_jax import config_base
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import Decoder, KVCache, ModelConfig, forward, init_params
from rlhf_jax.models import attention as attn_lib
from rlhf_jax.sampling import left_pad

LLAMA = ModelConfig(vocab_size=97, hidden=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    mlp_dim=64, max_seq_len=64)
GPT2 = LLAMA.replace(norm="layer", position="learned", mlp="gelu", qkv_bias=True, out_bias=True,
                     mlp_bias=True, tie_embeddings=True, num_kv_heads=4)
FAMILIES = {"llama_gqa": LLAMA, "gpt2": GPT2}
PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12], [13, 14, 15], [16, 17, 18, 19, 20, 21]]
FP32_TOL = 1e-5
BF16_TOL = 2e-2  # logits of order 1; bf16 keeps 8 bits of mantissa


def _params(cfg, seed):
  """Random params drawn on the host (no compile): norm scales near 1, everything else near 0
  but nonzero, so every parameter matters."""
  shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    base = 1.0 if jax.tree_util.keystr(path[-1:]).endswith("'scale']") else 0.0
    return (base + 0.05 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, shapes)


_forward = jax.jit(forward, static_argnums=(0,))


def _maxdiff(a, b):
  return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))


@pytest.fixture(name="spy")
def _spy(monkeypatch):
  """Counts traced calls of the fused kernel, to prove a test ran it."""
  calls = []
  real = attn_lib.fused_attention
  jax.clear_caches()  # a jitted program compiled by another test would not trace again

  def counted(*args, **kw):
    calls.append(args[4])
    return real(*args, **kw)
  monkeypatch.setattr(attn_lib, "fused_attention", counted)
  return calls


@pytest.mark.parametrize("dtype,tol", [("float32", FP32_TOL), ("bfloat16", BF16_TOL)])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fused_forward_equals_einsum_with_left_padding(family, dtype, tol, spy):
  cfg = FAMILIES[family].replace(dtype=dtype)
  params = _params(cfg, 0)
  tokens, mask = left_pad(PROMPTS, pad_id=0)
  spy.clear()  # drawing the params traced the default kernel
  ref = _forward(cfg.replace(attention="einsum"), params, tokens, mask)["logits"]
  assert not spy
  fused = _forward(cfg.replace(attention="xla"), params, tokens, mask)["logits"]
  assert spy and set(spy) == {"xla"}
  # Every position, padding rows included: both kernels floor masked scores, so a query with
  # no valid key averages the values in both, finitely.
  assert np.all(np.isfinite(fused))
  assert _maxdiff(fused, ref) <= tol
  if dtype != "float32":  # and bf16 stays as close to the fp32 einsum as bf16 allows (~9e-3)
    exact = _forward(cfg.replace(attention="einsum", dtype="float32"), params, tokens, mask)
    assert _maxdiff(fused, exact["logits"]) <= tol


def test_a_row_of_padding_only_stays_finite():
  cfg = LLAMA.replace(attention="xla")
  params = _params(cfg, 1)
  tokens = jnp.array([[0, 0, 0, 0], [3, 4, 5, 6]])
  mask = jnp.array([[False] * 4, [True] * 4])
  fused = _forward(cfg, params, tokens, mask)["logits"]
  ref = _forward(cfg.replace(attention="einsum"), params, tokens, mask)["logits"]
  assert np.all(np.isfinite(fused))
  assert _maxdiff(fused, ref) <= FP32_TOL


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fused_prefill_then_decode_equals_full_forward(family, spy):
  cfg = FAMILIES[family]
  params = _params(cfg, 2)
  tokens, mask = left_pad(PROMPTS, pad_id=0)
  t = tokens.shape[1]
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
  full = _forward(cfg.replace(attention="einsum"), params, tokens, mask)["logits"]

  apply = jax.jit(Decoder(cfg.replace(attention="xla")).apply)
  spy.clear()  # drawing the params traced the default kernel
  cache = KVCache.init(cfg, len(PROMPTS), t + 4)
  steps = []
  # A prefill at slot 0, a second chunk at slot 4 (both fused: the slot mask with an offset),
  # then one token at a time (the einsum decode step).
  fused_calls = []
  for lo, hi in [(0, 4), (4, 6)] + [(i, i + 1) for i in range(6, t)]:
    out, cache = apply({"params": params}, tokens[:, lo:hi], mask[:, lo:hi],
                             positions[:, lo:hi], cache)
    steps.append(out["logits"])
    fused_calls.append(len(spy))
  assert 0 < fused_calls[0] < fused_calls[1] == fused_calls[-1]  # the chunks, not the decode
  cached = jnp.concatenate(steps, axis=1)
  real = mask[..., None]
  assert _maxdiff(jnp.where(real, cached, 0), jnp.where(real, full, 0)) <= FP32_TOL


@pytest.mark.parametrize("kv_heads", [2, 4])  # grouped-query (Llama) and multi-head (GPT-2)
def test_fused_gradients_equal_einsum(kv_heads):
  b, t, n, dh = 3, 8, 4, 8
  rng = np.random.default_rng(3)
  q, k, v, w = (rng.standard_normal(s).astype(np.float32)
                for s in ((b, t, n, dh), (b, t, kv_heads, dh), (b, t, kv_heads, dh), (b, t, n, dh)))
  _, pad = left_pad(PROMPTS, pad_id=0)
  mask = np.tril(np.ones((t, t), bool))[None] & pad[:, None, :]

  def loss(q, k, v, kind):
    out = attn_lib.attend(kind, q, k, v, mask, decode=False, causal=True)
    return jnp.sum(out * w)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=(3,))
  worst = max(map(_maxdiff, grad(q, k, v, "xla"), grad(q, k, v, "einsum")))
  assert worst <= FP32_TOL


def test_the_switch_is_checked_and_resolved():
  with pytest.raises(ConfigError, match="model.attention"):
    LLAMA.replace(attention="flash")
  with pytest.raises(ConfigError, match="model.attention.*dtype"):
    LLAMA.replace(attention="cudnn")  # float32 compute
  with pytest.raises(ConfigError, match="model.attention.*head dimension"):
    LLAMA.replace(attention="cudnn", dtype="bfloat16", hidden=36, num_heads=4, num_kv_heads=2)
  assert ModelConfig().attention == "auto"
  cpu = jax.default_backend() != "gpu"
  if cpu:
    assert attn_lib.resolve("auto", "bfloat16", 64, 8, 8, decode=False) == "xla"
  assert attn_lib.resolve("xla", "float32", 8, 8, 8, decode=True) == "einsum"
  assert attn_lib.resolve("einsum", "float32", 8, 8, 8, decode=False) == "einsum"


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="cuDNN exists on a GPU")
def test_cudnn_off_a_gpu_is_one_config_error():
  cfg = LLAMA.replace(attention="cudnn", dtype="bfloat16")
  params = _params(cfg.replace(attention="einsum"), 0)
  tokens = jnp.ones((1, 4), jnp.int32)
  with pytest.raises(ConfigError, match="needs a GPU"):
    forward(cfg, params, tokens, jnp.ones_like(tokens, bool))


def _config(**model):
  c = mc.ConfigDict({"init": config_base.init_section(), "model": config_base.model_section(),
                     "mesh": config_base.mesh_section(), "seed": 0, "data": {"max_len": 16}})
  c.model.update(model)
  return c


def test_attention_is_a_runtime_override_of_a_workdir_model(tmp_path):
  from rlhf_jax.workdir_model import load_workdir_params  # pylint: disable=g-import-not-at-top
  saved = dataclasses.asdict(LLAMA.replace(attention="einsum"))
  (tmp_path / "model.json").write_text(json.dumps({"model": saved, "heads": "lm"}))
  cfg, _ = load_workdir_params(str(tmp_path), _config(attention="xla"), load_params=False)
  assert cfg.attention == "xla" and cfg.hidden == LLAMA.hidden
  cfg, _ = load_workdir_params(str(tmp_path), _config(), load_params=False)
  assert cfg.attention == "einsum"
  del saved["attention"]  # a model.json written before the switch existed
  (tmp_path / "model.json").write_text(json.dumps({"model": saved, "heads": "lm"}))
  cfg, _ = load_workdir_params(str(tmp_path), _config(), load_params=False)
  assert cfg.attention == "auto"


def test_attention_is_a_runtime_override_of_an_hf_checkpoint(tmp_path):
  from rlhf_jax.models import hf  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import model_init  # pylint: disable=g-import-not-at-top
  params = _params(LLAMA, 4)
  hf.save_checkpoint(str(tmp_path), LLAMA, params)
  config = _config(attention="einsum")
  config.init.hf_checkpoint = str(tmp_path)
  cfg, loaded = model_init.build(config, types.SimpleNamespace(vocab_size=LLAMA.vocab_size))
  assert cfg.attention == "einsum"
  tokens, mask = left_pad(PROMPTS, pad_id=0)
  ref = _forward(cfg, loaded, tokens, mask)["logits"]
  fused = _forward(cfg.replace(attention="xla"), loaded, tokens, mask)["logits"]
  assert _maxdiff(fused, ref) <= FP32_TOL
