"""RL fine-tuning with GRPO (Shao et al. 2024): no critic; each prompt gets `rl.group_size`
responses and a response's advantage is its RM score against its group's mean, over the group's
std. The KL to the reference is a k3 term in the loss (`rl.kl_penalty="loss"`), not a reward;
its coefficient β follows the same adaptive controller as PPO's. Same pipeline and sample budget
as configs/ppo.py (64 responses per iteration). The policy loss is the clipped surrogate averaged
over all response tokens of the minibatch (not per sequence first).

  python -m rlhf_jax.main --config=configs/grpo.py     # reuses the pipeline's finished stages
  python -m rlhf_jax.main --config=configs/grpo.py:smollm2   # SmolLM2: 2 prompts x 8 per iteration

Rewards you can check (docs/reward_functions.md): a reward function, no reward model.
  python -m rlhf_jax.main --config=configs/grpo.py:checkable   # built-in sums and counts, CPU
  python -m rlhf_jax.main --config=configs/grpo.py:gsm8k \
      --config.init.hf_checkpoint=/ckpt/Qwen2.5-0.5B-Instruct     # GSM8K, sized for a GPU/TPU
  python -m rlhf_jax.main --config=configs/grpo.py:gsm8k_smollm2   # its CPU smoke run
"""

import ml_collections as mc

from rlhf_jax import config_base

# Appended to every GSM8K question: the format the gsm8k / gsm8k_format functions check.
GSM8K_SUFFIX = ("\n\nSolve the problem step by step, then give the final answer as a number on "
                "its own last line, in the form '#### <number>'.")
_OWN_PRESETS = ("checkable", "gsm8k", "gsm8k_smollm2")


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  c = config_base.sibling(__file__, "ppo", None if preset in _OWN_PRESETS else arg)
  c.stage = "grpo"
  c.rl.update(algorithm="grpo", critic="none", group_size=8,  # 8 prompts x 8 responses
              group_scale="group", kl_penalty="loss", kl_estimator="k3",
              whiten_advantages=False)
  if preset == "checkable":
    _checkable(c)
  elif preset in ("gsm8k", "gsm8k_smollm2"):
    _gsm8k(c, smoke=preset == "gsm8k_smollm2")
  c.workdir = f"runs/grpo{'_' + preset if preset else ''}"
  return c


def _checkable(c) -> None:
  """The built-in checkable task (`rlhf_jax/data/checkable_task.py`): SFT from scratch on
  demonstrations that are right 60% of the time, then GRPO with the checking function alone
  (no reward model, no pretraining); pass@1 and pass@8 on 128 held-out prompts before and
  after. Minutes on a CPU."""
  sft = config_base.sibling(__file__, "sft")
  sft.workdir = "runs/pipeline_checkable/sft"
  sft.data.update(source="builtin:checkable", builtin_train=8000, builtin_eval=128, max_len=24)
  sft.train.update(steps=800, eval_every=200, checkpoint_every=400, num_samples=3,
                   sample_tokens=8)
  sft.optim.learning_rate = 2e-3
  c.pipeline = mc.ConfigDict({"run_upstream": True, "sft": sft})
  c.init.from_workdir = c.pipeline.sft.get_ref("workdir")
  c.data.update(source="builtin:checkable", builtin_train=4096, builtin_eval=128,
                max_prompt_len=16)
  c.reward.update(models="", functions="checkable", pass_n=8, pass_k="1,8")
  c.rl.update(iterations=200, rollout_batch=64, group_size=8, max_new_tokens=8, epochs=2,
              minibatches=2, kl_coef=0.01, adaptive_kl=False, missing_eos_score=-1.0)
  c.optim.learning_rate = 5e-4
  c.train.update(log_every=20, eval_every=200, checkpoint_every=100, num_samples=3)


def _gsm8k(c, smoke: bool) -> None:
  """GSM8K (train split for RL, test split held out; ../shared/data/gsm8k or $RLHF_JAX_DATA,
  or set data.source / data.eval_split to a hub copy) from a Hugging Face instruct checkpoint:
  the reward is the gsm8k answer match plus 0.1 × the "#### N" format reward; no reward model,
  no SFT stage (the checkpoint is the policy and the reference). Sized for one accelerator;
  `smoke` is the same run on SmolLM2-135M-Instruct, a few seconds of work per step on a CPU."""
  c.pipeline = mc.ConfigDict({"run_upstream": False})
  c.init.update(hf_checkpoint="", from_workdir="")
  c.data.update(source=config_base.shared_data("gsm8k/train.jsonl"),
                eval_split=config_base.shared_data("gsm8k/test.jsonl"), tokenizer="",
                format="prompt_response", prompt_field="question", response_field="answer",
                prompt_suffix=GSM8K_SUFFIX, max_len=1024, max_prompt_len=256,
                truncation="skip", builtin_eval=256)
  c.reward.update(models="", functions="gsm8k,gsm8k_format", weights="gsm8k_format=0.1",
                  check="gsm8k", pass_n=8, pass_k="1,4,8")
  c.rl.update(iterations=200, rollout_batch=256, group_size=8, max_new_tokens=512, epochs=1,
              minibatches=4, kl_coef=0.001, adaptive_kl=False, missing_eos_score=-1.0)
  c.model.update(dtype="bfloat16", remat="dots_no_batch")
  c.optim.update(learning_rate=1e-6, warmup_steps=10)
  c.train.update(log_every=1, eval_every=50, checkpoint_every=25, num_samples=2)
  if smoke:
    config_base.smollm2(c)
    c.data.update(builtin_eval=4, max_prompt_len=384)
    c.reward.update(pass_n=2, pass_k="1,2", pass_prompts=4)
    c.rl.update(iterations=2, rollout_batch=8, group_size=4, max_new_tokens=64, minibatches=2)
    c.optim.learning_rate = 1e-4
    c.train.update(eval_every=2, checkpoint_every=2)
