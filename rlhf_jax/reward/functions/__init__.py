"""Reward functions: rules that score a decoded (prompt, response, record metadata) -> float.

`BUILTINS` names the ones that come with rlhf_jax; `resolve(spec)` turns a config's spec (a
built-in name, or "module:function" for the user's own) into the callable. Each built-in lives
in a small module of this package:
  gsm8k          GSM8K answer match: the last number of the response vs the "####" reference
  gsm8k_format   the answer marked as the prompt asks ("#### N", or \\boxed{N})
  length_penalty 0 up to `max_words` words, then down to −1
  checkable      the built-in checkable task's answer match (`rlhf_jax.data.checkable_task`)
Running them (thread pool, timeouts, errors, one process's rows): `rlhf_jax.reward.function_runner`.
"""

from __future__ import annotations

import importlib
from typing import Callable

from rlhf_jax.errors import ConfigError
from rlhf_jax.reward.functions import checkable, gsm8k, length

BUILTINS: dict[str, Callable] = {
    "gsm8k": gsm8k.answer_match,
    "gsm8k_format": gsm8k.format_reward,
    "length_penalty": length.length_penalty,
    "checkable": checkable.answer_match,
}


def resolve(spec: str) -> Callable:
  """The function a spec names: a key of BUILTINS, or "package.module:function" (importable
  from the working directory or PYTHONPATH)."""
  spec = spec.strip()
  if spec in BUILTINS:
    return BUILTINS[spec]
  if ":" not in spec:
    raise ConfigError(f"reward.functions: {spec!r} is neither a built-in ({sorted(BUILTINS)}) "
                      "nor 'module:function'")
  module_name, _, attr = spec.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"reward.functions: {spec!r}: module {module_name!r} cannot be imported "
                      f"({e})") from None
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise ConfigError(f"reward.functions: {spec!r}: module {module_name!r} has no function "
                      f"{attr!r}")
  return fn
