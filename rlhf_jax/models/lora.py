"""Low-rank adapters (LoRA, Hu et al. 2021) over a params pytree: which leaves are adapters,
which train, adding fresh ones, switching them off, and merging them into the base.

With `model.lora_rank = r > 0` every projection named in `model.lora_targets` gains two leaves
beside its kernel W [*in, *out]: "<name>_lora_a" A [*in, r] and "<name>_lora_b" B [r, *out]; the
layer computes x·W + (lora_alpha / r)·(x·A)·B (`models/layers.py`). B starts at zero, so a model
with fresh adapters computes exactly what its base computes.

- Frozen base: the layers stop the gradient of every base weight, and the optimizer
  (`trainable`, used by `train.loop.make_optimizer`) keeps no moments for them and applies no
  weight decay to them. A score head (reward model, critic, value head) is new and trains.
- Adapters off = the same params without the adapter leaves (`base_params`: no copy of any
  array). PPO's and DPO's frozen reference is the policy's own base this way.
- `merge` folds W + scale·A·B into the kernels for export, and when a later stage starts from a
  LoRA stage's workdir (`train.model_init`).
Not for: the layer arithmetic (`layers.lora_delta`).
"""

from __future__ import annotations

import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.models.config import ModelConfig

SUFFIXES = ("_lora_a", "_lora_b")
SCORE_HEAD = ("score_kernel", "score_bias")  # trains beside the adapters


def is_adapter(name: str) -> bool:
  return name.endswith(SUFFIXES)


def _leaf_name(path) -> str:
  """The last key of a pytree path: the parameter's own name ("q_kernel", "q_lora_a", ...)."""
  return str(getattr(path[-1], "key", path[-1]))


def has_adapters(params) -> bool:
  return any(is_adapter(_leaf_name(p)) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])


def num_adapter_params(params) -> int:
  return sum(int(np.prod(x.shape)) for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
             if is_adapter(_leaf_name(path)))


def base_params(params):
  """The params with every adapter leaf dropped: the base model, sharing its arrays."""
  if not isinstance(params, dict):
    return params
  return {k: base_params(v) for k, v in params.items() if not is_adapter(k)}


def trainable(params):
  """A bool per leaf: True for adapters and a score head, False for the frozen base."""
  def trains(path, _):
    name = _leaf_name(path)
    return is_adapter(name) or name in SCORE_HEAD

  return jax.tree_util.tree_map_with_path(trains, params)


def base_config(cfg: ModelConfig) -> ModelConfig:
  """The config of the same model without adapters."""
  return cfg.replace(lora_rank=0)


def configure(cfg: ModelConfig, section) -> ModelConfig:
  """`cfg` with the LoRA fields a config's model section sets (None: keep `cfg`'s)."""
  kw = {k: section.get(k) for k in ("lora_rank", "lora_alpha", "lora_targets")
        if section.get(k) is not None}
  return cfg.replace(**kw) if kw else cfg


def _delta(a, b, kernel):
  """scale-free A·B shaped like `kernel`: A [*lead, *in, r], B [*lead, r, *out]."""
  lead = a.ndim + b.ndim - 2 - kernel.ndim
  r = a.shape[-1]
  a2 = a.astype(jnp.float32).reshape(a.shape[:lead] + (-1, r))
  b2 = b.astype(jnp.float32).reshape(b.shape[:lead] + (r, -1))
  return jnp.matmul(a2, b2).reshape(kernel.shape)


def merge(params, cfg: ModelConfig):
  """(params, config) with W ← W + (alpha / r)·A·B in every adapted projection (computed in
  float32, stored in the kernel's dtype) and no adapter leaves: a plain model for export."""
  scale = cfg.lora_scale

  def walk(node):
    if not isinstance(node, dict):
      return node
    out = {k: walk(v) for k, v in node.items() if not is_adapter(k)}
    for k in node:
      if k.endswith("_lora_a"):
        name = k[:-len("_lora_a")]
        w = node[f"{name}_kernel"]
        d = _delta(node[k], node[f"{name}_lora_b"], w)
        out[f"{name}_kernel"] = (w.astype(jnp.float32) + scale * d).astype(w.dtype)
    return out

  return walk(params), base_config(cfg)


def attach(params, cfg: ModelConfig, heads: str, seed: int):
  """`params` (a base model) with fresh adapters wherever `cfg` puts them and `params` has none:
  A ~ N(0, 1/fan_in), B = 0, so the adapted model starts equal to the base."""
  if cfg.lora_rank == 0:
    return params
  from rlhf_jax.models.transformer import Decoder  # pylint: disable=g-import-not-at-top
  tokens = jnp.zeros((1, min(8, cfg.max_seq_len)), jnp.int32)
  abstract = nn.meta.unbox(jax.eval_shape(
      lambda: Decoder(cfg, heads).init(jax.random.PRNGKey(0), tokens,
                                       jnp.ones_like(tokens, bool)))["params"])
  root = jax.random.PRNGKey(seed)

  def walk(spec, node, path, stacked):
    out = dict(node)
    for k, v in spec.items():
      where = f"{path}/{k}"
      if isinstance(v, dict):
        out[k] = walk(v, node.get(k, {}), where, stacked or (k == "layers" and cfg.scan_layers))
      elif is_adapter(k) and k not in node:
        if k.endswith("_lora_b"):
          out[k] = np.zeros(v.shape, v.dtype)
        else:
          fan_in = math.prod(v.shape[1 if stacked else 0:-1])
          key = jax.random.fold_in(root, zlib.crc32(where.encode()))
          out[k] = np.asarray(jax.random.normal(key, v.shape, jnp.float32) / math.sqrt(fan_in),
                              v.dtype)
    return out

  return walk(abstract, params, "", False)
