"""The stages a config can name, and the one function that runs a config: `run(config, workdir)`.

Each stage module exposes `run(config, workdir)`; they are imported lazily so a stage's heavy
imports are paid only when it runs.
"""

from __future__ import annotations

import importlib

from rlhf_jax.errors import ConfigError

STAGES = {
    "pretrain": "rlhf_jax.train.lm_stage",
    "sft": "rlhf_jax.train.lm_stage",
    "reward": "rlhf_jax.train.rm_stage",
    "ppo": "rlhf_jax.train.rl_stage",
    "a2c": "rlhf_jax.train.rl_stage",
    "grpo": "rlhf_jax.train.rl_stage",
    "rloo": "rlhf_jax.train.rl_stage",
    "sample": "rlhf_jax.train.sample_stage",
    "best_of_n": "rlhf_jax.train.best_of_n_stage",
    "dpo": "rlhf_jax.train.dpo_stage",
    "iterative": "rlhf_jax.train.iterative_stage",
}


def run(config, workdir: str):
  if config.stage not in STAGES:
    raise ConfigError(f"stage={config.stage!r} is not one of {sorted(STAGES)}")
  return importlib.import_module(STAGES[config.stage]).run(config, workdir)
