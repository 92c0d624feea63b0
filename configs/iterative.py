"""Iterated online RLHF on the built-in task: rounds of fresh comparisons of the current policy,
a reward model retrained on all comparisons so far, and RL that continues the policy; at the end
an Elo table of the SFT policy and every round's policy from gold-score comparisons.

  python -m rlhf_jax.main --config=configs/iterative.py     # reuses the pipeline's stages
  python -m rlhf_jax.main --config=configs/iterative.py --config.iterative.rounds=3
  python -m rlhf_jax.main --config=configs/iterative.py --config.iterative.labelers=human \
      --config.iterative.feedback_home=feedback_site   # people label each round in the app

Everything else (pipeline, RL settings, reward combination) is configs/ppo.py's.
"""

import ml_collections as mc

from rlhf_jax import config_base


def get_config(arg=None):
  c = config_base.sibling(__file__, "ppo", arg)
  c.stage = "iterative"
  c.iterative = mc.ConfigDict({
      "rounds": 2,  # RL rounds; every round after the first starts with new comparisons
      "rl_iterations": 90,  # RL iterations per round (2 x 90 = configs/ppo.py's 180)
      "prompts_per_round": 2000,  # new training prompts labelled per round (K answers each)
      "eval_prompts_per_round": 200,  # new held-out prompts per round, for the new RM's eval
      "rm_steps": 400,  # training steps of each round's reward model (from the SFT model)
      "sample_batch": 64,  # prompts per compiled call when answering the held-out prompts
      # "simulated" (the built-in labelers) or "human": a round puts its new comparisons into the
      # feedback site at feedback_home and stops; rerun the command once they are labelled.
      "labelers": "simulated",
      "feedback_home": "",  # the site folder (`python -m rlhf_jax.feedback init --home DIR`)
  })
  c.workdir = "runs/iterative"
  return c
