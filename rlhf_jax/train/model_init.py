"""Where a stage's model comes from: a preset (random init), a Hugging Face checkpoint directory,
or the latest params of an earlier stage's workdir (pretrain -> SFT -> reward model).

`build(config, tokenizer)` returns (ModelConfig, host params or None); None means "initialise
randomly, born sharded". Not for: optimizer state or resuming the same stage (see lm_stage).
"""

from __future__ import annotations

import json
import os

from rlhf_jax import checkpoint, parallel
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.models import ModelConfig
from rlhf_jax.train.state import param_shardings

_RUNTIME_FIELDS = ("dtype", "param_dtype", "remat", "scan_layers")


def build(config, tokenizer, score_head: bool = False, load_params: bool = True):
  """(ModelConfig, params or None); with load_params=False only the config is read."""
  model_d = {k: v for k, v in dict(config.model).items() if v is not None}
  if config.init.hf_checkpoint and config.init.from_workdir:
    raise ConfigError("init.hf_checkpoint and init.from_workdir are both set; choose one")
  if config.init.hf_checkpoint:
    from rlhf_jax.models import hf  # pylint: disable=g-import-not-at-top
    runtime = {k: model_d[k] for k in _RUNTIME_FIELDS if k in model_d}
    if load_params:
      model_cfg, params = hf.load_checkpoint(config.init.hf_checkpoint, **runtime)
    else:
      model_cfg, params = hf.config_from_hf(config.init.hf_checkpoint, **runtime), None
  elif config.init.from_workdir:
    model_cfg, params = load_workdir_params(config.init.from_workdir, config, score_head,
                                            load_params)
  else:
    model_cfg, params = ModelConfig.from_dict(model_d), None
  if tokenizer.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
                      f"{model_cfg.vocab_size}")
  if config.data.max_len > model_cfg.max_seq_len:
    raise ConfigError(f"data.max_len={config.data.max_len} is longer than the model's maximum "
                      f"sequence length {model_cfg.max_seq_len}")
  return model_cfg, params


def load_workdir_params(workdir: str, config, score_head: bool = False,
                        load_params: bool = True):
  """(ModelConfig, params) from an earlier stage's workdir, read onto this run's mesh."""
  path = os.path.join(workdir, "model.json")
  if not os.path.exists(path):
    raise DataError(f"init.from_workdir={workdir!r}: no model.json there (has that stage run?)")
  with open(path, encoding="utf-8") as f:
    d = json.load(f)["model"]
  runtime = {k: v for k, v in dict(config.model).items() if k in _RUNTIME_FIELDS and v is not None}
  d.update(runtime)
  if isinstance(d.get("rope_llama3_scaling"), list):
    d["rope_llama3_scaling"] = tuple(d["rope_llama3_scaling"])
  model_cfg = ModelConfig(**d)
  if not load_params:
    return model_cfg, None
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)

  abstract, shardings = param_shardings(model_cfg, mesh, rules, score_head)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  params = ckpt.restore_params(abstract, shardings)
  ckpt.close()
  return model_cfg, params

