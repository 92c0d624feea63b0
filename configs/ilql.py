"""ILQL (Snell et al. 2022): offline RL of the SFT policy from a fixed set of scored responses;
no sampling and no reward-model calls during training.

  python -m rlhf_jax.main --config=configs/ilql.py     # pipeline, then scored SFT samples, ILQL
  python -m rlhf_jax.main --config=configs/ilql.py --config.ilql.beta=4 --workdir=runs/ilql_b4
  python -m rlhf_jax.main --config=configs/ilql.py --config.data.source=/data/scored.jsonl \
      --config.data.reward_field=reward              # your own (prompt, response, reward) lines
  python -m rlhf_jax.main --config=configs/ilql.py --config.data.source=/data/prefs.jsonl \
      --config.data.format=pairs                     # comparisons: ranks become scores

With `data.source="samples"` (the default) the data are `<samples.workdir>/best_of_n_samples.jsonl`:
the best-of-n stage's samples of the SFT policy on RL training prompts with their reward-model
scores (`configs/best_of_n.py:ilql`, run first unless the file exists, after the pipeline's
SFT and reward model). `data.format`: "scored" (JSON lines with a reward field) or a comparison
format of the reward model ("hh", "pairs", "ranked"). At the end the policy decodes with the
advantage-shaped logits on the RL stage's held-out prompts: gold score, RM score and KL to the
SFT policy in `eval_policy.json`. Keys: docs/ilql.md.
"""

import ml_collections as mc

from rlhf_jax import config_base


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  if preset:
    raise ValueError(f"configs/ilql.py: unknown preset {preset!r}; it has none")
  c = config_base.sibling(__file__, "ppo", arg)  # the pipeline, model, init, reward and mesh
  c.stage = "ilql"
  del c["rl"], c["critic_optim"]
  c.data = config_base.sibling(__file__, "reward").data  # the comparison fields, for "hh" etc.
  c.data.update(source="samples", format="scored", eval_fraction=0.05, max_len=64)
  c.data.reward_field = "rm_score"  # format "scored": the record's reward
  c.data.max_prompt_len = 24  # prompts are left-padded to this width (longer: cut on the left)
  c.samples = config_base.sibling(__file__, "best_of_n", "ilql")  # data.source="samples"
  c.samples.init.from_workdir = c.pipeline.sft.get_ref("workdir")
  c.samples.reward.models = c.pipeline.reward.get_ref("workdir")
  c.ilql = mc.ConfigDict({
      "tau": 0.7,  # the expectile V learns of Q
      "gamma": 1.0,  # discount per token (the reward comes at the last response token)
      "cql_coef": 0.1,  # weight of the CQL term of each Q head
      "lm_coef": 1.0,  # weight of the language-modelling (AWAC-style) term
      "polyak": 0.005,  # target Q heads move this fraction toward the Q heads per step
      "head_hidden": 0,  # MLP width of each head; 0 = twice the model's hidden size
      "beta": 1.0,  # decoding: logits + beta * (Q - V)
      "top_k": 0,  # decoding: top-k of the shaped logits; 0 disables
      "max_response_len": 40,  # response slots of a row (longer responses are skipped)
      "eval_betas": "4,16",  # more decoding betas for the final table ("" for none)
  })
  c.eval_policy = config_base.eval_policy_section()  # built-in task: gold, RM and KL at the end
  c.optim.learning_rate = 1e-4
  c.optim.warmup_steps = 20
  c.optim.final_lr_fraction = 1.0
  c.train.update(steps=600, batch_size=32, log_every=50, eval_every=200, checkpoint_every=200,
                 eval_batches=0, num_samples=0)
  c.workdir = "runs/ilql"
  return c
