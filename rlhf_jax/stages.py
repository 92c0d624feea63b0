"""The stages a config can name, and the one function that runs a config: `run(config, workdir)`.

Each stage module exposes `run(config, workdir)`; they are imported lazily so a stage's heavy
imports are paid only when it runs. `run` is also where every stage gets what a long run needs
from its workdir: one writer at a time (`workdir_lock`) and, on resume, the same config as the
run that wrote the checkpoints (`run_config`).
"""

from __future__ import annotations

import importlib

from rlhf_jax import run_config, workdir_lock
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
    "ilql": "rlhf_jax.train.ilql_stage",
    "iterative": "rlhf_jax.train.iterative_stage",
}


def run(config, workdir: str, allow_config_change=False):
  """Runs `config`'s stage in `workdir`. allow_config_change: resume a workdir whose checkpoints
  were written with another config (True), or with changes to these key patterns only."""
  if config.stage not in STAGES:
    raise ConfigError(f"stage={config.stage!r} is not one of {sorted(STAGES)}")
  from rlhf_jax.train import pipeline  # pylint: disable=g-import-not-at-top
  with workdir_lock.hold(workdir):
    before = pipeline.latest_step(workdir)
    overridden = before is not None and run_config.check(config, workdir, allow_config_change)
    if not overridden:
      run_config.save(config, workdir)
    try:
      return importlib.import_module(STAGES[config.stage]).run(config, workdir)
    finally:
      # A config let through on purpose becomes the workdir's once a checkpoint holds its work.
      if overridden and pipeline.latest_step(workdir) != before:
        run_config.save(config, workdir)
