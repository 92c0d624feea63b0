"""Building blocks of the stage configs in `configs/`: sections shared by every stage.

Each `configs/<stage>.py` has `get_config(arg)` returning a locked `ml_collections.ConfigDict`;
the sections here keep field names and defaults in one place. Optional fields are typed
placeholders (None until set), so `--config.model.hidden=256` works and a misspelt key fails.
Each field's meaning is documented beside its default.
"""

from __future__ import annotations

import dataclasses
import os
import typing

import ml_collections as mc
from ml_collections import config_dict

from rlhf_jax.models.config import ModelConfig


def model_section(preset: str = "tiny") -> mc.ConfigDict:
  """`preset` names a shape in rlhf_jax.models.config.PRESETS; any other field overrides it.

  When `init.hf_checkpoint` or `init.from_workdir` is set, the source decides the shape; only
  the runtime fields (dtype, param_dtype, remat, scan_layers, attention, logits_chunk,
  unroll_decode, score_pooling) and the LoRA fields (lora_rank, lora_alpha, lora_targets)
  apply.

  `attention` is the compute switch of the attention kernel: "auto" (the default: cuDNN flash
  attention on a GPU where dtype and shapes allow, "xla" elsewhere), "einsum", "xla"
  (jax.nn.dot_product_attention) or "cudnn" (refused off a GPU); see rlhf_jax.models.attention.
  """
  fields = {
      "preset": preset,  # a PRESETS name: tiny, small, gpt2, qwen05b, llama1b
  }
  hints = typing.get_type_hints(ModelConfig)
  for f in dataclasses.fields(ModelConfig):
    t = hints[f.name]
    base = t if t in (int, float, str, bool) else (tuple if "tuple" in str(t) else str)
    fields[f.name] = config_dict.placeholder(base)
  return mc.ConfigDict(fields)


def shared_data(relative: str) -> str:
  """A file of the real-data folder the :smollm2 presets read: $RLHF_JAX_DATA, else
  ../shared/data beside this checkout (only the developers' machines have it; elsewhere the
  stage stops with "data.source=... does not exist": point data.source at your copy)."""
  root = os.environ.get("RLHF_JAX_DATA") or os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
  return os.path.normpath(os.path.join(root, relative))


def smollm2(c: mc.ConfigDict) -> None:
  """The :smollm2 presets' model: SmolLM2-135M-Instruct as `python -m rlhf_jax.models.fetch`
  converts it ($RLHF_JAX_SMOLLM2 or the user cache), read with its own tokenizer (ChatML, end of
  turn <|im_end|>), fp32 compute (bf16 is slower on CPUs), LoRA rank 8 on every projection, and
  full activation recomputation: a LoRA SFT step of 8 x 384 tokens without it peaked at 11.5 GB
  (30 layers of saved attention and MLP activations beside three [B, T, 49152] fp32 logit
  arrays) and was killed on a 24 GB machine shared with others."""
  from rlhf_jax.models import fetch  # pylint: disable=g-import-not-at-top
  c.init.hf_checkpoint = fetch.default_dir()
  c.init.from_workdir = ""
  c.data.tokenizer = ""
  c.model.dtype = "float32"
  c.model.remat = "full"
  c.model.lora_rank = 8
  c.model.lora_alpha = 16.0


def smollm2_prompts(c: mc.ConfigDict) -> None:
  """hh-rlhf helpful-base dialogues up to their last reply, in SmolLM2's chat template: the RL,
  best-of-n and sample prompts of the :smollm2 presets (a hash-held-out 10% evaluates). Longer
  prompts than 256 tokens are skipped (and counted), not cut: a cut loses the system prompt."""
  c.data.update(source=shared_data("hh-rlhf/helpful-base/test.jsonl.gz"), format="dialogue",
                text_field="chosen", eval_fraction=0.1, max_len=1024, max_prompt_len=256,
                truncation="skip", builtin_eval=32)


def init_section() -> mc.ConfigDict:
  return mc.ConfigDict({
      # A Hugging Face checkpoint directory (config.json + safetensors) to start from.
      "hf_checkpoint": "",
      # The workdir of an earlier stage (e.g. pretrain for SFT): its latest params are the start.
      "from_workdir": "",
  })


def mesh_section() -> mc.ConfigDict:
  # Sizes of the mesh axes; one may be -1 to take the remaining devices.
  return mc.ConfigDict({
      "data": -1,  # data parallelism: the batch is split, params are replicated
      "fsdp": 1,  # fully sharded data parallelism: the batch and the params are split
      "tensor": 1,  # tensor parallelism: heads and MLP columns are split
  })


def optim_section(**overrides) -> mc.ConfigDict:
  d = {
      "learning_rate": 1e-3,  # peak, after linear warm-up
      "warmup_steps": 20,  # linear warm-up from 0 to learning_rate
      "total_steps": config_dict.placeholder(int),  # None: train.steps
      "final_lr_fraction": 0.1,  # cosine decays to this fraction of the peak
      "weight_decay": 0.0,  # AdamW, on matrices only
      "b1": 0.9,  # Adam first-moment decay
      "b2": 0.95,  # Adam second-moment decay
      "eps": 1e-8,  # Adam epsilon
      "grad_clip_norm": 1.0,  # 0 disables
  }
  d.update(overrides)
  return mc.ConfigDict(d)


