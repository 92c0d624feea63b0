"""Several reward models (and reward functions), one reward: the rule that combines them, and its
config.

Llama 2 trained a helpfulness and a safety reward model and used the safety score wherever it
fell below a threshold (or the prompt was known to be risky), the helpfulness score elsewhere.
Two rules are offered, both pure functions of the models' (already normalised) scores:

- "weighted_sum":  r = Σ_m w_m · r_m  (weights default to 1);
- "safety_gate":   r = r_safety where r_safety < threshold or the prompt is flagged unsafe,
                   else r_helpful.

The config names the models as one string, "name=workdir,name=workdir" (a bare workdir is
named by its folder), so `--config.reward.models=...` works from the command line. Reward
functions (`reward.functions`: rules on decoded text, `function_runner.py`) are combined by the
same rule, by their names: a weight or a gate may name a function as it names a model, and a run
may have functions only (`reward.models=""`).
Not for: loading the models or running them (`rlhf_jax.reward.model`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax.numpy as jnp
import ml_collections as mc

from rlhf_jax.errors import ConfigError

RULES = ("weighted_sum", "safety_gate")


@dataclasses.dataclass(frozen=True)
class CombineRule:
  kind: str = "weighted_sum"
  weights: tuple[tuple[str, float], ...] = ()  # weighted_sum; missing names weigh 1.0
  safety: str = ""  # safety_gate: the safety model's name
  helpful: str = ""  # safety_gate: the helpfulness model's name
  threshold: float = 0.0  # safety_gate: below this the safety score is the reward

  def __post_init__(self):
    if self.kind not in RULES:
      raise ConfigError(f"reward.combine={self.kind!r} must be one of {RULES}")
    if self.kind == "safety_gate" and not (self.safety and self.helpful):
      raise ConfigError("reward.combine='safety_gate' needs reward.safety_model and "
                        "reward.helpful_model")

  def names_used(self) -> set[str]:
    if self.kind == "safety_gate":
      return {self.safety, self.helpful}
    return {n for n, _ in self.weights}


def combine_rewards(scores: Mapping[str, jnp.ndarray], rule: CombineRule,
                    unsafe_prompt_B=None) -> jnp.ndarray:
  """float32[B] from each model's scores (name -> [B]); NumPy or JAX arrays alike."""
  if not scores:
    raise ConfigError("no reward models or reward functions to combine")
  missing = rule.names_used() - set(scores)
  if missing:
    raise ConfigError(f"reward.combine refers to model(s) {sorted(missing)} that are not among "
                      f"reward.models {sorted(scores)}")
  if rule.kind == "weighted_sum":
    w = dict(rule.weights)
    return sum(w.get(name, 1.0) * jnp.asarray(s, jnp.float32) for name, s in scores.items())
  safety = jnp.asarray(scores[rule.safety], jnp.float32)
  helpful = jnp.asarray(scores[rule.helpful], jnp.float32)
  gate = safety < rule.threshold
  if unsafe_prompt_B is not None:
    gate = gate | jnp.asarray(unsafe_prompt_B, bool)
  return jnp.where(gate, safety, helpful)


def rewards_section() -> mc.ConfigDict:
  """The `reward` section of an RL config: which reward models, and how to combine them."""
  return mc.ConfigDict({
      # Comma-separated "name=workdir" (or a bare workdir, named by its folder).
      "models": "runs/reward",
      "combine": "weighted_sum",  # or "safety_gate"
      "weights": "",  # weighted_sum: "name=w,name=w"; unnamed models weigh 1.0
      "safety_model": "",  # safety_gate
      "helpful_model": "",  # safety_gate
      "safety_threshold": 0.0,  # safety_gate, in normalised reward units
      # Reward functions on decoded text, beside (or instead of) the models: comma-separated
      # built-in names (gsm8k, gsm8k_format, length_penalty, checkable) or "module:function",
      # each optionally "name=..."; docs/reward_functions.md.
      "functions": "",
      # Keyword arguments per function, JSON: '{"length_penalty": {"max_words": 300}}'.
      "function_kwargs": "",
      "function_timeout": 10.0,  # seconds a call may run before the run stops, naming it
      "function_workers": 8,  # threads calling the functions
      # Held-out pass@k: `pass_n` samples per held-out prompt (0 = none), judged right when the
      # `check` function (default: the first of reward.functions) scores them above 0.
      "check": "",  # the judging function's name; "" = the first of reward.functions
      "pass_n": 0,  # samples per held-out prompt; 0 = no pass@k evaluation
      "pass_k": "1",  # comma list of k <= pass_n
      "pass_prompts": 0,  # the first this many held-out prompts; 0 = all of them
  })


def _pairs(spec: str, what: str) -> list[tuple[str, str]]:
  out = []
  for part in spec.split(","):
    part = part.strip()
    if not part:
      continue
    if "=" in part:
      k, v = (x.strip() for x in part.split("=", 1))
      if not k or not v:
        raise ConfigError(f"{what}: {part!r} is not name=value")
    else:
      k, v = "", part
    out.append((k, v))
  return out


def parse_rewards(section) -> tuple[list[tuple[str, str]], CombineRule]:
  """([(name, workdir)], CombineRule) from a `rewards_section()`; names (of models and
  functions together) are unique."""
  from rlhf_jax.reward.function_runner import function_specs  # pylint: disable=g-import-not-at-top
  models = []
  for name, workdir in _pairs(section.models, "reward.models"):
    name = name or os.path.basename(os.path.normpath(workdir))
    models.append((name, workdir))
  functions = [n for n, _ in function_specs(section.get("functions", ""))]
  if not models and not functions:
    raise ConfigError("reward.models and reward.functions are both empty: name at least one "
                      "reward-model workdir or reward function")
  names = [n for n, _ in models] + functions
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise ConfigError(f"reward.models / reward.functions name {dup} more than once; name them: "
                      "'a=dir1,b=dir2'")
  weights = []
  for name, w in _pairs(section.weights, "reward.weights"):
    if not name:
      raise ConfigError(f"reward.weights: {w!r} has no model name (use name=weight)")
    try:
      weights.append((name, float(w)))
    except ValueError:
      raise ConfigError(f"reward.weights: {name}={w!r} is not a number") from None
  rule = CombineRule(kind=section.combine, weights=tuple(weights), safety=section.safety_model,
                     helpful=section.helpful_model, threshold=float(section.safety_threshold))
  unknown = rule.names_used() - set(names)
  if unknown:
    raise ConfigError(f"reward.{'weights' if rule.kind == 'weighted_sum' else 'combine'} names "
                      f"{sorted(unknown)}, not among reward.models / reward.functions {names}")
  return models, rule
