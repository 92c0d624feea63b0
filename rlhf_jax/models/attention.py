"""The softmax-attention kernels behind `layers.Attention`, chosen by `model.attention`.

  "einsum"  two einsums and a float32 softmax written out here (the decode step always runs it)
  "xla"     `jax.nn.dot_product_attention(implementation="xla")`
  "cudnn"   its cuDNN flash-attention path: a GPU, bf16/fp16 compute, head_dim a multiple of 8
            and at most 128, even lengths (the mask reaches cuDNN as a [B, 1, T, S] bias);
            written against jax 0.10's API but not yet run on a GPU (no GPU at hand so far)
  "auto"    cudnn on a GPU where the dtype and shapes allow it, else "xla" (the default: on a
            CPU "xla" and "einsum" time alike, the XLA kernel a few percent ahead; see issue 18)

Every kernel takes the same inputs: queries [B, T, N, Dh], keys and values [B, S, K, Dh] with K
dividing N (grouped-query heads), and a boolean mask [B, T, S] that already holds the causal,
padding and KV-cache-slot rules (`transformer.Decoder` builds it). Scale 1/sqrt(Dh), softmax in
float32. A query row with no valid key (a left-padding slot) must not give NaN: its output feeds
the next layer's keys and values, which are masked there, but 0 · NaN is NaN.
Not for: projections, RoPE or the cache update (`layers.Attention`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from rlhf_jax.errors import ConfigError

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn")
CUDNN_DTYPES = ("bfloat16", "float16")


def cudnn_refusal(dtype: str, head_dim: int, t: int | None = None,
                  s: int | None = None) -> str | None:
  """Why cuDNN's flash attention cannot run this call (None: it can). The backend is checked
  separately (`check_backend`); t and s, when known, are the query and key lengths."""
  if dtype not in CUDNN_DTYPES:
    return f"needs model.dtype in {CUDNN_DTYPES}, not {dtype!r}"
  if head_dim % 8 or head_dim > 128:
    return f"needs a head dimension that is a multiple of 8 and at most 128, not {head_dim}"
  if t is not None and s is not None and (t % 2 or s % 2):
    # With a mask (a bias to cuDNN) its backward pass wants even lengths.
    return f"needs even query and key lengths, not {t} and {s}"
  return None


def _on_gpu() -> bool:
  return jax.default_backend() == "gpu"


def resolve(attention: str, dtype: str, head_dim: int, t: int, s: int, decode: bool) -> str:
  """The kernel ("einsum", "xla" or "cudnn") that one call runs: the decode step (one query
  against the cache) keeps the einsum; "auto" takes cuDNN where `cudnn_refusal` allows."""
  if decode or attention == "einsum":
    return "einsum"
  if attention == "auto":
    usable = _on_gpu() and cudnn_refusal(dtype, head_dim, t, s) is None
    return "cudnn" if usable else "xla"
  if attention == "cudnn":
    if not _on_gpu():
      raise ConfigError(f"model.attention='cudnn' needs a GPU; this backend is "
                        f"{jax.default_backend()!r} (use 'xla' or 'auto')")
    why = cudnn_refusal(dtype, head_dim, t, s)
    if why:
      raise ConfigError(f"model.attention='cudnn' {why} (use 'xla' or 'auto')")
  return attention


def einsum_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS):
  """Grouped-query attention written out; a finite floor for masked scores keeps rows with no
  valid key finite (they average every value)."""
  b, t, n, dh = q_BxTxNxH.shape
  k = k_BxSxKxH.shape[2]
  q = q_BxTxNxH.reshape(b, t, k, n // k, dh)
  scores = jnp.einsum("btkgh,bskh->bkgts", q, k_BxSxKxH,
                      preferred_element_type=jnp.float32) / math.sqrt(dh)
  scores = jnp.where(mask_BxTxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
  return jnp.einsum("bkgts,bskh->btkgh", probs, v_BxSxKxH).reshape(b, t, n, dh)


def fused_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS, implementation: str,
                    causal: bool):
  """`jax.nn.dot_product_attention` with our mask. `causal` (the keys are this call's own
  tokens, so the mask is already lower-triangular) only lets cuDNN skip the blocks above the
  diagonal; the mask alone decides the result."""
  mask = mask_BxTxS[:, None]  # [B, 1, T, S]: the same for every head
  out = jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask=mask,
                                     is_causal=causal and implementation == "cudnn",
                                     implementation=implementation)
  if implementation == "cudnn":
    # XLA's kernel floors masked scores like ours (a fully masked row averages the values);
    # cuDNN does not document that case, so such rows are zeroed to keep them finite.
    any_key = jnp.any(mask_BxTxS, axis=-1)[:, :, None, None]
    out = jnp.where(any_key, out, jnp.zeros((), out.dtype))
  return out


def attend(attention: str, q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS, *, decode: bool,
           causal: bool):
  """Attention output [B, T, N, Dh] in q's dtype by the kernel `resolve` picks; k and v must
  already be in q's dtype."""
  t, s, dh = q_BxTxNxH.shape[1], k_BxSxKxH.shape[1], q_BxTxNxH.shape[3]
  impl = resolve(attention, jnp.dtype(q_BxTxNxH.dtype).name, dh, t, s, decode)
  if impl == "einsum":
    return einsum_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS)
  return fused_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS, impl, causal)
