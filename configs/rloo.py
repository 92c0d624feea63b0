"""RL fine-tuning with RLOO (Ahmadian et al. 2024): no critic; each prompt gets `rl.group_size`
responses and a response's baseline is the mean reward of the other G − 1. The reward is the RM
score minus β·KL to the reference (per token, as in PPO, with the same adaptive β). Same
pipeline and sample budget as configs/ppo.py (64 responses per iteration).

  python -m rlhf_jax.main --config=configs/rloo.py     # reuses the pipeline's finished stages
"""

from rlhf_jax import config_base


def get_config(arg=None):
  c = config_base.sibling(__file__, "ppo", arg)
  c.stage = "rloo"
  c.rl.update(algorithm="rloo", critic="none", group_size=4,  # 16 prompts x 4 responses
              kl_penalty="reward", whiten_advantages=False)
  c.workdir = "runs/rloo"
  return c
