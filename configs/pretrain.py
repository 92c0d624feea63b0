"""Causal-LM pretraining: loss on every token, documents packed into fixed-length rows.

  python -m rlhf_jax.main --config=configs/pretrain.py         # built-in corpus, CPU, minutes
  python -m rlhf_jax.main --config=configs/pretrain.py:text \
      --config.data.source=/data/corpus.jsonl --config.data.tokenizer=/ckpt/tokenizer_dir

Presets: "" (the built-in task's mixed-quality corpus), "text" (any dataset with a text field).
"""

from rlhf_jax import config_base


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  c = config_base.base_config("pretrain")
  c.data.format = "text"
  c.data.builtin_train = 6000
  c.data.builtin_eval = 200
  c.train.steps = 600
  c.optim.learning_rate = 2e-3
  if preset == "text":
    c.data.tokenizer = ""
    c.data.max_len = 1024
    c.model.dtype = "bfloat16"
  elif preset:
    raise ValueError(f"configs/pretrain.py: unknown preset {preset!r}; use text")
  c.workdir = f"runs/pretrain{'_' + preset if preset else ''}"
  return c
