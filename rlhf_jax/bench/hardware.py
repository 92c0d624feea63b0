"""The device's own limits, measured in the same run as the figures they judge.

- `matmul_peak`: bf16 TFLOP/s of a large jitted square matmul (the denominator of MFU);
- `copy_bandwidth`: GB/s of a jitted elementwise copy (bytes read + bytes written), the memory
  roofline;
- `decode_bytes_per_step`: what one decode step of a batch must read at least (every weight
  used by the step once, in the compute dtype, and the filled part of the KV cache), so
  bytes / bandwidth is the fastest a memory-bound sampler can go.
Not for: model figures (`ours`, `peers`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.bench.common import time_calls
from rlhf_jax.models import ModelConfig


def matmul_peak(n: int = 8192, repeats: int = 5, dtype=jnp.bfloat16) -> dict:
  """{"tflops", "n"}: 2·n³ FLOPs of an n×n @ n×n matmul over the median time."""
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32).astype(dtype))
  t = time_calls(lambda: jax.block_until_ready(dot(a, b)), repeats)
  return {"tflops": 2.0 * n**3 / t["median_s"] / 1e12, "n": n, "dtype": jnp.dtype(dtype).name,
          "median_s": t["median_s"]}


def copy_bandwidth(mib: int = 1024, repeats: int = 5) -> dict:
  """{"gb_per_s", "bytes"}: (read + write) bytes of copying a `mib` MiB array over the median."""
  x = jnp.ones((mib * 2**20 // 4,), jnp.float32)
  copy = jax.jit(lambda v: v + 1.0)
  t = time_calls(lambda: jax.block_until_ready(copy(x)), repeats)
  nbytes = x.size * 4
  return {"gb_per_s": 2.0 * nbytes / t["median_s"] / 1e9, "bytes": nbytes,
          "median_s": t["median_s"]}


def kv_bytes_per_token(cfg: ModelConfig) -> int:
  """Bytes of K and V that one token of one sequence keeps in the cache (compute dtype)."""
  return 2 * cfg.num_layers * cfg.num_kv_heads * cfg.dim_per_head * cfg.compute_dtype.itemsize


def decode_bytes_per_step(cfg: ModelConfig, batch: int, context: float) -> float:
  """Least bytes one decode step reads: the weights once (the embedding table only as the LM
  head: a lookup reads `batch` rows), in the compute dtype, plus `batch` × `context` cached
  tokens of K and V."""
  weights = cfg.num_params(include_embeddings=False)
  if cfg.tie_embeddings:
    weights += cfg.vocab_size * cfg.hidden  # the tied table is read whole as the LM head
  return weights * cfg.compute_dtype.itemsize + batch * context * kv_bytes_per_token(cfg)


def decode_bound_tokens_per_s(cfg: ModelConfig, batch: int, prompt: int, new: int,
                              gb_per_s: float) -> float:
  """Tokens/s of a sampler that only pays the memory roofline: each of the `new` steps reads
  the weights and the KV cache filled so far (on average prompt + new/2 tokens)."""
  per_step = decode_bytes_per_step(cfg, batch, prompt + new / 2) / (gb_per_s * 1e9)
  return batch / per_step
