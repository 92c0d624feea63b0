"""RL fine-tuning with A2C: one on-policy pass per rollout batch, no ratio clipping (the variant
DeepMind used), through the same pipeline as configs/ppo.py.

  python -m rlhf_jax.main --config=configs/a2c.py     # reuses runs/sft and runs/reward
"""

import importlib.util
import os


def get_config(arg=None):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ppo.py")
  spec = importlib.util.spec_from_file_location("rlhf_jax_configs_ppo", path)
  ppo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(ppo)
  c = ppo.get_config(arg)
  c.stage = "a2c"
  c.rl.algorithm = "a2c"
  c.rl.epochs = 1
  c.rl.minibatches = 1
  c.rl.value_clip_eps = 0.0
  c.workdir = "runs/a2c"
  return c
