"""The planner checked against a run: a supervised stage's train step executed on this machine
with random weights, its memory measured from the process, beside what the plan predicted.

The CPU backend keeps no allocator statistics, so the measure is the process's: Linux's peak
resident set (VmHWM), reset just before the step (writing 5 to /proc/self/clear_refs), minus the
resident set just before it. The state and the batch are resident before the step, so the
difference is what the step itself adds: XLA's outputs that alias nothing plus its temporaries.
The step is compiled ahead of time and runs once, so neither compilation nor an earlier run's
buffers kept by the allocator hide what it allocates; the process starts with
MALLOC_MMAP_THRESHOLD_ set (the command line does) so large buffers come straight from the
system rather than from memory the compiler freed into malloc's heap.
Linux only. Not for: accelerators (there `device.memory_stats()` holds the peak).
"""

from __future__ import annotations

import numpy as np


def _status_kib(field: str) -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise RuntimeError(f"/proc/self/status has no {field}")


def measure_train_step(config) -> dict:
  """{"added": bytes the step added to the process at its peak, "predicted": the plan's
  outputs − aliased + temporaries} for the LM train step of a pretrain/SFT config."""
  import jax  # pylint: disable=g-import-not-at-top
  from rlhf_jax import parallel  # pylint: disable=g-import-not-at-top
  from rlhf_jax.plan import programs  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import loop  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train.lm_steps import make_lm_steps  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train_state import create_state  # pylint: disable=g-import-not-at-top
  if config.stage not in ("pretrain", "sft"):
    raise SystemExit("--measure runs the LM train step: give a pretrain or sft config")
  plan = programs.stage_plan(config, exact_flops=False).programs[0]
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  cfg = programs.model_of(config)
  tx = loop.make_optimizer(config.optim, config.train.steps, cfg)
  state, shardings = create_state(cfg, tx, mesh, rules, config.seed)
  train, _ = make_lm_steps(cfg, tx, mesh, rules, shardings)
  b, t = config.train.batch_size, config.data.max_len
  rng = np.random.default_rng(0)
  batch = parallel.put_batch({"tokens": rng.integers(1, cfg.vocab_size, (b, t)).astype(np.int32),
                              "loss_mask": np.ones((b, t), bool),
                              "attention_mask": np.ones((b, t), bool)}, mesh, rules)
  with jax.set_mesh(mesh):
    compiled = train.jitted.lower(state, batch).compile()  # compiling is not the step
  before = _status_kib("VmRSS")
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")  # resets VmHWM to the current resident set
  with jax.set_mesh(mesh):
    state, m = compiled(state, batch)
    jax.block_until_ready((state, m))
  added = (_status_kib("VmHWM") - before) * 1024
  x = plan.xla
  return {"added": added, "predicted": max(x["outputs"] - x["aliased"], 0) + x["temporaries"]}
