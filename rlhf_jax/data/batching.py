"""From tokenized examples to fixed-shape numpy batches, with a resumable position.

An `Example` is one sequence and its loss mask (loss_mask[t] is True iff token t is a target).
`BatchIterator` yields this process's rows of each global batch, reshuffled each epoch from
(seed, epoch), and its `state()` / `restore()` make a resumed run see exactly the batches an
uninterrupted one would. Eval batches have one fixed shape (the last is filled with empty rows)
so evaluation never recompiles. Not for: tokenization or record formats (`demonstrations.py`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlhf_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Example:
  tokens: np.ndarray  # [T] int32
  loss_mask: np.ndarray  # [T] bool


def make_example(tokens, loss_mask) -> Example:
  return Example(np.asarray(tokens, np.int32), np.asarray(loss_mask, bool))


def pad_batch(examples: list[Example], seq_len: int, pad_id: int,
              rows: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded {"tokens", "loss_mask", "attention_mask"}, each [rows, seq_len]."""
  rows = rows or len(examples)
  tokens = np.full((rows, seq_len), pad_id, np.int32)
  loss = np.zeros((rows, seq_len), bool)
  attn = np.zeros((rows, seq_len), bool)
  for i, ex in enumerate(examples):
    n = len(ex.tokens)
    if n > seq_len:
      raise ValueError(f"example of {n} tokens does not fit seq_len={seq_len}")
    tokens[i, :n], loss[i, :n], attn[i, :n] = ex.tokens, ex.loss_mask, True
  return {"tokens": tokens, "loss_mask": loss, "attention_mask": attn}


def pack_examples(examples: list[Example], seq_len: int) -> list[Example]:
  """Concatenates documents and cuts rows of exactly seq_len (the tail shorter than a row is
  dropped). Documents attend across their boundaries in a row, as in GPT-style pretraining; the
  EOS between them tells the model where one ends."""
  if not examples:
    return []
  flat = np.concatenate([e.tokens for e in examples])
  flat_mask = np.concatenate([e.loss_mask for e in examples])
  n = len(flat) // seq_len
  return [Example(flat[i * seq_len:(i + 1) * seq_len], flat_mask[i * seq_len:(i + 1) * seq_len])
          for i in range(n)]


class BatchIterator:
  """Endless shuffled epochs over `examples`; yields this process's rows of each global batch."""

  def __init__(self, examples: list[Example], batch_size: int, seq_len: int, pad_id: int,
               seed: int = 0, shuffle: bool = True, process_index: int = 0,
               process_count: int = 1):
    if batch_size % process_count:
      raise ConfigError(f"train.batch_size={batch_size} must divide by the {process_count} "
                        "processes")
    if not examples:
      raise ConfigError("no training examples")
    self.examples, self.batch_size, self.seq_len = examples, batch_size, seq_len
    self.pad_id, self.seed, self.shuffle = pad_id, seed, shuffle
    self.process_index, self.process_count = process_index, process_count
    self.epoch, self.index = 0, 0
    self._order = self._make_order()

  def _make_order(self):
    n = len(self.examples)
    if not self.shuffle:
      return np.arange(n)
    return np.random.default_rng([self.seed, self.epoch]).permutation(n)

  def state(self) -> dict:
    return {"epoch": int(self.epoch), "index": int(self.index)}

  def restore(self, state: dict) -> None:
    self.epoch, self.index = int(state["epoch"]), int(state["index"])
    self._order = self._make_order()

  def next(self) -> dict[str, np.ndarray]:
    picked = []
    while len(picked) < self.batch_size:
      if self.index >= len(self._order):
        self.epoch, self.index = self.epoch + 1, 0
        self._order = self._make_order()
      take = min(self.batch_size - len(picked), len(self._order) - self.index)
      picked.extend(self._order[self.index:self.index + take])
      self.index += take
    rows = self.batch_size // self.process_count
    mine = picked[self.process_index * rows:(self.process_index + 1) * rows]
    return pad_batch([self.examples[i] for i in mine], self.seq_len, self.pad_id)

  __next__ = next

  def __iter__(self):
    return self


def eval_batches(examples: list[Example], batch_size: int, seq_len: int, pad_id: int):
  """Global batches in order, all [batch_size, seq_len]; the last is topped up with empty rows
  (attention and loss masks all False) so every batch has the same shape."""
  for i in range(0, len(examples), batch_size):
    yield pad_batch(examples[i:i + batch_size], seq_len, pad_id, rows=batch_size)
