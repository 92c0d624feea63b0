"""From tokenized examples to fixed-shape numpy batches, with a resumable position.

An `Example` is one sequence and its loss mask (loss_mask[t] is True iff token t is a target,
predicted from the tokens before it). Batches are dicts of [B, T] numpy arrays with exactly the
keys "tokens" (int32, right-padded with pad_id), "loss_mask" (bool) and "attention_mask" (bool,
True on real tokens). `BatchIterator` yields this process's rows of each global batch, reshuffled
each epoch from (seed, epoch); its `state()` / `restore()` make a resumed run see exactly the
batches an uninterrupted one would (`EpochOrder`: that index stream, shared with the comparison
and scored-response iterators). Eval batches have one fixed shape (the last is filled with empty
rows) so evaluation never recompiles. Not for: tokenization or record formats
(`demonstrations.py`), device placement or sharding (the train loop).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np

from rlhf_jax.errors import ConfigError, ShapeError

KEYS = ("tokens", "loss_mask", "attention_mask")


@dataclasses.dataclass(frozen=True)
class Example:
  tokens: np.ndarray  # [T] int32
  loss_mask: np.ndarray  # [T] bool


def make_example(tokens: Sequence[int], loss_mask: Sequence[bool]) -> Example:
  tokens_T, loss_mask_T = np.asarray(tokens, np.int32), np.asarray(loss_mask, bool)
  if tokens_T.ndim != 1 or tokens_T.shape != loss_mask_T.shape:
    raise ShapeError(f"an example needs 1-D tokens and loss_mask of one length, got "
                     f"{tokens_T.shape} and {loss_mask_T.shape}")
  return Example(tokens_T, loss_mask_T)


def pad_batch(examples: Sequence[Example], seq_len: int, pad_id: int,
              rows: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded {"tokens", "loss_mask", "attention_mask"}, each [rows, seq_len].

  `rows` (default len(examples)) above len(examples) adds empty rows: pad tokens, both masks
  False, so they count for nothing in any masked mean.
  """
  rows = len(examples) if rows is None else rows
  if rows < len(examples):
    raise ShapeError(f"{len(examples)} examples do not fit a batch of {rows} rows")
  tokens_BxT = np.full((rows, seq_len), pad_id, np.int32)
  loss_mask_BxT = np.zeros((rows, seq_len), bool)
  attention_mask_BxT = np.zeros((rows, seq_len), bool)
  for i, ex in enumerate(examples):
    n = len(ex.tokens)
    if n > seq_len:
      raise ShapeError(f"an example of {n} tokens does not fit seq_len={seq_len} (data.max_len)")
    tokens_BxT[i, :n] = ex.tokens
    loss_mask_BxT[i, :n] = ex.loss_mask
    attention_mask_BxT[i, :n] = True
  return {"tokens": tokens_BxT, "loss_mask": loss_mask_BxT, "attention_mask": attention_mask_BxT}


def pack_examples(examples: Sequence[Example], seq_len: int) -> list[Example]:
  """Concatenates documents and cuts rows of exactly seq_len; the tail shorter than a row is
  dropped.

  Documents attend across their boundaries within a row, as in GPT-style pretraining; the EOS
  between them tells the model where one ends. Each row's first token has loss_mask False: it has
  no context in the row, so it cannot be predicted (the loss ignores position 0 anyway; saying so
  in the mask keeps target-token counts honest). Other positions keep the documents' masks.
  """
  if seq_len < 2:
    raise ConfigError(f"seq_len={seq_len} must be at least 2 to pack documents")
  if not examples:
    return []
  flat_N = np.concatenate([e.tokens for e in examples]).astype(np.int32)
  flat_mask_N = np.concatenate([e.loss_mask for e in examples]).astype(bool)
  n_rows = len(flat_N) // seq_len
  tokens_RxT = flat_N[:n_rows * seq_len].reshape(n_rows, seq_len)
  mask_RxT = flat_mask_N[:n_rows * seq_len].reshape(n_rows, seq_len).copy()
  mask_RxT[:, 0] = False
  return [Example(tokens_RxT[r], mask_RxT[r]) for r in range(n_rows)]


