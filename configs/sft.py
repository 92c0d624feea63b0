"""Supervised fine-tuning: loss on response tokens only.

  python -m rlhf_jax.main --config=configs/sft.py              # built-in task, CPU, minutes
  python -m rlhf_jax.main --config=configs/sft.py:hf \
      --config.init.hf_checkpoint=/ckpt/Qwen2.5-0.5B --config.data.source=/data/demos.jsonl
  python -m rlhf_jax.main --config=configs/sft.py:hh --config.init.hf_checkpoint=/ckpt/...
  python -m rlhf_jax.main --config=configs/sft.py:smollm2      # SmolLM2-135M-Instruct, CPU, LoRA
  python -m rlhf_jax.main --config=configs/sft.py:qwen05b      # random weights, benchmark shape
  python -m rlhf_jax.main --config=configs/sft.py:rejection_sampling   # after best_of_n.py:train

Presets (`:name`): "" (built-in task), "hf" (a Hugging Face checkpoint on demonstrations),
"hh" (Anthropic hh-rlhf dialogues, hub name Anthropic/hh-rlhf), "alpaca" (instruction/output
records), "smollm2" (SmolLM2-135M-Instruct from `python -m rlhf_jax.models.fetch` on the Alpaca
seed tasks, LoRA, CPU-sized), "qwen05b" / "llama1b" (random weights, synthetic tokens, for speed measurements),
"rejection_sampling" (the pipeline's SFT policy on its own best-of-16 answers, Llama 2's RS).
"""

from rlhf_jax import config_base


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  c = config_base.base_config("sft")
  c.data.builtin_train = 8000
  c.train.steps = 1200
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  c.optim.learning_rate = 2e-3
  if preset in ("hf", "hh", "alpaca"):
    c.data.tokenizer = ""  # the checkpoint's own tokenizer
    c.data.max_len = 1024
    c.data.truncation = "truncate_prompt_left"
    c.model.dtype = "bfloat16"
    c.model.remat = "dots_no_batch"
    c.optim.learning_rate = 1e-5
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.01
    c.train.batch_size = 64
    c.train.steps = 1000
    c.train.eval_every = 200
    c.train.checkpoint_every = 500
    c.train.sample_tokens = 128
    if preset == "hh":
      c.data.source = "Anthropic/hh-rlhf"
      c.data.format = "dialogue"
      c.data.text_field = "chosen"
      c.data.eval_split = "test"
    if preset == "alpaca":
      c.data.prompt_field = "instruction"
      c.data.response_field = "output"
      c.data.input_field = "input"
  elif preset == "smollm2":
    # SmolLM2-135M-Instruct (python -m rlhf_jax.models.fetch) on the 175 human-written Alpaca
    # seed tasks, LoRA, sized for a CPU. Rows are rendered with its ChatML template (its default
    # system prompt included), so nothing is cut: longer rows are skipped and counted.
    config_base.smollm2(c)
    c.data.source = config_base.shared_data("alpaca_seed_tasks/seed_tasks.jsonl")
    c.data.prompt_field = "instruction"
    c.data.input_field = "instances.0.input"
    c.data.response_field = "instances.0.output"
    c.data.max_len = 384
    c.data.truncation = "skip"
    c.data.eval_fraction = 0.1
    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 5
    c.train.update(batch_size=4, steps=30, log_every=5, eval_every=15, eval_batches=2,
                   checkpoint_every=15, num_samples=2, sample_tokens=160)
  elif preset in ("qwen05b", "llama1b"):
    c.model.preset = preset
    c.model.remat = "dots_no_batch"
    c.data.source = "random"
    c.data.max_len = 2048
    c.train.batch_size = 8
    c.train.steps = 30
    c.train.log_every = 10
    c.train.eval_every = 1000
    c.train.eval_batches = 1
    c.train.checkpoint_every = 1000
    c.train.num_samples = 0
    c.optim.learning_rate = 1e-5
  elif preset == "rejection_sampling":
    # Llama 2's rejection-sampling fine-tuning: the pipeline's SFT policy fine-tuned on its own
    # best-of-16 answers (by the reward model) to RL training prompts.
    c.init.from_workdir = "runs/pipeline/sft"  # the policy that was sampled
    c.data.source = "runs/best_of_n_train/best_of_n.jsonl"  # configs/best_of_n.py:train
    c.data.prompt_template = "{prompt}"  # the records' prompts are rendered already
    c.eval_policy = config_base.eval_policy_section()  # gold and KL beside the SFT policy
    c.train.steps = 300
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.optim.learning_rate = 3e-4
  elif preset:
    raise ValueError(f"configs/sft.py: unknown preset {preset!r}; use hf, hh, alpaca, smollm2, "
                     "qwen05b, llama1b, rejection_sampling")
  c.workdir = f"runs/sft{'_' + preset if preset else ''}"
  return c
