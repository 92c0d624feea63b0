"""Seconds-long settings of the built-in pipeline, in one place: what the tests, the multi-process
test's command lines and the notebooks' CI runs use instead of the real sizes.

`PIPELINE` maps dotted config keys of `configs/ppo.py` (or `configs/a2c.py`) to values: one-layer
32-wide models, a few steps per upstream stage, 3 RL iterations of 16 prompts.
`config_base.apply_overrides(config, PIPELINE)` sets them on a ConfigDict; `as_flags(overrides)`
renders them as the command line's `--config.key=value` flags, so a subprocess gets the same run.
Not for: anything whose figures mean something (these runs only prove the code runs and agrees
with itself).
"""

from __future__ import annotations

from typing import Any, Mapping


def _stage(name: str, steps: int, **data) -> dict[str, Any]:
  p = f"pipeline.{name}"
  out = {f"{p}.model.hidden": 32, f"{p}.model.mlp_dim": 64, f"{p}.model.num_layers": 1,
         f"{p}.train.steps": steps, f"{p}.train.batch_size": 8, f"{p}.train.log_every": 2,
         f"{p}.train.eval_every": 100, f"{p}.train.checkpoint_every": 100}
  out.update({f"{p}.data.{k}": v for k, v in data.items()})
  return out


PIPELINE: dict[str, Any] = {
    **_stage("pretrain", 3, builtin_train=64, builtin_eval=8),
    "pipeline.pretrain.train.num_samples": 0,
    **_stage("sft", 4, builtin_train=64, builtin_eval=8),
    "pipeline.sft.train.num_samples": 0,
    **_stage("reward", 4, builtin_train=24, builtin_eval=8, num_responses=2),
    "data.builtin_train": 64, "data.builtin_eval": 16,
    "rl.iterations": 3, "rl.rollout_batch": 16, "rl.minibatches": 2, "rl.epochs": 2,
    "rl.max_new_tokens": 8,
    "train.log_every": 1, "train.eval_every": 3, "train.checkpoint_every": 3,
    "train.num_samples": 1,
}


def workdirs(root: str) -> dict[str, str]:
  """The pipeline's workdirs under `root` (the RL stage's own is <root>/<stage>, set apart)."""
  return {f"pipeline.{s}.workdir": f"{root}/{s}" for s in ("pretrain", "sft", "reward")}


def as_flags(overrides: Mapping[str, Any]) -> list[str]:
  """["--config.key=value", ...] for `python -m rlhf_jax.main`."""
  return [f"--config.{k}={v}" for k, v in overrides.items()]
