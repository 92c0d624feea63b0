"""RL fine-tuning with A2C: one on-policy pass per rollout batch, no ratio clipping (the variant
DeepMind used), through the same pipeline as configs/ppo.py.

  python -m rlhf_jax.main --config=configs/a2c.py     # reuses runs/sft and runs/reward
"""

from rlhf_jax import config_base


def get_config(arg=None):
  c = config_base.sibling(__file__, "ppo", arg)
  c.stage = "a2c"
  c.rl.algorithm = "a2c"
  c.rl.epochs = 1
  c.rl.minibatches = 1
  c.rl.value_clip_eps = 0.0
  c.workdir = "runs/a2c"
  return c
