"""DPO (or IPO) on the reward model's comparison data: no reward model, no sampling during
training; the SFT policy is the start and the frozen reference.

  python -m rlhf_jax.main --config=configs/dpo.py     # after (or running) the PPO pipeline
  python -m rlhf_jax.main --config=configs/dpo.py --config.dpo.loss=ipo --workdir=runs/ipo
  python -m rlhf_jax.main --config=configs/dpo.py:smollm2   # SmolLM2 on hh-rlhf pairs
  python -m rlhf_jax.main --config=configs/dpo.py --config.data.source=/data/prefs.jsonl \
      --config.data.format=pairs --config.data.eval_split=""      # your own comparisons

With `data.source="pipeline"` (the default) the comparisons are the ones the pipeline's reward
stage wrote (`<pipeline.reward.workdir>/comparisons_{train,eval}.jsonl`: SFT samples ranked by
the simulated labelers), so DPO and the reward model learn from the same labels. The upstream
stages run first unless finished, as for configs/ppo.py.
"""

import ml_collections as mc

from rlhf_jax import config_base


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  c = config_base.sibling(__file__, "ppo", arg)  # the pipeline, model, init and mesh of RL
  rm = config_base.sibling(__file__, "reward", preset or None)
  c.stage = "dpo"
  del c["rl"], c["reward"], c["critic_optim"]
  c.data = rm.data  # the comparison data fields of the reward model
  if preset != "smollm2":  # smollm2: the reward model's own hh-rlhf comparisons
    # "pipeline": the pipeline reward stage's comparison files; or a file, folder or hub name.
    c.data.source = "pipeline"
    c.data.format = "ranked"
  c.dpo = mc.ConfigDict({
      "beta": 0.1,  # strength of the implicit KL constraint (IPO: its tau)
      "loss": "dpo",  # "dpo" (sigmoid) or "ipo" (squared)
      "label_smoothing": 0.0,  # dpo: the probability that a label is flipped
  })
  c.eval_policy = config_base.eval_policy_section()  # built-in task: gold and KL at the end
  c.optim.learning_rate = 1e-4
  c.optim.warmup_steps = 20
  c.optim.final_lr_fraction = 1.0
  c.train.update(steps=400, batch_size=16, log_every=50, eval_every=100, checkpoint_every=200,
                 eval_batches=0, num_samples=0)
  c.workdir = "runs/dpo"
  if preset == "smollm2":  # the pipeline's SFT policy (LoRA) on 240 hh-rlhf pairs, CPU-sized
    del c.pipeline["reward"]  # DPO needs the SFT policy only: it learns from the pairs directly
    c.dpo.beta = 0.1
    c.optim.learning_rate = 5e-5
    c.optim.warmup_steps = 5
    c.train.update(steps=30, batch_size=4, log_every=10, eval_every=30, checkpoint_every=30,
                   eval_batches=8)
    c.workdir = "runs/dpo_smollm2"
  return c
