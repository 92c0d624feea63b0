"""The data of an RL stage: prompts to sample from (training and held-out) with each prompt's
metadata (what reward functions read: a reference answer), the gold scorer of the built-in
task, and the SFT batches of PPO-ptx. Sources: the built-in task, its checkable prompts
(`data.source="builtin:checkable"`), or a file / hub dataset (`prompt_records.py`).

Prompts of iteration i are a pure function of (seed, i): shuffled epochs over the training
prompts, so a resumed run samples the same prompts an uninterrupted one would without saving
any iterator state. Prompts are token lists; `sampling.left_pad` makes them a batch.
Not for: sampling or scoring (`rlhf_jax.rl.rollout`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import numpy as np

from rlhf_jax.data import (batching, builtin_task, checkable_task, demonstrations, lm_data,
                           prompt_records)
from rlhf_jax.errors import ConfigError, DataError


@dataclasses.dataclass
class RLData:
  train_prompts: list  # [list[int]]
  eval_prompts: list
  summary: str
  gold_fn: Callable | None = None  # (prompts [B, P], responses [B, N]) -> float32[B] (built-in)
  train_meta: list | None = None  # [dict] per train prompt: what reward functions read
  eval_meta: list | None = None

  def indices_for(self, iteration: int, batch: int, seed: int) -> list[int]:
    """Indices into train_prompts of the `batch` prompts of `iteration`: shuffled epochs, epoch
    e permuted by (seed, e); a batch crossing an epoch boundary continues into the next
    epoch's order."""
    n = len(self.train_prompts)
    out = []
    for pos in range(iteration * batch, (iteration + 1) * batch):
      epoch, i = divmod(pos, n)
      out.append(int(_epoch_order(n, seed, epoch)[i]))
    return out

  def prompts_for(self, iteration: int, batch: int, seed: int) -> list[list[int]]:
    """The `batch` training prompts of `iteration` (`indices_for`)."""
    return [self.train_prompts[i] for i in self.indices_for(iteration, batch, seed)]

  def meta_for(self, iteration: int, batch: int, seed: int) -> list[dict]:
    """The metadata of `prompts_for`'s prompts ({} each where the source has none)."""
    return [self.train_meta[i] if self.train_meta else {}
            for i in self.indices_for(iteration, batch, seed)]


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([seed, 7, epoch]).permutation(n)


def builtin_prompts(n: int, split: str, seed: int) -> list[list[int]]:
  """The built-in task's RL prompts of `split` ("train" or "eval") for run seed `seed`: every
  stage that evaluates on held-out prompts gets the same ones."""
  return [p.ids for p in builtin_task.prompts(n, split, seed + 303)]


def _checkable(n: int, split: str, seed: int, tokenizer) -> tuple[list, list[dict]]:
  """The checkable task's prompts of `split` and their records (the answer) as metadata."""
  recs = checkable_task.questions(n, split, seed + 303)
  return [tokenizer.encode(r["prompt"]) for r in recs], recs


def _from_source(config, tokenizer) -> tuple[list, list, list, list]:
  """(train prompts, eval prompts, train metadata, eval metadata) of a file or hub source."""
  # A prompt is cut by data.max_prompt_len only (counted below), never by the SFT row length
  # data.max_len; a record whose reply is long must not lose the start of its prompt.
  demo_cfg = dataclasses.replace(lm_data.demo_config(config, builtin=False), max_len=1 << 30)
  if demo_cfg.format == "prompt_response":  # with each record's reference answer
    train, train_meta = prompt_records.load(demo_cfg, tokenizer, "train")
    evals, eval_meta = prompt_records.load(demo_cfg, tokenizer, "eval")
  else:
    train_ex, _ = demonstrations.load_examples(demo_cfg, tokenizer, "train")
    eval_ex, _ = demonstrations.load_examples(demo_cfg, tokenizer, "eval")
    train = [lm_data.prompt_of(ex, False) for ex in train_ex]
    evals = [lm_data.prompt_of(ex, False) for ex in eval_ex]
    train_meta, eval_meta = [{} for _ in train], [{} for _ in evals]
  if config.data.builtin_eval:
    evals, eval_meta = evals[:config.data.builtin_eval], eval_meta[:config.data.builtin_eval]
  return train, evals, train_meta, eval_meta


