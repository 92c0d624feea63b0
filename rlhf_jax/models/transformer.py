"""The decoder: embeddings, a scanned stack of blocks, an LM head and a scalar head.

`Decoder` is a Flax linen module, used purely functionally: parameters are a pytree and every
call is `Decoder(cfg).apply({"params": params}, ...)`. The same weights serve three callers:
training (full forward, no cache), prefill (write a prompt into a KV cache) and decoding (one
token at a time against the cache). Not for: sampling loops (the PPO stage builds them on
`KVCache`), losses, or sharding rules.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rlhf_jax.errors import ShapeError
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.layers import _INIT, Attention, Mlp, Norm, frozen

HEADS = ("lm", "score", "lm+score")

_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


@flax.struct.dataclass
class KVCache:
  """Preallocated keys/values for every layer, plus which slots hold real tokens.

  key, value: [L, B, S, K, Dh]; valid: [B, S] bool; index: int32 scalar, the next slot to write.
  Slot numbers order attention (slot j is visible to a query at slot i iff j <= i and valid);
  RoPE positions are separate, so left-padded prompts keep positions that start at 0.
  """

  key: jax.Array
  value: jax.Array
  valid: jax.Array
  index: jax.Array

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
    shape = (cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.dim_per_head)
    dtype = dtype or cfg.compute_dtype
    return cls(key=jnp.zeros(shape, dtype), value=jnp.zeros(shape, dtype),
               valid=jnp.zeros((batch, max_len), bool), index=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.valid.shape[1]


class Block(nn.Module):
  """Pre-norm residual block; scan-compatible signature (carry, *broadcast, scanned cache).
  Unrolled, `layer` is its index and the cache it gets and returns is every layer's."""

  config: ModelConfig
  layer: int | None = None

  @nn.compact
  def __call__(self, x, positions_BxT, mask_BxTxS, cache_index, layer_cache):
    cfg = self.config
    x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
    h, new_cache = Attention(cfg, self.layer, name="attn")(
        Norm(cfg, name="attn_norm")(x), positions_BxT, mask_BxTxS, layer_cache, cache_index)
    x = x + h
    x = x + Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x))
    return x, new_cache