class EpochOrder:
  """This process's indices of each global batch, over endless shuffled epochs of n items.

  Every process computes the same global order (from seed and epoch alone) and keeps indices
  [process_index * B / P, (process_index + 1) * B / P), so the processes together see exactly
  the global batch. A batch that crosses an epoch boundary takes the old epoch's last items then
  the new epoch's first ones, so no item is skipped or repeated within an epoch. `state()` /
  `restore()` make a resumed run read exactly the batches an uninterrupted one would. The
  batch iterators of examples, comparisons and scored responses all draw from one.
  """

  def __init__(self, n: int, batch_size: int, seed: int = 0, shuffle: bool = True,
               process_index: int = 0, process_count: int = 1):
    if batch_size < 1:
      raise ConfigError(f"train.batch_size={batch_size} must be positive")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ConfigError(f"process_index={process_index} is not in [0, {process_count})")
    if batch_size % process_count:
      raise ConfigError(f"train.batch_size={batch_size} must divide by the {process_count} "
                        "processes")
    self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
    self.process_index, self.process_count = process_index, process_count
    self.epoch, self.index = 0, 0
    self._order = self._make_order()

  def _make_order(self) -> np.ndarray:
    if not self.shuffle:
      return np.arange(self.n)
    # Seeded by (seed, epoch) alone, so any epoch's order can be rebuilt on restore.
    return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

  def state(self) -> dict:
    """The position: the epoch and the index of the next item in its order."""
    return {"epoch": int(self.epoch), "index": int(self.index)}

  def restore(self, state: dict) -> None:
    epoch, index = int(state["epoch"]), int(state["index"])
    if epoch < 0 or not 0 <= index <= self.n:
      raise ConfigError(f"batch iterator state {state} does not fit {self.n} items (was the "
                        "data changed since the checkpoint?)")
    self.epoch, self.index = epoch, index
    self._order = self._make_order()

  def next_indices(self) -> list[int]:
    picked: list[int] = []
    while len(picked) < self.batch_size:
      if self.index >= len(self._order):
        self.epoch, self.index = self.epoch + 1, 0
        self._order = self._make_order()
      take = min(self.batch_size - len(picked), len(self._order) - self.index)
      picked.extend(int(i) for i in self._order[self.index:self.index + take])
      self.index += take
    rows = self.batch_size // self.process_count
    return picked[self.process_index * rows:(self.process_index + 1) * rows]


class BatchIterator:
  """Endless shuffled epochs over `examples`; yields this process's rows of each global batch
  (the order and its resumable state: `EpochOrder`)."""

  def __init__(self, examples: Sequence[Example], batch_size: int, seq_len: int, pad_id: int,
               seed: int = 0, shuffle: bool = True, process_index: int = 0,
               process_count: int = 1):
    self.order = EpochOrder(len(examples), batch_size, seed, shuffle, process_index,
                            process_count)
    if not examples:
      raise ConfigError("no training examples")
    longest = max(len(e.tokens) for e in examples)
    if longest > seq_len:  # fail at construction, not at some later step
      raise ShapeError(f"an example of {longest} tokens does not fit seq_len={seq_len} "
                       "(data.max_len)")
    self.examples, self.seq_len, self.pad_id = list(examples), seq_len, pad_id

  def state(self) -> dict:
    return self.order.state()

  def restore(self, state: dict) -> None:
    self.order.restore(state)

  def next(self) -> dict[str, np.ndarray]:
    return pad_batch([self.examples[i] for i in self.order.next_indices()], self.seq_len,
                     self.pad_id)

  __next__ = next

  def __iter__(self) -> BatchIterator:
    return self


def eval_batches(examples: Sequence[Example], batch_size: int, seq_len: int,
                 pad_id: int) -> Iterator[dict[str, np.ndarray]]:
  """Global batches in order, all [batch_size, seq_len]; the last is topped up with empty rows
  (attention and loss masks all False) so every batch has the same shape."""
  for i in range(0, len(examples), batch_size):
    yield pad_batch(examples[i:i + batch_size], seq_len, pad_id, rows=batch_size)