def _fit(prompts: list, metas: list, width: int, skip: bool) -> tuple[list, list]:
  """Prompts (and their metadata) that fit `width`: longer ones dropped (skip) or cut from the
  left; empty ones dropped."""
  kept = [(p if skip else p[-width:], m) for p, m in zip(prompts, metas)
          if p and (len(p) <= width or not skip)]
  return [p for p, _ in kept], [m for _, m in kept]


def build(config, tokenizer) -> RLData:
  d = config.data
  width = d.max_prompt_len
  gold = None
  if d.source == "builtin":
    train = builtin_prompts(d.builtin_train, "train", config.seed)
    evals = builtin_prompts(d.builtin_eval, "eval", config.seed)
    train_meta, eval_meta = [{} for _ in train], [{} for _ in evals]
    gold = builtin_task.gold_scores
    where = "built-in RL prompts"
  elif d.source == checkable_task.SOURCE:
    train, train_meta = _checkable(d.builtin_train, "train", config.seed, tokenizer)
    evals, eval_meta = _checkable(d.builtin_eval, "eval", config.seed, tokenizer)
    where = "built-in checkable prompts"
  else:
    train, evals, train_meta, eval_meta = _from_source(config, tokenizer)
    where = f"prompts of {d.source}"
  long = sum(len(p) > width for p in train + evals)
  if long and d.truncation not in ("truncate_prompt_left", "skip"):
    raise DataError(f"{long} prompts are longer than data.max_prompt_len={width} (set "
                    "data.truncation='truncate_prompt_left' to keep their last tokens, or "
                    "'skip' to drop them)")
  skip = d.truncation == "skip"
  train, train_meta = _fit(train, train_meta, width, skip)
  evals, eval_meta = _fit(evals, eval_meta, width, skip)
  cut = (f"{long} longer ones skipped" if skip else
         f"{long} truncated from the left, their start lost")
  if not train:
    raise DataError(f"data.source={d.source!r}: no training prompts (of at most "
                    f"data.max_prompt_len={width} tokens)")
  if not evals:
    raise DataError(f"data.source={d.source!r}: no held-out prompts (of at most "
                    f"data.max_prompt_len={width} tokens)")
  summary = (f"{where}: {len(train)} train / {len(evals)} held-out prompts of at most {width} "
             f"tokens ({cut})")
  return RLData(train, evals, summary, gold, train_meta, eval_meta)


class PtxBatches:
  """PPO-ptx: `count` SFT batches of `rows` rows per iteration, stacked [count, rows, T], from
  the pipeline's SFT data; resumable (its position is saved with the RL checkpoint)."""

  def __init__(self, sft_config, tokenizer, rows: int, count: int, seed: int):
    if sft_config is None:
      raise ConfigError("rl.ptx_coef > 0 needs the SFT data: keep the pipeline.sft section")
    demo_builtin = sft_config.data.source == "builtin"
    if demo_builtin:
      recs = builtin_task.demonstrations(sft_config.data.builtin_train, "train",
                                         seed=sft_config.seed)
      examples, _ = demonstrations.examples_from_records(
          recs, tokenizer, lm_data.demo_config(sft_config, builtin=True))
    else:
      examples, _ = demonstrations.load_examples(
          lm_data.demo_config(sft_config, builtin=False), tokenizer, "train")
    self.count = count
    self.iter = batching.BatchIterator(examples, rows, sft_config.data.max_len,
                                       tokenizer.pad_id, seed=seed + 11)

  def next(self) -> dict:
    parts = [self.iter.next() for _ in range(self.count)]
    return {k: np.stack([p[k] for p in parts]) for k in parts[0]}

  def state(self):
    return self.iter.state()

  def restore(self, s):
    self.iter.restore(s)
