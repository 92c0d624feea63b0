"""A resumed run is the run that wrote the checkpoints: the config is saved beside them and
compared on every resume.

`save(config, workdir)` writes `<workdir>/run_config.json` (the whole config, as JSON). When the
workdir already holds a checkpoint, `check` first compares the saved config with this one, key
by key. A difference in a field that changes the computation (the model, the data, the
batch, K, the seed, the optimizer, the algorithm: everything not listed below) stops the run with
`ConfigError` naming each key with its old and new value, unless the caller allows it
(`--allow_config_change` on the command line, for all keys or some); a config let through that
way is saved only once the stage has run with it (`stages.run`), so a resume that then fails
(say, on the checkpoint's shapes) leaves the old one to compare against. Differences that do not
change what is computed are allowed and said: logging, evaluation and checkpoint cadence, where
to stop, the mesh and sharding rules (a checkpoint restores onto any mesh), remat, the attention
kernel (the same arithmetic up to rounding, and absent from configs saved before it existed),
the upstream stages' own sections (each is checked in its own workdir), and a step count that grows.
Not for: the reward stage's built-in comparison files, which carry their own settings
(`rm_data`).
"""

from __future__ import annotations

import fnmatch
import json
import os

import jax

from rlhf_jax.errors import ConfigError

FILE = "run_config.json"

# Fields a resumed run may change freely: they decide when things are logged, evaluated, saved
# or stopped, or how the same arithmetic is laid out on devices.
HARMLESS = (
    "workdir", "train.log_every", "train.eval_every", "train.eval_batches",
    "train.checkpoint_every", "train.keep_checkpoints", "train.stop_at", "train.num_samples",
    "train.sample_tokens", "train.sample_temperature", "train.peak_tflops",
    "train.on_nonfinite", "train.max_nonfinite_skips", "train.norm_comparisons", "mesh.*",
    "sharding_rules", "model.remat", "model.attention", "pipeline.*", "eval_policy.*",
    "reward.function_timeout", "reward.function_workers", "reward.check", "reward.pass_*",
)
# Fields added after configs were first saved, with the value that means "as before": a saved
# config without one matches a config where it has this value.
ADDED_LATER = {"data.prompt_suffix": "", "reward.functions": "", "reward.function_kwargs": "",
               "reward.function_timeout": 10.0, "reward.function_workers": 8,
               "reward.check": "", "reward.pass_n": 0, "reward.pass_k": "1",
               "reward.pass_prompts": 0}
# Fields that may grow (a run extended), not shrink.
EXTENDABLE = ("train.steps", "rl.iterations")


def flatten(config) -> dict:
  """{dotted key: JSON value} of a ConfigDict (tuples as lists)."""
  d = json.loads(json.dumps(config.to_dict(), default=str))
  out = {}

  def walk(node, prefix):
    for k, v in node.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
      else:
        out[f"{prefix}{k}"] = v
  walk(d, "")
  return out


def _matches(key: str, patterns) -> bool:
  return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def differences(saved: dict, now: dict) -> tuple[list[str], list[str]]:
  """(changes that alter the computation, changes allowed on resume), as 'key: old -> new'."""
  blocking, allowed = [], []
  for key in sorted(set(saved) | set(now)):
    old, new = saved.get(key, ADDED_LATER.get(key, "<absent>")), now.get(key, "<absent>")
    if old == new:
      continue
    line = f"{key}: {old!r} -> {new!r}"
    grows = (key in EXTENDABLE and isinstance(old, (int, float)) and
             isinstance(new, (int, float)) and new > old)
    (allowed if _matches(key, HARMLESS) or grows else blocking).append(line)
  return blocking, allowed


def check(config, workdir: str, allow=False) -> bool:
  """Raises ConfigError when `workdir`'s saved config differs from `config` in a field that
  changes the computation; returns whether such a difference was let through by `allow`: True
  (any change) or an iterable of key patterns a caller knowingly changes (the iterated-RLHF stage
  moves its RL run to each round's reward model)."""
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  blocking, allowed = differences(saved, flatten(config))
  patterns = ("*",) if allow is True else tuple(allow or ())
  overridden = [b for b in blocking if _matches(b.split(":")[0], patterns)]
  blocking = [b for b in blocking if b not in overridden]
  if blocking:
    raise ConfigError(
        f"{workdir} holds checkpoints of a run with another config; resuming it with these "
        f"changes would mix two runs: {'; '.join(blocking)}. Use another --workdir, restore "
        f"the old values, or pass --allow_config_change to resume anyway")
  allowed += [b + " (allowed on purpose)" for b in overridden]
  if allowed and jax.process_index() == 0:
    print(f"[resume] {workdir}: config changes since the checkpointed run: "
          f"{'; '.join(allowed)}", flush=True)
  return bool(overridden)


def save(config, workdir: str) -> None:
  """Writes `config` as the workdir's run config (process 0)."""
  if jax.process_index() != 0:
    return
  path = os.path.join(workdir, FILE)
  os.makedirs(workdir, exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(flatten(config), f, indent=1, sort_keys=True)
  os.replace(tmp, path)
