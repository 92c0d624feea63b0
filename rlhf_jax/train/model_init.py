"""Where a stage's model comes from: a preset (random init), a Hugging Face checkpoint directory,
or the latest params of an earlier stage's workdir (pretrain -> SFT -> reward model).

`build(config, tokenizer, heads)` returns (ModelConfig, params or None); None means "initialise
randomly, born sharded". `heads` is what this stage trains ("lm" for pretrain/SFT, "score" for a
reward model): a source with other heads is adapted by `adapt_heads` (an SFT policy becomes a
reward model by dropping its LM head and gaining a fresh scalar head). Every stage writes
`model.json` (`write_model_json`) so the next one knows the shape and heads of its params. A
model section with `lora_rank > 0` gives the loaded model fresh LoRA adapters
(`rlhf_jax.models.lora`); a source trained with adapters is read merged.
Not for: optimizer state or resuming the same stage (see lm_stage).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax

from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import ModelConfig, lora
# Moved below the stages (the reward scorer reads workdirs too); the old names stay here.
from rlhf_jax.workdir_model import (RUNTIME_FIELDS as _RUNTIME_FIELDS, adapt_heads,  # noqa: F401
                                    load_workdir_params, read_model_json)


def build(config, tokenizer, heads: str = "lm", load_params: bool = True):
  """(ModelConfig, params or None); with load_params=False only the config is read."""
  model_d = {k: v for k, v in dict(config.model).items() if v is not None}
  if config.init.hf_checkpoint and config.init.from_workdir:
    raise ConfigError("init.hf_checkpoint and init.from_workdir are both set; choose one")
  if config.init.hf_checkpoint:
    from rlhf_jax.models import hf  # pylint: disable=g-import-not-at-top
    runtime = {k: model_d[k] for k in _RUNTIME_FIELDS if k in model_d}
    if load_params:
      model_cfg, params = hf.load_checkpoint(config.init.hf_checkpoint, **runtime)
      params = adapt_heads(params, model_cfg, "lm", heads, config.seed)
    else:
      model_cfg, params = hf.config_from_hf(config.init.hf_checkpoint, **runtime), None
  elif config.init.from_workdir:
    model_cfg, params = load_workdir_params(config.init.from_workdir, config, heads,
                                            load_params)
  else:
    model_cfg, params = ModelConfig.from_dict(model_d), None  # random init, adapters included
  if config.init.hf_checkpoint or config.init.from_workdir:
    # This stage's LoRA settings apply to whatever it starts from (a source trained with LoRA
    # arrives merged): fresh adapters, B = 0, so the start computes what the source computes.
    model_cfg = lora.configure(model_cfg, config.model)
    if params is not None:
      params = lora.attach(params, model_cfg, heads, config.seed)
  if tokenizer.vocab_size > model_cfg.vocab_size:
    raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
                      f"{model_cfg.vocab_size}")
  if config.data.max_len > model_cfg.max_seq_len:
    raise ConfigError(f"data.max_len={config.data.max_len} is longer than the model's maximum "
                      f"sequence length {model_cfg.max_seq_len}")
  return model_cfg, params


def require_source(config, message: str) -> None:
  """Stops with `message` unless `init` names a model to start from (a workdir or checkpoint):
  the stages that need a policy, not a random init."""
  if not (config.init.from_workdir or config.init.hf_checkpoint):
    raise ConfigError(message)


def write_model_json(workdir: str, model_cfg: ModelConfig, config, heads: str = "lm",
                     extra: dict | None = None) -> None:
  """What a later stage needs to read this stage's params: shape, heads, tokenizer."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  d = {"model": dataclasses.asdict(model_cfg), "heads": heads, "stage": config.stage,
       "tokenizer": lm_data.tokenizer_spec(config)}
  d.update(extra or {})
  with open(os.path.join(workdir, "model.json"), "w", encoding="utf-8") as f:
    json.dump(d, f, indent=1)

