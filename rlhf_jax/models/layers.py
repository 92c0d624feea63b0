"""The pieces of one decoder block: norms, rotary embeddings, attention, MLP.

Every parameter carries logical axis names (see `rlhf_jax.parallel` for the table that maps them
to mesh axes). Parameters are stored in `param_dtype` and cast to the compute dtype where used;
norms, softmax and RoPE run in float32. With `lora_rank > 0` the targeted projections add
scale·(x·A)·B (`lora_delta`) and every base weight is frozen (`weight` stops its gradient); see
`rlhf_jax.models.lora`. Not for: the layer stack, heads or the KV cache
(`transformer.py`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax.models.attention import attend
from rlhf_jax.models.config import ModelConfig

_INIT = nn.initializers.normal(stddev=0.02)


def param(module: nn.Module, name: str, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def frozen(cfg: ModelConfig, w):
  """A base weight as the layers read it: no gradient flows into it when LoRA adapters train."""
  return jax.lax.stop_gradient(w) if cfg.lora_rank else w


def weight(module: nn.Module, cfg: ModelConfig, name: str, init, shape, axes):
  """A base weight (stored in `param_dtype`), frozen under LoRA."""
  return frozen(cfg, param(module, name, init, shape, axes, cfg.storage_dtype))


def project(spec: str, x, w):
  """`jnp.einsum(spec, x, w)` in x's dtype. XLA's CPU backend runs a bfloat16 dot fast (YNNPACK)
  only when the dot writes float32; asked for bfloat16, it converts both operands to float32
  first and runs 2-3x slower (issue 18). So on the CPU a bfloat16 projection writes float32 and
  rounds once, the same sum; elsewhere the dot writes the compute dtype as it always has."""
  if x.dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32).astype(x.dtype)
  return jnp.einsum(spec, x, w)


def lora_a_init(key, shape, dtype=jnp.float32):
  """A ~ N(0, 1/fan_in) over the input dims (all but the last, the rank); B starts at zero."""
  fan_in = math.prod(shape[:-1])
  return (jax.random.normal(key, shape, jnp.float32) / math.sqrt(fan_in)).astype(dtype)


def lora_delta(module: nn.Module, cfg: ModelConfig, name: str, x, in_shape, in_axes, out_shape,
               out_axes):
  """(lora_alpha / r)·(x·A)·B for projection `name`, or None when it has no adapters: off in
  the config, or absent from the params (the base model with its adapters switched off).

  x: [..., *in_shape] -> [..., *out_shape]; A: [*in_shape, r], B: [r, *out_shape]."""
  if not cfg.lora_on(name):
    return None
  a_name, b_name = f"{name}_lora_a", f"{name}_lora_b"
  if not (module.is_initializing() or module.has_variable("params", a_name)):
    return None
  r, dt, cd = cfg.lora_rank, cfg.storage_dtype, cfg.compute_dtype
  a = param(module, a_name, lora_a_init, (*in_shape, r), (*in_axes, None), dt)
  b = param(module, b_name, nn.initializers.zeros, (r, *out_shape), (None, *out_axes), dt)
  xa = jnp.tensordot(x, a.astype(cd), axes=len(in_shape))  # [..., r]
  return (cfg.lora_scale * jnp.tensordot(xa, b.astype(cd), axes=1)).astype(cd)


class Norm(nn.Module):
  """RMSNorm (Llama) or LayerNorm (GPT-2), computed in float32."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.config
    scale = weight(self, cfg, "scale", nn.initializers.ones, (cfg.hidden,), ("norm",))
    x = x_BxTxD.astype(jnp.float32)
    if cfg.norm == "rms":
      x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + cfg.norm_eps)
      y = x * scale.astype(jnp.float32)
    else:
      bias = weight(self, cfg, "bias", nn.initializers.zeros, (cfg.hidden,), ("norm",))
      mean = jnp.mean(x, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
      x = (x - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
      y = x * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(cfg.compute_dtype)


def rope_inverse_frequencies(cfg: ModelConfig) -> jnp.ndarray:
  """[Dh/2] inverse frequencies, with Llama-3's long-context rescaling when configured."""
  dh = cfg.dim_per_head
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
  if cfg.rope_llama3_scaling is None:
    return inv
  factor, low, high, old_len = cfg.rope_llama3_scaling
  wavelen = 2 * math.pi / inv
  # Long wavelengths are slowed by `factor`, short ones kept; a smooth blend in between.
  smooth = (old_len / wavelen - low) / (high - low)
  blended = (1 - smooth) * inv / factor + smooth * inv
  out = jnp.where(wavelen > old_len / low, inv / factor, blended)
  return jnp.where(wavelen < old_len / high, inv, out)


def apply_rope(x_BxTxNxH, positions_BxT, inv_freq):
  """Rotates pairs (i, i + Dh/2): the half-split layout Hugging Face Llama weights expect."""
  angles = positions_BxT[..., None].astype(jnp.float32) * inv_freq  # [B, T, Dh/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x = x_BxTxNxH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxH.dtype)


class Attention(nn.Module):
  """Grouped-query self-attention over a key/value sequence that may be a KV cache.

  The caller gives the mask [B, T, S] (causal, padding and cache slots in one), so one code path
  serves the full forward (keys = this call's tokens) and cached decoding (keys = the cache's
  slots); `model.attention` picks the kernel (`rlhf_jax.models.attention`). The cache is this
  layer's ([B, S, K, Dh] each, under the layer scan) or, with `layer` set, every layer's
  ([L, B, S, K, Dh]): this call then writes its slots in place and reads its own layer.
  """

  config: ModelConfig
  layer: int | None = None

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, kv_cache=None, cache_index=None):
    cfg = self.config
    d, h, k, dh = cfg.hidden, cfg.num_heads, cfg.num_kv_heads, cfg.dim_per_head
    cd = cfg.compute_dtype

    def proj(name, n, heads_axis):
      w = weight(self, cfg, f"{name}_kernel", _INIT, (d, n, dh), ("embed", heads_axis, "head_dim"))
      y = project("btd,dnh->btnh", x_BxTxD, w.astype(cd))
      delta = lora_delta(self, cfg, name, x_BxTxD, (d,), ("embed",), (n, dh),
                         (heads_axis, "head_dim"))
      if delta is not None:
        y = y + delta
      if cfg.qkv_bias:
        b = weight(self, cfg, f"{name}_bias", nn.initializers.zeros, (n, dh),
                   (heads_axis, "head_dim"))
        y = y + b.astype(cd)
      return y

    q = proj("q", h, "q_heads")
    key = proj("k", k, "kv_heads")
    val = proj("v", k, "kv_heads")
    if cfg.position == "rope":
      inv = rope_inverse_frequencies(cfg)
      q = apply_rope(q, positions_BxT, inv)
      key = apply_rope(key, positions_BxT, inv)

    new_cache = None
    if kv_cache is not None:
      key, val, new_cache = _write_cache(kv_cache, key, val, cache_index, self.layer)

    # One query against the cache is the decode step: it keeps the einsum kernel.
    out = attend(cfg.attention, q, key.astype(cd), val.astype(cd), mask_BxTxS,
                 decode=kv_cache is not None and q.shape[1] == 1, causal=kv_cache is None)

    wo = weight(self, cfg, "o_kernel", _INIT, (h, dh, d), ("q_heads", "head_dim", "embed"))
    y = project("btnh,nhd->btd", out, wo.astype(cd))
    delta = lora_delta(self, cfg, "o", out, (h, dh), ("q_heads", "head_dim"), (d,), ("embed",))
    if delta is not None:
      y = y + delta
    if cfg.out_bias:
      y = y + weight(self, cfg, "o_bias", nn.initializers.zeros, (d,), ("embed",)).astype(cd)
    return y, new_cache


def _write_cache(kv_cache, key_BxTxKxH, val_BxTxKxH, index, layer):
  """(keys, values this layer attends to, the new cache): the T new slots written at `index`."""
  ck, cv = kv_cache
  if layer is None:
    at = (0, index, 0, 0)
    ck = jax.lax.dynamic_update_slice(ck, key_BxTxKxH.astype(ck.dtype), at)
    cv = jax.lax.dynamic_update_slice(cv, val_BxTxKxH.astype(cv.dtype), at)
    return ck, cv, (ck, cv)
  at = (layer, 0, index, 0, 0)
  ck = jax.lax.dynamic_update_slice(ck, key_BxTxKxH[None].astype(ck.dtype), at)
  cv = jax.lax.dynamic_update_slice(cv, val_BxTxKxH[None].astype(cv.dtype), at)
  return ck[layer], cv[layer], (ck, cv)


class Mlp(nn.Module):
  """SwiGLU (Llama) or GELU (GPT-2, tanh approximation) feed-forward."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.config
    d, f, cd = cfg.hidden, cfg.mlp_dim, cfg.compute_dtype

    def dense(name, shape, axes, x_BxTxI):
      w = weight(self, cfg, f"{name}_kernel", _INIT, shape, axes)
      y = project("bti,io->bto", x_BxTxI, w.astype(cd))
      delta = lora_delta(self, cfg, name, x_BxTxI, shape[:1], axes[:1], shape[1:], axes[1:])
      if delta is not None:
        y = y + delta
      if cfg.mlp_bias:
        y = y + weight(self, cfg, f"{name}_bias", nn.initializers.zeros, shape[-1:],
                       axes[-1:]).astype(cd)
      return y

    up = dense("up", (d, f), ("embed", "mlp"), x_BxTxD)
    if cfg.mlp == "swiglu":
      hidden = jax.nn.silu(dense("gate", (d, f), ("embed", "mlp"), x_BxTxD)) * up
    else:
      hidden = jax.nn.gelu(up, approximate=True)
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    return dense("down", (f, d), ("mlp", "embed"), hidden)
