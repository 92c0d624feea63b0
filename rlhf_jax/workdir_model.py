"""Reading a finished stage's model from its workdir: `model.json` (shape, heads, tokenizer) and
the latest params on a mesh, adapted to the heads asked for (`adapt_heads`), plus the abstract
params and their shardings (`param_shardings`) that reading them needs.

Below every stage (it imports no `rlhf_jax.train` module), so the stages, the frozen reward
scorer (`rlhf_jax.reward.model`) and `python -m rlhf_jax.reward.score` share one reader.
Not for: initialising or resuming a stage's own training state (`rlhf_jax.train_state`).
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import checkpoint, parallel
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.models import Decoder, ModelConfig, lora

# Fields a stage's own model section sets over the source's (when set): how it computes (the
# attention kernel too), and how a reward model it trains pools its score head.
RUNTIME_FIELDS = ("dtype", "param_dtype", "remat", "scan_layers", "attention", "logits_chunk",
                  "unroll_decode", "score_pooling")


def boxed_params_fn(model_cfg: ModelConfig, heads: str):
  """rng -> params boxed with their logical axis names (`nn.Partitioned` leaves)."""
  def boxed_params(rng):
    tokens = jnp.zeros((1, min(8, model_cfg.max_seq_len)), jnp.int32)
    return Decoder(model_cfg, heads).init(rng, tokens, jnp.ones_like(tokens, bool))["params"]
  return boxed_params


def param_shardings(model_cfg: ModelConfig, mesh, rules, heads: str = "lm"):
  """(abstract params, their NamedShardings under `rules`) without allocating anything."""
  abstract_boxed = jax.eval_shape(boxed_params_fn(model_cfg, heads),
                                  jax.random.PRNGKey(0))
  return (nn.meta.unbox(abstract_boxed),
          parallel.logical_shardings(abstract_boxed, mesh, rules))


def read_model_json(workdir: str) -> dict:
  path = os.path.join(workdir, "model.json")
  if not os.path.exists(path):
    raise DataError(f"{workdir!r} has no model.json (has that stage run there?)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def load_workdir_params(workdir: str, config, heads: str = "lm", load_params: bool = True):
  """(ModelConfig, params) from an earlier stage's workdir, read onto this run's mesh and
  adapted to `heads`. A stage trained with LoRA adapters is returned merged: a plain model."""
  info = read_model_json(workdir)
  d, src_heads = info["model"], info.get("heads", "lm")
  runtime = {k: v for k, v in dict(config.model).items() if k in RUNTIME_FIELDS and v is not None}
  d.update(runtime)
  if isinstance(d.get("rope_llama3_scaling"), list):
    d["rope_llama3_scaling"] = tuple(d["rope_llama3_scaling"])
  model_cfg = ModelConfig(**d)
  if not load_params:
    return lora.base_config(model_cfg), None
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)

  abstract, shardings = param_shardings(model_cfg, mesh, rules, src_heads)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  if ckpt.latest_step() is None:
    raise DataError(f"{workdir!r} has a model.json but no checkpoint (did that stage finish "
                    "its first save?)")
  params = ckpt.restore_params(abstract, shardings)
  ckpt.close()
  if model_cfg.lora_rank:
    params, model_cfg = lora.merge(params, model_cfg)
  return model_cfg, adapt_heads(params, model_cfg, src_heads, heads, config.seed)


def adapt_heads(params: dict, model_cfg: ModelConfig, src: str, dst: str, seed: int) -> dict:
  """Params with `src` heads -> params with `dst` heads: an LM head not wanted is dropped; a
  missing scalar head is initialised (kernel ~ N(0, 1/hidden), bias 0). An LM head cannot be
  made up, so a score-only source cannot become a policy."""
  src_set, dst_set = set(src.split("+")), set(dst.split("+"))
  if "lm" in dst_set and "lm" not in src_set:
    raise ConfigError(f"the source model has heads {src!r}: it has no LM head to start a "
                      f"{dst!r} model from")
  params = dict(params)
  if "lm" not in dst_set:
    params.pop("lm_head", None)
  if "score" not in dst_set:
    params.pop("score_kernel", None)
    params.pop("score_bias", None)
  elif "score_kernel" not in params:
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 17)
    dtype = model_cfg.storage_dtype
    params["score_kernel"] = np.asarray(jax.random.normal(key, (model_cfg.hidden, 1)) /
                                        np.sqrt(model_cfg.hidden), dtype)
    params["score_bias"] = np.zeros((1,), dtype)
  return params
