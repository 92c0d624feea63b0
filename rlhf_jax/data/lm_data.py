"""The data of the language-model stages, built from a stage config.

Turns `config.data` into a tokenizer, train/eval examples, a resumable batch iterator, fixed-shape
eval batches, and the prompts used to print samples. Sources: the built-in task, local files or a
hub dataset (through `demonstrations.py`), or random tokens (`source="random"`, for measuring
speed at a real model's shape). Not for: comparison data (the reward-model stage).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import numpy as np

from rlhf_jax import parallel, sampling
from rlhf_jax.data import batching, checkable_task, demonstrations, train_tokenizer
from rlhf_jax.data.tokenizer import is_builtin, load_tokenizer as _load_tokenizer
from rlhf_jax.errors import ConfigError, DataError


def _source_tokenizer(config) -> str:
  """The tokenizer the stage's model comes with: the HF checkpoint directory, or the spec an
  earlier stage's workdir recorded in its model.json; "" when neither says (random init)."""
  if config.init.hf_checkpoint:
    path = config.init.hf_checkpoint
    if not os.path.isdir(os.path.expanduser(path)):
      from rlhf_jax.models import fetch  # pylint: disable=g-import-not-at-top
      hint = (f"; `{fetch.FETCH_COMMAND}` makes it" if _same(path, fetch.default_dir()) else "")
      raise DataError(f"init.hf_checkpoint={path!r} does not exist{hint}")
    return path
  if config.init.from_workdir:
    path = os.path.join(config.init.from_workdir, "model.json")
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        return json.load(f).get("tokenizer") or ""
  return ""


def _same(a: str, b: str) -> bool:
  def norm(s):
    s = os.path.expanduser(s)
    return os.path.realpath(s) if os.path.isdir(s) else s
  return norm(a) == norm(b)


def tokenizer_spec(config) -> str:
  """The tokenizer a stage reads and writes its text with: the one rule.

  A model from a Hugging Face checkpoint (`init.hf_checkpoint`, or a workdir made from one)
  reads text with that checkpoint's own tokenizer: `data.tokenizer` "" or "builtin" (the default
  of every config) means it, and any other directory is a ConfigError (the model's ids would
  mean other words). Otherwise `data.tokenizer`, "builtin" for random tokens; "builtin" with the
  checkable prompts as the source means their tokenizer, "builtin:checkable" (the chat task's
  words and the number words).
  """
  spec, src = config.data.tokenizer, _source_tokenizer(config)
  if src and not is_builtin(src) and not train_tokenizer.parse_spec(src):
    if spec in ("", "builtin"):
      return src
    if not _same(spec, src):
      raise ConfigError(f"data.tokenizer={spec!r} differs from the tokenizer of the model this "
                        f"stage starts from ({src!r}); leave data.tokenizer empty to use the "
                        "model's own")
    return spec
  spec = spec or src
  if config.data.source == "random" and not spec:
    spec = "builtin"
  if config.data.source == checkable_task.SOURCE and spec == "builtin":
    spec = checkable_task.SOURCE
  if not spec:
    raise ConfigError("data.tokenizer is empty and init.hf_checkpoint is not set: name a "
                      "tokenizer directory, or 'builtin'")
  return spec


def load_tokenizer(config):
  return _load_tokenizer(tokenizer_spec(config))


