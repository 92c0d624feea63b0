"""Best-of-n from one policy against the reward model(s): the no-training baseline of RLHF, and
the data of rejection-sampling fine-tuning.

  python -m rlhf_jax.main --config=configs/best_of_n.py     # the pipeline's SFT policy and RM
  python -m rlhf_jax.main --config=configs/best_of_n.py --config.init.from_workdir=runs/ppo
  python -m rlhf_jax.main --config=configs/best_of_n.py:train   # rejection-sampling data
  python -m rlhf_jax.main --config=configs/best_of_n.py:ilql    # ILQL's scored samples
  python -m rlhf_jax.main --config=configs/best_of_n.py:smollm2 # after configs/ppo.py:smollm2

Writes `best_of_n.json` (RM and gold score and the analytic KL for each n) and `best_of_n.jsonl`
(the best response per prompt at the largest n) and `best_of_n_samples.jsonl` (every sample
with its token ids and scores: the offline data of configs/ilql.py) to the workdir.
"""

import ml_collections as mc

from rlhf_jax import config_base
from rlhf_jax.reward.combine import rewards_section


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  if preset not in ("", "train", "ilql", "smollm2"):
    raise ValueError(f"configs/best_of_n.py: unknown preset {preset!r}; use train, ilql, "
                     "smollm2")
  c = config_base.base_config("best_of_n")
  c.init.from_workdir = "runs/pipeline/sft"  # the policy sampled (configs/ppo.py's SFT)
  c.reward = rewards_section()
  c.reward.models = "runs/pipeline/reward"
  c.data.max_prompt_len = 24  # prompts are left-padded to this width, as in RL
  c.data.builtin_eval = 256  # the held-out prompts of the RL evaluations
  c.best_of_n = mc.ConfigDict({
      "ns": "1,4,16",  # the n of each best-of-n; max(ns) samples are drawn per prompt
      "num_prompts": 0,  # held-out prompts used; 0 = all
      "prompts_per_call": 16,  # prompts sampled per compiled call (x max(ns) rows)
      "max_new_tokens": 40,  # as the RL stage's rl.max_new_tokens
      "temperature": 1.0,  # as the RL stage's rollouts and held-out evaluations
      # "eval": the held-out prompts (the evaluation table); "train": the RL training prompts
      # (rejection-sampling fine-tuning data for configs/sft.py:rejection_sampling).
      "prompts": "eval",
  })
  c.workdir = "runs/best_of_n"
  if preset == "train":  # Llama 2's rejection sampling: the best of 16 on 2,000 train prompts
    c.data.builtin_train = 2000  # RL training prompts drawn (as configs/ppo.py's data)
    c.best_of_n.update(prompts="train", ns="16")
    c.workdir = "runs/best_of_n_train"
  if preset == "ilql":  # ILQL's offline data: 4 scored SFT samples of 2,048 train prompts
    c.data.builtin_train = 2048
    c.best_of_n.update(prompts="train", ns="4")
    c.workdir = "runs/best_of_n_ilql"
  if preset == "smollm2":  # after configs/ppo.py:smollm2's SFT and RM: best-of-4 on hh-rlhf
    config_base.smollm2(c)
    c.init.hf_checkpoint = ""
    c.init.from_workdir = "runs/pipeline_smollm2/sft"
    c.reward.models = "runs/pipeline_smollm2/reward"
    config_base.smollm2_prompts(c)
    c.best_of_n.update(ns="1,4", num_prompts=32, prompts_per_call=4, max_new_tokens=160)
    c.workdir = "runs/best_of_n_smollm2"
  return c
