"""The same measurements through the PyTorch stack users compare us with, in the same run.

Every measurement takes the command line's `--dtype`, as ours does:
- `hf_generate`: Hugging Face transformers `generate` (eager PyTorch, weights in `dtype`, SDPA
  attention, KV cache), sampling at temperature 1 over the full vocabulary, `min_new_tokens` =
  `max_new_tokens` so every row runs the full length, as ours does;
- `hf_train`: one AdamW step of a causal-LM loss ("sft") or a pairwise Bradley–Terry loss over
  a sequence-classification head ("rm"), fp32 master weights, under bf16 autocast when
  `dtype` is bfloat16 (our arrangement), no gradient checkpointing;
- `trl_grpo`: one step of TRL's `GRPOTrainer` (the RL trainer TRL 1.x ships): `batch` /
  `num_generations` prompts × `num_generations` completions, reference model on, a reward model
  of the same shape; the median wall time of its training steps (each one generates, scores
  and updates), bf16 mixed precision when `dtype` is bfloat16.
The models are built from our `ModelConfig` through `rlhf_jax.models.hf.hf_config`, with random
weights; token ids are random. A word-level tokenizer whose words are the ids ("t2" … "tV-2"; 0, 1, V-1 are pad, unk, eos)
lets TRL round-trip text without any downloaded vocabulary.
Not for: our own figures (`ours`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from rlhf_jax.bench.common import record, time_calls, versions
from rlhf_jax.bench.ours import model_config

_VERSIONS = ("torch", "transformers", "trl", "accelerate")


def _torch():
  import torch  # pylint: disable=g-import-not-at-top
  cuda = torch.cuda.is_available()
  dev = torch.device("cuda" if cuda else "cpu")

  def sync():
    if cuda:
      torch.cuda.synchronize()

  name = f"cuda:{torch.cuda.get_device_name(0)}" if cuda else "cpu"
  return torch, dev, sync, name


def _peak_gib(torch):
  if torch.cuda.is_available():
    return torch.cuda.max_memory_allocated() / 2**30
  return None


def _hf_model(cfg, head: str, dtype):
  """A random-weight transformers model of our shape: head "lm" or "score" (num_labels=1)."""
  import transformers  # pylint: disable=g-import-not-at-top
  from rlhf_jax.models.hf import hf_config  # pylint: disable=g-import-not-at-top
  d = hf_config(cfg)
  d.pop("architectures")
  d.pop("dtype")
  conf = transformers.AutoConfig.for_model(d.pop("model_type"), **d)
  conf.pad_token_id = 0
  if head == "lm":
    return transformers.AutoModelForCausalLM.from_config(conf, dtype=dtype)
  conf.num_labels = 1
  return transformers.AutoModelForSequenceClassification.from_config(conf, dtype=dtype)


def _ids(torch, dev, vocab: int, shape, seed: int = 0):
  rng = np.random.default_rng(seed)
  return torch.as_tensor(rng.integers(1, vocab - 1, shape), device=dev)


def hf_generate(shape: str, batch: int, prompt: int, new: int, repeats: int,
                dtype: str = "bfloat16") -> dict:
  torch, dev, sync, name = _torch()
  cfg = model_config(shape, prompt + new)
  model = _hf_model(cfg, "lm", getattr(torch, dtype)).to(dev).eval()
  model.generation_config.eos_token_id = None
  ids = _ids(torch, dev, cfg.vocab_size, (batch, prompt))
  attn = torch.ones_like(ids)

  def run(n):
    def call():
      with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=n,
                             min_new_tokens=n, do_sample=True, temperature=1.0, top_k=0,
                             top_p=1.0, pad_token_id=0)
      sync()
      assert out.shape[1] == prompt + n, out.shape
    return call

  full = time_calls(run(new), repeats)
  one = time_calls(run(1), repeats)
  figures = {"tokens_per_s": batch * new / full["median_s"], "median_s": full["median_s"],
             "prefill_plus_one_s": one["median_s"],
             "step_ms": 1e3 * (full["median_s"] - one["median_s"]) / max(new - 1, 1),
             "peak_memory_gib": _peak_gib(torch)}
  setting = {"shape": shape, "batch": batch, "prompt": prompt, "new": new,
             "params_M": round(cfg.num_params() / 1e6, 1), "dtype": dtype,
             "weights": dtype, "sampling": "temperature 1, full vocabulary",
             "attention": getattr(model.config, "_attn_implementation", "?")}
  return record("generate", "hf_transformers", name, setting, figures, versions(*_VERSIONS))


def hf_train(shape: str, loss: str, batch: int, seq: int, repeats: int,
             peak_tflops: float | None = None, dtype: str = "bfloat16") -> dict:
  """One AdamW step on float32 weights, under bf16 autocast when `dtype` is bfloat16."""
  torch, dev, sync, name = _torch()
  cfg = model_config(shape, seq)
  head = "lm" if loss == "sft" else "score"
  model = _hf_model(cfg, head, torch.float32).to(dev).train()
  opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.0,
                          fused=dev.type == "cuda")
  rows = batch if loss == "sft" else 2 * batch
  ids = _ids(torch, dev, cfg.vocab_size, (rows, seq))
  amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16,
                       enabled=dtype == "bfloat16")

  def step():
    with amp:
      if loss == "sft":
        value = model(input_ids=ids, labels=ids).loss
      else:  # rows 2i (chosen) and 2i+1 (rejected) of one comparison
        r = model(input_ids=ids).logits[:, 0].float()
        value = -torch.nn.functional.logsigmoid(r[0::2] - r[1::2]).mean()
    value.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()

  t = time_calls(step, repeats)
  tok_s = rows * seq / t["median_s"]
  fpt = cfg.flops_per_token(seq, lm_head=loss == "sft")
  figures = {"tokens_per_s": tok_s, "step_s": t["median_s"], "model_tflops": fpt * tok_s / 1e12,
             "peak_memory_gib": _peak_gib(torch)}
  if peak_tflops:
    figures["mfu"] = fpt * tok_s / 1e12 / peak_tflops
  setting = {"shape": shape, "loss": loss, "batch": batch, "seq": seq,
             "params_M": round(cfg.num_params() / 1e6, 1), "dtype": dtype,
             "autocast": dtype == "bfloat16", "weights": "float32", "remat": "none",
             "optimizer": "AdamW",
             "flops_per_token": fpt}
  return record("train", "hf_transformers", name, setting, figures, versions(*_VERSIONS))


def _word_tokenizer(vocab: int, path: str):
  """A tokenizer whose word i is "t{i}" (id i; 0, 1, V-1 are <pad>, <unk>, <eos>): text <-> ids
  exactly, no download."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  # Special tokens get names no word contains (transformers splits text on special tokens).
  words = {f"t{i}": i for i in range(vocab)}
  words.update({"<pad>": 0, "<unk>": 1, "<eos>": vocab - 1})
  del words["t0"], words["t1"], words[f"t{vocab - 1}"]
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                              eos_token="<eos>", unk_token="<unk>")
  fast.save_pretrained(path)
  return fast