@dataclasses.dataclass
class LMData:
  tokenizer: Any
  train_iter: Any
  eval_batches: Callable[[], Any]
  sample_prompts: list[list[int]]
  summary: str
  score_fn: Callable | None = None  # (prompts_BxP, responses_BxN) -> gold scores [B]

  def describe(self) -> str:
    return self.summary

  def samples(self, params, model_cfg, tc, seed: int):
    """Generates from the first eval prompts; returns (lines to print, extra metrics).

    With a gold score (the built-in task), all `sample_prompts` are sampled so the mean gold
    score is worth reading; only the first `num_samples` are printed.
    """
    prompts = self.sample_prompts if self.score_fn else self.sample_prompts[:tc.num_samples]
    if not prompts or not tc.num_samples:
      return [], {}
    tok = self.tokenizer
    tokens, mask = sampling.left_pad(prompts, tok.pad_id)
    n = min(tc.sample_tokens, model_cfg.max_seq_len - tokens.shape[1])
    if n < 1:  # the prompts already fill the model's context
      return [], {}
    out = sampling.generate(params, tokens, mask, jax.random.PRNGKey(seed), model_cfg=model_cfg,
                            cfg=sampling.SamplingConfig(max_new_tokens=n,
                                                        temperature=tc.sample_temperature),
                            eos_id=tok.eos_id, pad_id=tok.pad_id)
    resp, rmask = parallel.to_host(out["tokens"]), parallel.to_host(out["mask"])
    lines, extra = [], {}
    gold = None
    if self.score_fn is not None:
      gold = self.score_fn(tokens * mask, np.where(rmask, resp, tok.pad_id))
      extra["sample_gold"] = float(np.mean(gold))
    for i, p in enumerate(prompts[:tc.num_samples]):
      text = tok.decode([int(t) for t, m in zip(resp[i], rmask[i]) if m])
      score = f"  [gold {gold[i]:+.2f}]" if gold is not None else ""
      lines.append(f"  sample {i}: {tok.decode(p)!r} -> {text!r}{score}")
    return lines, extra


def build(config, tokenizer, model_cfg) -> LMData:
  dc, tc = config.data, config.train
  pretrain = config.stage == "pretrain"
  score_fn = None
  if dc.source == "random":
    return _random_data(config, tokenizer, model_cfg)
  if dc.source in ("builtin", checkable_task.SOURCE):
    train, evals, score_fn = _builtin_records(config, pretrain)
    demo_cfg = demo_config(config, builtin=True)
    train_ex, train_stats = demonstrations.examples_from_records(train, tokenizer, demo_cfg)
    eval_ex, eval_stats = demonstrations.examples_from_records(evals, tokenizer, demo_cfg)
  else:
    demo_cfg = demo_config(config, builtin=False)
    train_ex, train_stats = demonstrations.load_examples(demo_cfg, tokenizer, "train")
    eval_ex, eval_stats = demonstrations.load_examples(demo_cfg, tokenizer, "eval")
  if pretrain:
    train_ex = batching.pack_examples(train_ex, dc.max_len)
    eval_ex = batching.pack_examples(eval_ex, dc.max_len)
  if not train_ex:
    raise ConfigError(f"data.source={dc.source!r}: no training examples survived loading "
                      f"({train_stats})")
  if not eval_ex:
    raise ConfigError(f"data.source={dc.source!r}: the eval split is empty ({eval_stats})")
  procs, pid = jax.process_count(), jax.process_index()
  train_iter = batching.BatchIterator(train_ex, tc.batch_size, dc.max_len, tokenizer.pad_id,
                                      seed=config.seed, process_index=pid,
                                      process_count=procs)
  eval_list = eval_ex if not tc.eval_batches else eval_ex[:tc.eval_batches * tc.batch_size]

  def eval_batches():
    for b in batching.eval_batches(eval_list, tc.batch_size, dc.max_len, tokenizer.pad_id):
      yield _process_slice(b, pid, procs)

  n_prompts = max(tc.num_samples, 64 if score_fn else 0)
  prompts = [prompt_of(ex, pretrain) for ex in eval_ex[:n_prompts]]
  if pretrain:  # documents are packed into rows: say both, so the counts do not look at odds
    summary = (f"data {dc.source}: train {train_stats.kept} documents packed into "
               f"{len(train_ex)} rows of {dc.max_len} tokens, eval {eval_stats.kept} documents "
               f"into {len(eval_ex)} rows (train documents: {train_stats})")
  else:
    summary = (f"data {dc.source}: {len(train_ex)} train / {len(eval_ex)} eval examples "
               f"(train: {train_stats})")
  if score_fn is not None:
    demo_gold = [score_fn([prompt_of(ex, False)], [ex.tokens[len(prompt_of(ex, False)):]])[0]
                 for ex in eval_ex[:n_prompts]]
    summary += f"; mean gold score of the eval demonstrations {np.mean(demo_gold):.2f}"
  return LMData(tokenizer, train_iter, eval_batches, prompts, summary, score_fn)