def data_section(**overrides) -> mc.ConfigDict:
  d = {
      # "builtin" (the built-in task), a local file/directory (.json/.jsonl/.parquet[.gz]), or a
      # Hugging Face hub dataset name.
      "source": "builtin",
      # Tokenizer: "builtin" (with source "builtin:checkable" it means that task's tokenizer),
      # or a directory with HF tokenizer files. A model from an HF checkpoint
      # (init.hf_checkpoint, or a workdir made from one) always reads text with the
      # checkpoint's own: "" or "builtin" mean it, another directory is an error.
      "tokenizer": "builtin",
      # "prompt_response", "dialogue" (hh-rlhf text) or "messages" (role/content list); "text"
      # for pretraining corpora.
      "format": "prompt_response",
      "prompt_field": "prompt",  # record field of the prompt (format="prompt_response")
      "response_field": "response",  # record field of the response
      "input_field": "",  # optional, appended to the prompt (Alpaca's instruction + input)
      "text_field": "text",  # pretraining text, and the dialogue field when format="dialogue"
      "messages_field": "messages",  # role/content list field (format="messages")
      "dialogue_loss": "last_turn",  # or "all_turns"
      "prompt_template": "",  # "" = the tokenizer's default rendering; else uses "{prompt}"
      "prompt_suffix": "",  # appended to every prompt's text before rendering (an instruction)
      "max_len": 64,  # tokens per example (prompt + response + eos)
      # What to do with longer examples: "skip", "truncate_prompt_left" or "error".
      "truncation": "truncate_prompt_left",
      "train_split": "train",  # hub split names; local files are split by hash
      "eval_split": "",  # "" = hold out eval_fraction of train by a hash of the prompt
      "eval_fraction": 0.05,  # held out by hash when eval_split is ""
      "max_records": 0,  # 0 = all
      # The built-in task: how many examples to generate for each split.
      "builtin_train": 4000,
      "builtin_eval": 256,  # held-out examples of the built-in task
  }
  d.update(overrides)
  return mc.ConfigDict(d)


def train_section(**overrides) -> mc.ConfigDict:
  d = {
      "steps": 500,  # optimizer steps of the stage
      "batch_size": 32,  # global, over all processes
      "log_every": 50,  # steps between console lines (every step goes to metrics.jsonl)
      "eval_every": 100,  # steps between held-out evaluations (and one at the end)
      "eval_batches": 4,  # 0 = the whole eval split
      "checkpoint_every": 200,  # steps between checkpoints (and one at the end)
      "keep_checkpoints": 2,  # newest checkpoints kept; older ones are deleted
      "stop_at": 0,  # stop (with a checkpoint) after this step, as a pre-empted run would
      "num_samples": 4,  # samples printed at each eval
      "sample_tokens": 24,  # new tokens per printed sample
      "sample_temperature": 0.7,  # of the printed samples
      # Peak TFLOP/s per device for the MFU figure; 0 = the data sheet's value for known chips.
      "peak_tflops": 0.0,
      # A step with a NaN/Inf loss, gradient or weight is never applied. "stop": the run ends
      # there, naming the step and the last good checkpoint; "skip": it goes on without it.
      "on_nonfinite": "stop",
      "max_nonfinite_skips": 3,  # "skip": this many non-finite steps in a row stop the run
  }
  d.update(overrides)
  return mc.ConfigDict(d)


def eval_policy_section() -> mc.ConfigDict:
  """The built-in task's policy evaluation (`rlhf_jax.train.policy_eval`): the trained policy
  beside its starting one on the RL stage's held-out prompts, sampled as the RL stage samples."""
  return mc.ConfigDict({
      "prompts": 256,  # 0 = skip; the RL stage's held-out prompts (data.builtin_eval)
      "max_prompt_len": 24,  # as the RL config's data.max_prompt_len
      "max_new_tokens": 40,  # as rl.max_new_tokens
      "temperature": 1.0,  # as rl.temperature
      "batch_size": 64,  # prompts per compiled sampling call
  })


def base_config(stage: str) -> mc.ConfigDict:
  return mc.ConfigDict({
      "stage": stage,  # which stage runs: a key of rlhf_jax.stages.STAGES
      "seed": 0,  # parameters, data order and sampling all derive from it
      "workdir": f"runs/{stage}",  # --workdir overrides
      "model": model_section(),
      "init": init_section(),
      "mesh": mesh_section(),
      # Overrides of rlhf_jax.parallel.DEFAULT_RULES: ((logical_axis, mesh_axes), ...).
      "sharding_rules": (),
      "optim": optim_section(),
      "data": data_section(),
      "train": train_section(),
  })


def parse_arg(arg: str | None) -> tuple[str, dict[str, str]]:
  """'preset,key=value,...' -> (preset, {key: value}); big_vision's `:variant` convention."""
  preset, kv = "", {}
  for part in (arg or "").split(","):
    part = part.strip()
    if not part:
      continue
    if "=" in part:
      k, v = part.split("=", 1)
      kv[k.strip()] = v.strip()
    elif preset:
      raise ValueError(f"two presets given: {preset!r} and {part!r}")
    else:
      preset = part
  return preset, kv


def apply_overrides(config, overrides):
  """Sets each dotted key of `overrides` ({"train.steps": 10, ...}) on `config` (FieldReferences
  follow) and returns it; a key the config lacks is a KeyError naming it."""
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = config
    for p in path:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"{key}: no such config field")
    node[leaf] = value
  return config


def from_file(spec: str):
  """The config of `path/to/config.py[:arg]`, as `--config=` would build it (for notebooks and
  scripts that call `rlhf_jax.stages.run(config, workdir)` themselves)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    from rlhf_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f"config file {path!r} does not exist")
  name = "rlhf_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  mod_spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def sibling(config_file: str, name: str, arg=None):
  """get_config(arg) of configs/<name>.py, the file beside `config_file` (one config building on
  another: a2c/grpo/rloo/dpo on ppo, the pipeline's stages on theirs)."""
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f"{name}.py")
  return from_file(path + (f":{arg}" if arg else ""))
