"""Scored responses, the data of offline RL (ILQL): one prompt, one response, one reward.

Sources, all to one in-memory form (`ScoredResponse`):
- JSON-lines (or JSON/Parquet) records of (prompt, response, reward), field names configurable
  (`load_scored`). A record with "prompt_ids" and "response_ids" (what the best-of-n stage
  writes into `best_of_n_samples.jsonl`, every sample with its reward-model score
  "rm_score") is used token for token; otherwise prompt and response are rendered exactly as
  the SFT stage renders a demonstration (template or chat template, EOS after the response).
- Comparisons of any format the reward model reads (`from_comparisons`): each response of a
  ranking gets the score of its rank, 1 − 2·rank / worst rank: +1 for the best, −1 for the worst,
  evenly between (a pair: +1 and −1; tied responses share their score).
Splits: a record is held out by a hash of its prompt (`eval_fraction`), or comes from a
separate `eval_split` file.
Rows: the prompt is left-padded to `prompt_width` columns (a longer one loses its oldest
tokens, counted) and the response fills `response_len` slots (a longer one is skipped,
counted), the layout of a rollout row (`pad_scored`); `ScoredIterator` serves shuffled batches
and resumes where it stopped.
Not for: sampling or scoring responses (the best-of-n stage does that).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

from rlhf_jax.data import batching
from rlhf_jax.data.demonstrations import (DemoConfig, Encoder, get_field, in_eval_split,
                                          read_records, where)
from rlhf_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class ScoredResponse:
  prompt: np.ndarray  # int32 token ids
  response: np.ndarray  # int32 token ids (EOS included when the response ended)
  reward: float


@dataclasses.dataclass
class ScoredStats:
  kept: int = 0
  skipped_empty: int = 0
  skipped_long: int = 0  # responses longer than the response slots
  truncated_prompts: int = 0  # prompts that lost their oldest tokens

  def __str__(self):
    return (f"{self.kept} responses kept ({self.skipped_empty} empty and {self.skipped_long} "
            f"too long skipped; {self.truncated_prompts} prompts cut from the left)")


@dataclasses.dataclass(frozen=True)
class ScoredConfig:
  source: str
  prompt_field: str = "prompt"
  response_field: str = "response"
  reward_field: str = "reward"
  prompt_template: str | None = None
  eval_split: str | None = None
  eval_fraction: float = 0.05
  max_records: int | None = None

  def __post_init__(self):
    if not isinstance(self.source, str) or not self.source:
      raise ConfigError(f"data.source={self.source!r} must be a non-empty path or dataset name")
    if not 0 <= self.eval_fraction < 1:
      raise ConfigError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")


def rank_scores(ranks: Sequence[int]) -> list[float]:
  """1 − 2·rank / worst rank for each response (0 = best)."""
  worst = max(ranks)
  if worst <= 0:
    raise DataError(f"ranks {list(ranks)}: every response is tied; no score can be given")
  return [1.0 - 2.0 * r / worst for r in ranks]


def from_comparisons(comps) -> list[ScoredResponse]:
  """Every response of every comparison (`data.comparisons.Comparison`), scored by its rank."""
  out = []
  for c in comps:
    for i, s in enumerate(rank_scores(c.ranks)):
      out.append(ScoredResponse(np.asarray(c.prompt_ids(i), np.int32),
                                np.asarray(c.response_ids(i), np.int32), s))
  return out


def _reward(rec, cfg: ScoredConfig, origin: str, index: int) -> float:
  v = get_field(rec, cfg.reward_field, origin, index)
  try:
    r = float(v)
  except (TypeError, ValueError):
    raise DataError(f"{where(origin, index)}: reward {cfg.reward_field!r} is {v!r}, not a "
                    "number") from None
  if not math.isfinite(r):
    raise DataError(f"{where(origin, index)}: reward {cfg.reward_field!r} is {r}, not finite")
  return r


def _ids(rec, key: str, origin: str, index: int) -> np.ndarray:
  v = rec[key]
  if not isinstance(v, (list, tuple)) or not all(isinstance(t, int) and t >= 0 for t in v):
    raise DataError(f"{where(origin, index)}: {key!r} must be a list of token ids")
  return np.asarray(v, np.int32)


def scored_from_records(records: Iterable[tuple[str, int, dict]], tokenizer, cfg: ScoredConfig):
  """([ScoredResponse], ScoredStats) from (origin, index, record) triples."""
  enc = Encoder(DemoConfig(source=cfg.source, format="prompt_response",
                           prompt_field=cfg.prompt_field, response_field=cfg.response_field,
                           prompt_template=cfg.prompt_template), tokenizer)
  out, stats = [], ScoredStats()
  for origin, index, rec in records:
    if not isinstance(rec, dict):
      raise DataError(f"{where(origin, index)} is a {type(rec).__name__}, not an object")
    reward = _reward(rec, cfg, origin, index)
    if rec.get("prompt_ids") is not None and rec.get("response_ids") is not None:
      prompt = _ids(rec, "prompt_ids", origin, index)
      response = _ids(rec, "response_ids", origin, index)
    else:
      pair = enc.encode(rec, origin, index)
      if pair is None or not any(pair[1]):
        stats.skipped_empty += 1
        continue
      first = pair[1].index(True)
      prompt = np.asarray(pair[0][:first], np.int32)
      response = np.asarray(pair[0][first:], np.int32)
    if not len(response):
      stats.skipped_empty += 1
      continue
    out.append(ScoredResponse(prompt, response, reward))
    stats.kept += 1
    if cfg.max_records and stats.kept >= cfg.max_records:
      break
  return out, stats


def load_scored(cfg: ScoredConfig, tokenizer, split: str):
  """([ScoredResponse], ScoredStats) of `split` ("train" or "eval")."""
  if split not in ("train", "eval"):
    raise ConfigError(f"split={split!r} must be 'train' or 'eval'")
  if split == "eval" and cfg.eval_split:
    return scored_from_records(read_records(cfg.eval_split), tokenizer, cfg)

  def key(rec) -> str:
    v = rec.get(cfg.prompt_field) if isinstance(rec, dict) else None
    if v is None and isinstance(rec, dict):
      v = rec.get("prompt_ids")
    return str(v).strip()

  records = read_records(cfg.source)
  if cfg.eval_split or cfg.eval_fraction <= 0:
    held = lambda r: False  # noqa: E731
  else:
    held = lambda r: in_eval_split(key(r), cfg.eval_fraction)  # noqa: E731
  want = split == "eval"
  return scored_from_records((r for r in records if held(r[2]) == want), tokenizer, cfg)


def fit(items: Sequence[ScoredResponse], prompt_width: int, response_len: int,
        stats: ScoredStats | None = None) -> list[ScoredResponse]:
  """The responses that fit `response_len` slots, their prompts cut to the last
  `prompt_width` tokens; what was skipped or cut is counted in `stats`."""
  stats = stats if stats is not None else ScoredStats()
  out = []
  for x in items:
    if len(x.response) > response_len:
      stats.skipped_long += 1
      stats.kept -= 1
      continue
    if len(x.prompt) > prompt_width:
      stats.truncated_prompts += 1
      x = dataclasses.replace(x, prompt=x.prompt[-prompt_width:])
    out.append(x)
  return out


def pad_scored(items: Sequence[ScoredResponse], prompt_width: int, response_len: int,
               pad_id: int, rows: int | None = None) -> dict[str, np.ndarray]:
  """{"tokens", "attention_mask"} [B, P+N], "response_mask" [B, N], "reward" [B]; rows past
  len(items) (up to `rows`) are padding with an empty response."""
  b, p, n = rows or len(items), prompt_width, response_len
  tokens = np.full((b, p + n), pad_id, np.int32)
  attn = np.zeros((b, p + n), bool)
  resp = np.zeros((b, n), bool)
  reward = np.zeros((b,), np.float32)
  for i, x in enumerate(items):
    lp, lr = len(x.prompt), len(x.response)
    if lp > p or lr > n:
      raise DataError(f"row {i}: prompt {lp} / response {lr} tokens do not fit {p} / {n} "
                      "(use `fit` first)")
    tokens[i, p - lp:p] = x.prompt
    tokens[i, p:p + lr] = x.response
    attn[i, p - lp:p + lr] = True
    resp[i, :lr] = True
    reward[i] = x.reward
  return {"tokens": tokens, "attention_mask": attn, "response_mask": resp, "reward": reward}


class ScoredIterator:
  """Shuffled batches, epoch after epoch; `state()`/`restore()` resume exactly. Each process
  reads its own slice of every global batch."""

  def __init__(self, items: Sequence[ScoredResponse], batch_size: int, prompt_width: int,
               response_len: int, pad_id: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    if not items:
      raise DataError("no training responses (every record was skipped or the source is empty)")
    self.order = batching.EpochOrder(len(items), batch_size, seed,
                                     process_index=process_index, process_count=process_count)
    self.items, self.pad_id, self.width, self.n = items, pad_id, prompt_width, response_len

  def state(self) -> dict:
    return self.order.state()

  def restore(self, state: dict) -> None:
    self.order.restore(state)

  def next(self) -> dict[str, np.ndarray]:
    mine = self.order.next_indices()
    return pad_scored([self.items[i] for i in mine], self.width, self.n, self.pad_id)
