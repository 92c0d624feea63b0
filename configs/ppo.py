"""RL fine-tuning with PPO: the whole recipe on the built-in task from one command.

  python -m rlhf_jax.main --config=configs/ppo.py     # pretrain -> SFT -> RM -> PPO, CPU, minutes
  python -m rlhf_jax.main --config=configs/ppo.py --config.rl.kl_coef=0 \
      --config.rl.adaptive_kl=False --workdir=runs/ppo_beta0   # no KL penalty: RM over-optimised

The upstream stages (pretraining, SFT, reward model) are full configs under `pipeline`
(`--config.pipeline.sft.train.steps=...`); each runs first unless its workdir holds a finished
run. The policy and the frozen reference start from `pipeline.sft.workdir`; the reward model(s)
are `reward.models` (by default the pipeline's reward workdir).

Presets: "" (the built-in task); "smollm2": SmolLM2-135M-Instruct (`python -m
rlhf_jax.models.fetch`), SFT on the Alpaca seed tasks -> a reward model on hh-rlhf -> PPO on
hh-rlhf prompts, LoRA throughout, CPU-sized (workdirs runs/pipeline_smollm2/*, runs/ppo_smollm2):

  python -m rlhf_jax.main --config=configs/ppo.py:smollm2
"""

import ml_collections as mc

from rlhf_jax import config_base
from rlhf_jax.reward.combine import rewards_section


def _stage_config(name: str, arg=None):
  """get_config(arg) of configs/<name>.py, the file beside this one."""
  return config_base.sibling(__file__, name, arg)


def rl_section(**overrides) -> mc.ConfigDict:
  """Every field is documented in rlhf_jax/rl/config.py (RLConfig)."""
  d = {
      "algorithm": "ppo",
      "iterations": 180,
      "rollout_batch": 64,
      "group_size": 1,
      "group_scale": "group",
      "kl_penalty": "reward",
      "max_new_tokens": 40,
      "temperature": 1.0,
      "top_k": 0,
      "top_p": 1.0,
      "epochs": 2,
      "minibatches": 2,
      "clip_eps": 0.2,
      "value_clip_eps": 0.2,
      "vf_coef": 0.5,
      "entropy_coef": 0.0,
      "gamma": 1.0,
      "lam": 0.95,
      "whiten_advantages": True,
      "kl_estimator": "k1",
      "kl_coef": 0.1,
      "adaptive_kl": True,
      "kl_target": 4.0,
      "kl_horizon": 10000.0,
      "reward_scale": 1.0,
      "reward_clip": 0.0,
      "missing_eos": "penalty",
      "missing_eos_score": -3.0,
      "ptx_coef": 0.0,
      "ptx_batch": 16,
      "critic": "separate",
      "critic_init": "reward",
  }
  d.update(overrides)
  return mc.ConfigDict(d)


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  c = config_base.base_config("ppo")
  c.rl = rl_section()
  c.reward = rewards_section()
  c.critic_optim = config_base.optim_section(learning_rate=3e-4, warmup_steps=10)
  c.optim.learning_rate = 2e-4
  c.optim.warmup_steps = 10
  c.optim.final_lr_fraction = 1.0  # constant after warm-up
  c.critic_optim.final_lr_fraction = 1.0
  c.data.max_prompt_len = 24  # prompts are left-padded to this width
  c.data.builtin_train = 4096  # RL prompts (built-in task)
  c.data.builtin_eval = 256  # held-out prompts for the evaluations
  c.train.log_every = 10  # iterations
  c.train.eval_every = 60
  c.train.checkpoint_every = 60
  c.train.num_samples = 3
  c.pipeline = mc.ConfigDict({"run_upstream": True, "pretrain": _stage_config("pretrain"),
                              "sft": _stage_config("sft"), "reward": _stage_config("reward")})
  # The pipeline's own workdirs (a standalone configs/sft.py run keeps runs/sft), and the whole
  # recipe within ten minutes on a 2-core CPU: pretraining on the built-in corpus (600 steps),
  # then a short SFT from it (150 steps). Without pretraining, a 600-step SFT policy and the RM
  # trained on its samples both ignore the prompt's topic, and PPO cannot learn it.
  c.pipeline.pretrain.workdir = "runs/pipeline/pretrain"
  c.pipeline.sft.workdir = "runs/pipeline/sft"
  c.pipeline.reward.workdir = "runs/pipeline/reward"
  c.pipeline.sft.init.from_workdir = c.pipeline.pretrain.get_ref("workdir")
  c.pipeline.sft.train.steps = 150
  # One name for each workdir: the policy starts from the SFT run, the RM from the same SFT run,
  # and RL reads the RM the pipeline trains.
  c.init.from_workdir = c.pipeline.sft.get_ref("workdir")
  c.pipeline.reward.init.from_workdir = c.pipeline.sft.get_ref("workdir")
  c.reward.models = c.pipeline.reward.get_ref("workdir")
  if preset == "smollm2":
    _smollm2(c)
  elif preset:
    raise ValueError(f"configs/ppo.py: unknown preset {preset!r}; use smollm2")
  c.workdir = f"runs/ppo{'_' + preset if preset else ''}"
  return c


def _smollm2(c) -> None:
  """SFT -> RM -> PPO on SmolLM2-135M-Instruct, LoRA throughout, sized for a CPU."""
  sft, rm = _stage_config("sft", "smollm2"), _stage_config("reward", "smollm2")
  c.pipeline = mc.ConfigDict({"run_upstream": True, "sft": sft, "reward": rm})
  c.pipeline.sft.workdir = "runs/pipeline_smollm2/sft"
  c.pipeline.reward.workdir = "runs/pipeline_smollm2/reward"
  c.pipeline.reward.init.hf_checkpoint = ""  # InstructGPT: the RM starts from the SFT policy
  c.pipeline.reward.init.from_workdir = c.pipeline.sft.get_ref("workdir")
  config_base.smollm2(c)
  c.init.hf_checkpoint = ""
  c.init.from_workdir = c.pipeline.sft.get_ref("workdir")
  c.reward.models = c.pipeline.reward.get_ref("workdir")
  config_base.smollm2_prompts(c)
  # Real answers need room: 160 new tokens end most SmolLM2 replies with <|im_end|> (40, the
  # built-in task's, would make the missing-EOS score the reward of nearly every answer).
  c.rl.update(iterations=4, rollout_batch=16, minibatches=2, epochs=2, max_new_tokens=160,
              kl_coef=0.05, adaptive_kl=False)
  c.optim.learning_rate = 1e-4
  c.critic_optim.learning_rate = 1e-4
  c.train.update(log_every=1, eval_every=4, checkpoint_every=2, num_samples=2)