def trl_grpo(shape: str, batch: int, prompt: int, new: int, num_generations: int, steps: int,
             workdir: str | None = None, dtype: str = "bfloat16") -> dict:
  """Median seconds of TRL GRPOTrainer steps after the first (warm-up) one; `dtype` bfloat16
  is the Trainer's bf16 mixed precision (on the CPU too), float32 turns it off."""
  torch, dev, sync, name = _torch()
  import datasets  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  import trl  # pylint: disable=g-import-not-at-top
  if batch % num_generations:
    raise SystemExit(f"--batch={batch} must be a multiple of --generations={num_generations}")
  cfg = model_config(shape, prompt + new)
  root = workdir or tempfile.mkdtemp(prefix="trl_bench_")
  tok = _word_tokenizer(cfg.vocab_size, os.path.join(root, "policy"))
  _hf_model(cfg, "lm", torch.float32).save_pretrained(os.path.join(root, "policy"))
  _word_tokenizer(cfg.vocab_size, os.path.join(root, "rm"))
  _hf_model(cfg, "score", torch.float32).save_pretrained(os.path.join(root, "rm"))
  rng = np.random.default_rng(0)
  n_prompts = batch // num_generations * (steps + 1)
  prompts = [" ".join(f"t{i}" for i in rng.integers(2, cfg.vocab_size - 1, prompt))
             for _ in range(n_prompts)]
  if len(tok(prompts[0])["input_ids"]) != prompt:
    raise RuntimeError("the word tokenizer does not round-trip the synthetic prompts")
  times = []

  class Clock(transformers.TrainerCallback):

    def on_step_begin(self, args, state, control, **kw):
      sync()
      self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
      sync()
      times.append(time.perf_counter() - self.t0)

  bf16 = dtype == "bfloat16"
  args = trl.GRPOConfig(
      output_dir=os.path.join(root, "out"), per_device_train_batch_size=batch,
      gradient_accumulation_steps=1, num_generations=num_generations, steps_per_generation=1,
      num_iterations=1, max_completion_length=new, temperature=1.0, top_k=0, top_p=1.0,
      generation_kwargs={"min_new_tokens": new}, beta=0.04, learning_rate=1e-6,
      max_steps=steps + 1, logging_steps=1, save_strategy="no", report_to="none",
      bf16=bf16, use_cpu=dev.type != "cuda", gradient_checkpointing=False, use_vllm=False,
      shuffle_dataset=False, log_completions=False, dataloader_num_workers=0, seed=0)
  trainer = trl.GRPOTrainer(
      model=os.path.join(root, "policy"), reward_funcs=os.path.join(root, "rm"), args=args,
      train_dataset=datasets.Dataset.from_dict({"prompt": prompts}), processing_class=tok,
      reward_processing_classes=transformers.AutoTokenizer.from_pretrained(
          os.path.join(root, "rm")),
      callbacks=[Clock()])
  trainer.train()
  if len(times) < 2:
    raise RuntimeError(f"TRL ran {len(times)} steps; need a warm-up step and at least one more")
  lengths = [r.get("completions/mean_length") for r in trainer.state.log_history
             if "completions/mean_length" in r]
  figures = {"iteration_s": statistics.median(times[1:]), "times_s": times,
             "mean_completion_length": lengths[-1] if lengths else None,
             "peak_memory_gib": _peak_gib(torch)}
  setting = {"shape": shape, "algorithm": "grpo", "batch": batch, "prompt": prompt, "new": new,
             "sampled_tokens": batch * new, "prompts_per_step": batch // num_generations,
             "num_generations": num_generations, "beta": 0.04, "dtype": dtype,
             "models": "policy + reference + reward model, same shape (no critic)",
             "params_M": round(cfg.num_params() / 1e6, 1)}
  return record("rl_iteration", "trl_grpo", name, setting, figures, versions(*_VERSIONS))
