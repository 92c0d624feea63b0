"""RL fine-tuning with GRPO (Shao et al. 2024): no critic; each prompt gets `rl.group_size`
responses and a response's advantage is its RM score against its group's mean, over the group's
std. The KL to the reference is a k3 term in the loss (`rl.kl_penalty="loss"`), not a reward;
its coefficient β follows the same adaptive controller as PPO's. Same pipeline and sample budget
as configs/ppo.py (64 responses per iteration). The policy loss is the clipped surrogate averaged
over all response tokens of the minibatch (not per sequence first).

  python -m rlhf_jax.main --config=configs/grpo.py     # reuses the pipeline's finished stages
  python -m rlhf_jax.main --config=configs/grpo.py:smollm2   # SmolLM2: 2 prompts x 8 per iteration
"""

from rlhf_jax import config_base


def get_config(arg=None):
  c = config_base.sibling(__file__, "ppo", arg)
  c.stage = "grpo"
  c.rl.update(algorithm="grpo", critic="none", group_size=8,  # 8 prompts x 8 responses
              group_scale="group", kl_penalty="loss", kl_estimator="k3",
              whiten_advantages=False)
  preset, _ = config_base.parse_arg(arg)
  c.workdir = f"runs/grpo{'_' + preset if preset else ''}"
  return c
