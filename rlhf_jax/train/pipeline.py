"""The whole recipe from one command: the RL config names its upstream stages (pretraining, SFT,
then the reward model) as full configs under `pipeline`, and each runs first unless its workdir
already holds a finished run.

"Finished" means the workdir's latest checkpoint is at the stage's `train.steps` (and, for a
reward model, its normalisation file exists). An unfinished workdir resumes where it stopped,
so an interrupted pipeline picks up mid-stage. `pipeline.run_upstream=False` skips all of this
(the workdirs must then hold finished runs). A finished run is reused only if its saved config
(`run_config.json`) matches the pipeline's section for it in every field that changes the
computation.
"""

from __future__ import annotations

import os
import re

from rlhf_jax import run_config
from rlhf_jax.reward.model import NORM_FILE

UPSTREAM = ("pretrain", "sft", "reward")  # in this order; a config may leave any out


def latest_step(workdir: str) -> int | None:
  """The newest finished checkpoint step in `<workdir>/checkpoints`, without opening Orbax (so
  nothing is created in a workdir that does not exist)."""
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return None
  steps = [int(n) for n in os.listdir(path) if re.fullmatch(r"\d+", n)
           and os.path.isdir(os.path.join(path, n))]
  return max(steps) if steps else None


def finished(stage_config) -> bool:
  step = latest_step(stage_config.workdir)
  if step is None or step < stage_config.train.steps:
    return False
  if stage_config.stage == "reward":
    return os.path.exists(os.path.join(stage_config.workdir, NORM_FILE))
  return True


def run_upstream(config) -> None:
  if "pipeline" not in config or not config.pipeline.run_upstream:
    return
  from rlhf_jax import stages  # pylint: disable=g-import-not-at-top
  for name in UPSTREAM:
    if name not in config.pipeline:
      continue
    sub = config.pipeline[name]
    if finished(sub):
      run_config.check(sub, sub.workdir)  # a finished run reused must be the one configured
      print(f"[pipeline] {name}: {sub.workdir} holds a finished run (step {sub.train.steps}); "
            "skipped", flush=True)
      continue
    print(f"[pipeline] {name}: running into {sub.workdir}", flush=True)
    stages.run(sub, sub.workdir)