class Decoder(nn.Module):
  """Decoder-only transformer with an LM head and an optional scalar (value / reward) head.

  `heads` says which heads the params hold: "lm" (a policy), "score" (a reward model or critic:
  no LM head matrix, no optimizer state for it) or "lm+score" (a policy with a value head).
  Call: `(tokens_BxT, attention_mask_BxT, positions_BxT=None, cache=None, outputs=None)`
  returns `(dict, new_cache)`. `outputs` (default: each head's output) picks among "logits" [B,T,V] float32, "scores" [B,T]
  float32 (the scalar head at every position), and "hidden" [B,T,D] (after the final norm).
  Positions default to the count of real tokens before each one (left padding safe).
  """

  config: ModelConfig
  heads: str = "lm"

  def setup(self):
    cfg = self.config
    if self.heads not in HEADS:
      raise ValueError(f"heads={self.heads!r} must be one of {HEADS}")
    self.embed = self.param(
        "embed", nn.with_logical_partitioning(_INIT, ("vocab", "embed")),
        (cfg.vocab_size, cfg.hidden), cfg.storage_dtype)
    if cfg.position == "learned":
      self.pos_embed = self.param(
          "pos_embed", nn.with_logical_partitioning(_INIT, (None, "embed")),
          (cfg.max_seq_len, cfg.hidden), cfg.storage_dtype)
    block = Block
    if cfg.remat != "none":
      block = nn.remat(block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      self.layers = nn.scan(
          block, variable_axes={"params": 0}, split_rngs={"params": True},
          in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0), length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
    else:
      self.layers = [block(cfg, i, name=f"layer_{i}") for i in range(cfg.num_layers)]
    self.final_norm = Norm(cfg, name="final_norm")
    if "lm" in self.heads.split("+") and not cfg.tie_embeddings:
      self.lm_head = self.param(
          "lm_head", nn.with_logical_partitioning(_INIT, ("embed", "vocab")),
          (cfg.hidden, cfg.vocab_size), cfg.storage_dtype)
    if "score" in self.heads.split("+"):
      self.score_kernel = self.param(
          "score_kernel", nn.with_logical_partitioning(_INIT, ("embed", None)),
          (cfg.hidden, 1), cfg.storage_dtype)
      self.score_bias = self.param(
          "score_bias", nn.with_logical_partitioning(nn.initializers.zeros, (None,)), (1,),
          cfg.storage_dtype)

  def __call__(self, tokens_BxT, attention_mask_BxT, positions_BxT=None,
               cache: KVCache | None = None, outputs: Sequence[str] | None = None):
    cfg = self.config
    if outputs is None:  # what the model's heads give
      outputs = tuple({"lm": "logits", "score": "scores"}[h] for h in self.heads.split("+"))
    b, t = tokens_BxT.shape
    span = t if cache is None else cache.max_len
    if span > cfg.max_seq_len:
      raise ShapeError(f"a sequence of {span} tokens is longer than the model's maximum "
                       f"max_seq_len={cfg.max_seq_len}")
    mask = attention_mask_BxT.astype(bool)
    if positions_BxT is None:
      if cache is not None:
        raise ValueError("decoding with a cache needs explicit positions")
      positions_BxT = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    if cache is None:
      q_slots = jnp.arange(t)
      valid, index, layer_caches = mask, jnp.zeros((), jnp.int32), None
    else:
      index = cache.index
      q_slots = index + jnp.arange(t)
      valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, index))
      layer_caches = (cache.key, cache.value)
    k_slots = jnp.arange(valid.shape[1])
    attn_mask = (k_slots[None, None, :] <= q_slots[None, :, None]) & valid[:, None, :]

    # The lookup reads a gathered (replicated) table, as FSDP does for every weight: gathering
    # rows from a table sharded over both vocab and embed forces a full rematerialisation.
    embed = frozen(cfg, self.embed)
    table = nn.with_logical_constraint(embed, (None, None))
    x = jnp.take(table, tokens_BxT, axis=0).astype(cfg.compute_dtype)
    if cfg.position == "learned":
      x = x + jnp.take(frozen(cfg, self.pos_embed), positions_BxT,
                       axis=0).astype(cfg.compute_dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))

    if cfg.scan_layers:
      x, new_layer_caches = self.layers(x, positions_BxT, attn_mask, index, layer_caches)
    else:
      # Each layer's input is rounded to the compute dtype, as the scan's carry is: without the
      # barriers XLA may fuse across layers and keep it in float32 ("excess precision"), and
      # the unrolled sampler would not compute what the scanned trainer scores.
      x = jax.lax.optimization_barrier(x)
      new_layer_caches = layer_caches  # every layer's: each writes its own slots in place
      for layer in self.layers:
        x, new_layer_caches = layer(x, positions_BxT, attn_mask, index, new_layer_caches)
        x = jax.lax.optimization_barrier(x)

    x = self.final_norm(x)
    out = {}
    if "hidden" in outputs:
      out["hidden"] = x
    if "logits" in outputs:
      if "lm" not in self.heads.split("+"):
        raise ValueError("outputs asks for 'logits' but the model has no LM head")
      w = embed.T if cfg.tie_embeddings else frozen(cfg, self.lm_head)
      out["logits"] = nn.with_logical_constraint(_lm_logits(cfg, x, w),
                                                 ("batch", "length", "vocab"))
    if "scores" in outputs:
      if "score" not in self.heads.split("+"):
        raise ValueError("outputs asks for 'scores' but the model has no score head")
      s = x.astype(jnp.float32) @ self.score_kernel.astype(jnp.float32)
      out["scores"] = s[..., 0] + self.score_bias[0].astype(jnp.float32)
    new_cache = None
    if cache is not None:
      new_cache = KVCache(key=new_layer_caches[0], value=new_layer_caches[1], valid=valid,
                          index=index + t)
    return out, new_cache


def _lm_logits(cfg: ModelConfig, hidden_BxTxD, w_DxV):
  return jnp.einsum("btd,dv->btv", hidden_BxTxD.astype(cfg.compute_dtype),
                    w_DxV.astype(cfg.compute_dtype), preferred_element_type=jnp.float32)


def lm_logits(cfg: ModelConfig, params, hidden_BxTxD):
  """float32[B, T, V]: the LM head applied to final hidden states (`outputs=("hidden",)`), for
  callers that need logits at a few positions only (an RL loss reads the response slots)."""
  w = params["embed"].T if cfg.tie_embeddings else params["lm_head"]
  return _lm_logits(cfg, hidden_BxTxD, frozen(cfg, w))


def init_params(cfg: ModelConfig, rng: jax.Array, heads: str = "lm"):
  """Unboxed parameter pytree (no sharding); use `rlhf_jax.parallel` for sharded init."""
  tokens = jnp.zeros((1, min(8, cfg.max_seq_len)), jnp.int32)
  variables = Decoder(cfg, heads).init(rng, tokens, jnp.ones_like(tokens, bool))
  return nn.meta.unbox(variables["params"])


def forward(cfg: ModelConfig, params, tokens_BxT, attention_mask_BxT, positions_BxT=None,
            outputs: Sequence[str] | None = None, heads: str = "lm"):
  """Full forward pass without a cache: a dict with the requested `outputs`."""
  outputs = None if outputs is None else tuple(outputs)
  out, _ = Decoder(cfg, heads).apply({"params": params}, tokens_BxT, attention_mask_BxT,
                                     positions_BxT, None, outputs)
  return out