def _builtin_records(config, pretrain: bool):
  """(train records, eval records, gold scorer or None) of the built-in task: its pretraining
  corpus or demonstrations, or the checkable task's demonstrations (no gold score)."""
  from rlhf_jax.data import builtin_task  # pylint: disable=g-import-not-at-top
  dc = config.data
  if dc.source == checkable_task.SOURCE:
    if pretrain:
      raise ConfigError(f"data.source={dc.source!r} holds demonstrations, not a pretraining "
                        "corpus; pretrain on 'builtin'")
    return (checkable_task.demonstrations(dc.builtin_train, "train", seed=config.seed),
            checkable_task.demonstrations(dc.builtin_eval, "eval", seed=config.seed), None)
  if pretrain:
    return ([{"text": t} for t in builtin_task.pretrain_corpus(dc.builtin_train, "train",
                                                                seed=config.seed)],
            [{"text": t} for t in builtin_task.pretrain_corpus(dc.builtin_eval, "eval",
                                                                seed=config.seed)], None)
  return (builtin_task.demonstrations(dc.builtin_train, "train", seed=config.seed),
          builtin_task.demonstrations(dc.builtin_eval, "eval", seed=config.seed),
          builtin_task.gold_scores)


def demo_config(config, builtin: bool):
  """The DemoConfig a stage's `config.data` describes (the built-in task's records carry their
  prompts already rendered, hence the plain "{prompt}" template)."""
  dc = config.data
  fmt = "text" if config.stage == "pretrain" else dc.format
  return demonstrations.DemoConfig(
      source=dc.source if not builtin else "<builtin>",
      format=fmt,
      prompt_field=dc.prompt_field,
      response_field=dc.response_field,
      input_field=dc.input_field or None,
      text_field=dc.text_field,
      messages_field=dc.messages_field,
      dialogue_loss=dc.dialogue_loss,
      prompt_template=("{prompt}" if builtin else (dc.prompt_template or None)),
      prompt_suffix=dc.get("prompt_suffix", "") or "",
      max_len=dc.max_len,
      truncation=dc.truncation,
      train_split=dc.train_split,
      eval_split=dc.eval_split or None,
      eval_fraction=dc.eval_fraction,
      max_records=dc.max_records or None,
  )


def prompt_of(example, pretrain: bool) -> list[int]:
  """The prompt ids of an example: the tokens before its first target (for a pretraining row,
  its first 8 tokens)."""
  tokens = [int(t) for t in example.tokens]
  if pretrain:
    return tokens[:8]
  first = int(np.argmax(example.loss_mask)) if np.any(example.loss_mask) else len(tokens)
  return tokens[:first]


def _process_slice(batch, pid, procs):
  if procs == 1:
    return batch
  rows = next(iter(batch.values())).shape[0] // procs
  return {k: v[pid * rows:(pid + 1) * rows] for k, v in batch.items()}


class _RandomIterator:
  """Uniform random tokens, loss on every token: the data of speed measurements."""

  def __init__(self, batch, seq_len, vocab, seed, pid, procs):
    self.shape, self.vocab, self.seed, self.step = (batch // procs, seq_len), vocab, seed, 0
    self.pid = pid

  def next(self):
    rng = np.random.default_rng((self.seed, self.pid, self.step))
    self.step += 1
    tokens = rng.integers(3, self.vocab, self.shape).astype(np.int32)
    ones = np.ones(self.shape, bool)
    return {"tokens": tokens, "loss_mask": ones, "attention_mask": ones}

  def state(self):
    return {"step": self.step}

  def restore(self, state):
    self.step = int(state["step"])


def _random_data(config, tokenizer, model_cfg) -> LMData:
  dc, tc = config.data, config.train
  procs, pid = jax.process_count(), jax.process_index()
  it = _RandomIterator(tc.batch_size, dc.max_len, model_cfg.vocab_size, config.seed, pid, procs)
  ev = _RandomIterator(tc.batch_size, dc.max_len, model_cfg.vocab_size, config.seed + 1, pid,
                       procs)
  eval_set = [ev.next() for _ in range(max(tc.eval_batches, 1))]
  return LMData(tokenizer, it, lambda: iter(eval_set), [], "random tokens (speed measurement)")
