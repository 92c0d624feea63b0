"""Sampling from any policy checkpoint with the compiled sampler (KV cache, one while_loop).

  python -m rlhf_jax.main --config=configs/sample.py --config.init.from_workdir=runs/ppo
  python -m rlhf_jax.main --config=configs/sample.py --config.init.from_workdir=runs/sft \
      --config.prompts="Human: describe the kitten please . Assistant:"
  python -m rlhf_jax.main --config=configs/sample.py --config.init.hf_checkpoint=/ckpt/Qwen2.5-0.5B \
      --config.prompts="What is RLHF?" --config.sampling.temperature=0.7
  python -m rlhf_jax.main --config=configs/sample.py:smollm2 --config.prompts="What is RLHF?"

Plain prompts are rendered with the tokenizer's chat template (one user turn) when it has one.
Without `prompts` or `prompts_file`, the held-out prompts of `data` are used (the built-in
task's by default, with their gold scores). Samples go to `<workdir>/samples.jsonl`.
"""

import ml_collections as mc

from rlhf_jax import config_base


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  if preset not in ("", "smollm2"):
    raise ValueError(f"configs/sample.py: unknown preset {preset!r}; use smollm2")
  c = config_base.base_config("sample")
  c.init.from_workdir = ""  # "" = runs/ppo, unless init.hf_checkpoint is set
  c.prompts = ""  # "text|text|...": sample these instead of the data's held-out prompts
  # A .txt file (one prompt a line; "\\n" in a line is a newline) or .jsonl ({"prompt": ...}).
  c.prompts_file = ""
  c.data.max_prompt_len = 24  # data prompts longer than this keep their last tokens
  c.data.builtin_eval = 64
  c.sampling = mc.ConfigDict({
      "max_new_tokens": 40,  # longest sampled response
      "temperature": 1.0,  # 0 = greedy
      "top_k": 0,  # 0 = the whole vocabulary
      "top_p": 1.0,  # 1 = no nucleus truncation
      "batch_size": 64,  # prompts per compiled call; divides over the mesh
      "num_prompts": 0,  # 0 = all
      "show": 5,  # printed on the console
  })
  c.workdir = "runs/sample"
  if preset == "smollm2":  # SmolLM2-135M-Instruct itself, greedy, on held-out hh-rlhf prompts
    config_base.smollm2(c)
    c.model.lora_rank = 0
    config_base.smollm2_prompts(c)
    c.sampling.update(max_new_tokens=256, temperature=0.0, batch_size=8, num_prompts=8, show=3)
    c.workdir = "runs/sample_smollm2"
  return c
