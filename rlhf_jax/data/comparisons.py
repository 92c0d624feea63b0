"""Comparison data for the reward model: one prompt, K >= 2 responses, and how people ranked them.

One in-memory form, `Comparison`, whatever the source:
- "hh": Anthropic hh-rlhf records, `chosen` and `rejected` whole dialogues ("\\n\\nHuman: ...
  \\n\\nAssistant: ...") that share every turn but the last assistant reply: the shared turns are
  the prompt, the two final replies are the responses (chosen ranked first);
- "pairs": (prompt, chosen, rejected) with configurable field names, optional per-record margin;
- "ranked": (prompt, [responses], ranking) for K-way data: `ranking_field` lists response indices
  best first, or `scores_field` gives a score per response (higher is better, equal = tie); an
  optional per-response rank (`ranks_field`, "ranks": 0 = best, equal = tie), when a record has
  one, wins over both, so tied responses (the feedback app's exports) form no pair instead of
  being ordered by where they sit in the ranking list;
- the built-in task's simulated labelers ranking samples of the SFT policy, made by the
  reward-model stage and stored in the workdir as "ranked" JSON lines with the token ids beside
  the text (`prompt_ids`, `response_ids`), read back exactly.
That last file is the documented record schema every source can be exported to:
  {"prompt": str, "responses": [str, ...], "ranking": [best index, ..., worst index],
   "ranks": [rank per response] (optional; ties), "labeler": str (optional),
   "prompt_ids": [int] and "response_ids": [[int]] (optional)}

Each response becomes one row, prompt + response + EOS, rendered exactly as the SFT stage renders
a demonstration (same template or chat template), so the reward model reads what the policy
writes. Records are skipped and counted, by an explicit policy the stage logs: ties (no ordered
pair left), empty responses, identical responses (hh: chosen == rejected), hh pairs whose
dialogues differ before the final reply, and rows over `max_len` under truncation="skip"
("truncate_prompt_left" drops the oldest prompt tokens; "error" stops). Within a K-way record an
empty or duplicate response is dropped and the record kept if two ranks remain. A malformed
record stops the run with its file and line.

Splits: as for demonstrations, a hub `eval_split` or a hash split of the source by the prompt
(hh: by the first human turn, so no conversation's opening lands on both sides); optionally a
validation slice of the training records (`valid_fraction`, an independent hash of the same
key) on which to choose settings, so the held-out split is read once, at the end.
Not for: sampling the built-in comparisons (the reward-model stage), batching on the device.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from rlhf_jax.data import batching
from rlhf_jax.data.demonstrations import (DemoConfig, Encoder, _lookup,
                                          _MISSING, get_field, in_eval_split, is_local,
                                          read_records, split_dialogue, where)
from rlhf_jax.errors import ConfigError, DataError, ShapeError

FORMATS = ("hh", "pairs", "ranked")
TRUNCATION = ("skip", "truncate_prompt_left", "error")


@dataclasses.dataclass(frozen=True)
class Comparison:
  """rows[k]: int32 token ids of prompt + response k (+ EOS); response_lens[k]: how many of the
  row's last tokens are the response; ranks[k]: 0 = best, equal ranks = tied."""

  rows: tuple[np.ndarray, ...]
  response_lens: tuple[int, ...]
  ranks: tuple[int, ...]
  margin: float = 0.0
  group: str = ""  # where it came from (a file's subset folder), for per-source reports
  # Each response's length in the FULL text, before any truncation to max_len: the length
  # baselines use these (a truncated row's token count says nothing about its length).
  words: tuple[int, ...] = ()
  chars: tuple[int, ...] = ()
  truncated: bool = False  # some row lost tokens to max_len
  record: str = ""  # the record it came from ("file.jsonl:12"), for per-record outputs

  @property
  def k(self) -> int:
    return len(self.rows)

  def prompt_ids(self, i: int = 0) -> np.ndarray:
    return self.rows[i][:len(self.rows[i]) - self.response_lens[i]]

  def response_ids(self, i: int) -> np.ndarray:
    return self.rows[i][len(self.rows[i]) - self.response_lens[i]:]


@dataclasses.dataclass(frozen=True)
class ComparisonConfig:
  source: str
  format: str = "hh"
  chosen_field: str = "chosen"
  rejected_field: str = "rejected"
  prompt_field: str = "prompt"
  responses_field: str = "responses"
  ranking_field: str = "ranking"
  scores_field: str = ""  # "ranked": scores instead of a ranking
  ranks_field: str = "ranks"  # "ranked": per-response ranks (ties), used when a record has them
  margin_field: str = ""  # "pairs": an optional per-record margin
  prompt_template: str | None = None
  max_len: int = 512
  truncation: str = "truncate_prompt_left"
  train_split: str = "train"
  eval_split: str | None = None
  eval_fraction: float = 0.05
  valid_fraction: float = 0.0  # of the training records, for choosing settings
  max_records: int | None = None

  def __post_init__(self):
    if not isinstance(self.source, str) or not self.source:
      raise ConfigError(f"data.source={self.source!r} must be a non-empty path or dataset name")
    if not 0 <= self.valid_fraction < 1:
      raise ConfigError(f"data.valid_fraction={self.valid_fraction} must be in [0, 1)")
    if self.format not in FORMATS:
      raise ConfigError(f"data.format={self.format!r} must be one of {FORMATS} for comparisons")
    if self.truncation not in TRUNCATION:
      raise ConfigError(f"data.truncation={self.truncation!r} must be one of {TRUNCATION}")
    if self.max_len < 4:
      raise ConfigError(f"data.max_len={self.max_len} must be at least 4")
    if not 0 <= self.eval_fraction < 1:
      raise ConfigError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")

  def demo_config(self) -> DemoConfig:
    """How one (prompt, response) row is rendered: the SFT stage's own rules."""
    return DemoConfig(source=self.source, format="prompt_response", prompt_field="prompt",
                      response_field="response", prompt_template=self.prompt_template,
                      max_len=self.max_len, truncation=self.truncation)


# What a trained reward model needs to read another file as it read its own (its model.json
# stores these, so `python -m rlhf_jax.reward.score` renders rows exactly as training did).
ROW_SETTINGS = ("format", "chosen_field", "rejected_field", "prompt_field", "responses_field",
                "ranking_field", "scores_field", "margin_field", "prompt_template", "max_len",
                "truncation")


@dataclasses.dataclass
class ComparisonStats:
  kept: int = 0
  pairs: int = 0  # ordered pairs in the kept records
  skipped_tie: int = 0
  skipped_empty: int = 0
  skipped_identical: int = 0
  skipped_mismatch: int = 0  # hh: the two dialogues differ before the final reply
  skipped_long: int = 0
  truncated: int = 0  # rows whose prompt was cut from the left
  dropped_responses: int = 0  # K-way: empty or duplicate responses removed from a kept record

  def __str__(self):
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dataclasses.asdict(self).items())


# ---- hh-rlhf -----------------------------------------------------------------------------------
def split_hh_pair(chosen: str, rejected: str):
  """(prompt messages, chosen reply, rejected reply) of an hh-rlhf record, or None when the two
  dialogues differ before their final assistant reply (or lack one)."""
  mc, mr = split_dialogue(chosen), split_dialogue(rejected)
  if not mc or not mr or mc[-1]["role"] != "assistant" or mr[-1]["role"] != "assistant":
    return None
  if mc[:-1] != mr[:-1]:
    return None
  return mc[:-1], mc[-1]["content"], mr[-1]["content"]


def dialogue_prompt(prompt, cfg: ComparisonConfig, origin: str, index: int):
  """A "pairs"/"ranked" prompt that is already an hh dialogue ("\n\nHuman: ...\n\nAssistant:",
  as in many hh-rlhf conversions) -> its messages, rendered as the "hh" format renders them,
  instead of being wrapped in the template a second time ("Human: Human: ..."). Any other
  prompt, or any prompt under an explicit `prompt_template`, is returned unchanged."""
  if cfg.prompt_template is not None or not isinstance(prompt, str):
    return prompt
  if not prompt.lstrip().startswith("Human:"):
    return prompt
  messages = split_dialogue(prompt.strip())
  if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
    messages = messages[:-1]  # the trailing "Assistant:" the response follows
  if not messages or messages[-1]["role"] != "user" or not all(m["content"] for m in messages):
    raise DataError(f"{where(origin, index)}: the prompt is an hh dialogue (starts with "
                    "'Human:') but does not end with a non-empty Human turn (optionally "
                    "followed by an empty 'Assistant:'); every turn must have text")
  return messages


def first_human_turn(text: str) -> str:
  turns = split_dialogue(text)
  users = [t["content"] for t in turns if t["role"] == "user"]
  return users[0] if users else text[:200]


# ---- records -> comparisons --------------------------------------------------------------------
def ranks_from_order(order: Sequence[int], k: int, origin: str, index: int) -> list[int]:
  """A ranking given as indices best first -> rank per response (0 = best)."""
  order = [int(i) for i in order]
  if sorted(order) != list(range(k)):
    raise DataError(f"{where(origin, index)}: ranking {order} is not an ordering of the "
                    f"{k} responses (indices 0..{k - 1}, each once)")
  ranks = [0] * k
  for r, i in enumerate(order):
    ranks[i] = r
  return ranks


def ranks_from_list(ranks, k: int, origin: str, index: int) -> list[int]:
  """Per-response ranks (0 = best, equal = tie) -> dense ranks, checked."""
  if (not isinstance(ranks, (list, tuple)) or len(ranks) != k or
      not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in ranks)):
    raise DataError(f"{where(origin, index)}: ranks {ranks!r} must give a rank >= 0 (0 = best, "
                    f"equal = tie) for each of the {k} responses")
  levels = sorted(set(ranks))
  return [levels.index(r) for r in ranks]


def _given_ranks(rec, cfg, k: int, origin: str, index: int) -> list[int] | None:
  """The record's own per-response ranks, or None when it has none."""
  v = _lookup(rec, cfg.ranks_field) if cfg.ranks_field else _MISSING
  return None if v is _MISSING or v is None else ranks_from_list(v, k, origin, index)


def ranks_from_scores(scores: Sequence[float]) -> list[int]:
  """Higher score = better; equal scores share a rank (dense ranking)."""
  levels = sorted(set(float(s) for s in scores), reverse=True)
  return [levels.index(float(s)) for s in scores]


class _Builder:
  """Record -> Comparison or None (skipped, counted in stats)."""

  def __init__(self, cfg: ComparisonConfig, tokenizer, stats: ComparisonStats):
    self.cfg, self.tok, self.stats = cfg, tokenizer, stats
    self.demo = cfg.demo_config()
    self.enc = Encoder(self.demo, tokenizer)

  def texts(self, rec, origin, index):
    """(prompt: str or messages, [response str], [rank], margin) or None (counted)."""
    cfg = self.cfg
    if cfg.format == "hh":
      chosen = get_field(rec, cfg.chosen_field, origin, index)
      rejected = get_field(rec, cfg.rejected_field, origin, index)
      if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise DataError(f"{where(origin, index)}: {cfg.chosen_field!r} and "
                        f"{cfg.rejected_field!r} must be dialogue strings")
      split = split_hh_pair(chosen, rejected)
      if split is None:
        self.stats.skipped_mismatch += 1
        return None
      prompt, a, b = split
      return prompt, [a, b], [0, 1], 0.0
    prompt = dialogue_prompt(get_field(rec, cfg.prompt_field, origin, index), cfg, origin,
                             index)
    if cfg.format == "pairs":
      responses = [get_field(rec, cfg.chosen_field, origin, index),
                   get_field(rec, cfg.rejected_field, origin, index)]
      ranks = [0, 1]
      margin = 0.0
      if cfg.margin_field:
        m = get_field(rec, cfg.margin_field, origin, index)
        try:
          margin = float(m)
        except (TypeError, ValueError):
          raise DataError(f"{where(origin, index)}: margin {m!r} is not a number") from None
      return prompt, [str(r) for r in responses], ranks, margin
    responses = get_field(rec, cfg.responses_field, origin, index)
    if not isinstance(responses, (list, tuple)):
      raise DataError(f"{where(origin, index)}: {cfg.responses_field!r} is not a list")
    given = _given_ranks(rec, cfg, len(responses), origin, index)
    if given is not None:
      ranks = given
    elif cfg.scores_field:
      scores = get_field(rec, cfg.scores_field, origin, index)
      if not isinstance(scores, (list, tuple)) or len(scores) != len(responses):
        raise DataError(f"{where(origin, index)}: {cfg.scores_field!r} must be a list with one "
                        f"score per response ({len(responses)})")
      try:
        ranks = ranks_from_scores(scores)
      except (TypeError, ValueError):
        raise DataError(f"{where(origin, index)}: scores {scores!r} are not numbers") from None
    else:
      order = get_field(rec, cfg.ranking_field, origin, index)
      if not isinstance(order, (list, tuple)):
        raise DataError(f"{where(origin, index)}: {cfg.ranking_field!r} is not a list")
      ranks = ranks_from_order(order, len(responses), origin, index)
    return prompt, [str(r) for r in responses], ranks, 0.0

  def encode_row(self, prompt, response: str, origin, index):
    """(ids, index of the first response token) or None when the response renders empty."""
    if isinstance(prompt, list):  # hh: the shared turns, then this reply
      pair = self.enc._render(prompt + [{"role": "assistant", "content": response}],  # pylint: disable=protected-access
                              [False] * len(prompt) + [True])
    else:
      pair = self.enc.encode({"prompt": str(prompt), "response": response}, origin, index)
    if pair is None or not any(pair[1]):
      return None
    return pair[0], pair[1].index(True)

  def fit(self, encoded, origin, index):
    """(rows that fit max_len or None when skipped, prompt tokens dropped). The prompt is cut by the SAME number of tokens
    in every row, so all K responses are judged against the same prompt text; a response still
    too long after that loses its tail."""
    cfg, longest = self.cfg, max(len(ids) for ids, _ in encoded)
    if longest <= cfg.max_len:
      return [ids for ids, _ in encoded], 0
    if cfg.truncation == "error":
      raise ShapeError(f"{where(origin, index)}: a row of {longest} tokens is longer than "
                       f"data.max_len={cfg.max_len} (data.truncation='error'; 'skip' or "
                       "'truncate_prompt_left' would keep going)")
    if cfg.truncation == "skip":
      return None, 0
    drop = max(min(longest - cfg.max_len, min(first for _, first in encoded) - 1), 0)
    return [ids[drop:][:cfg.max_len] for ids, _ in encoded], drop

  def build(self, rec, origin, index) -> Comparison | None:
    got = self.texts(rec, origin, index)
    if got is None:
      return None
    prompt, responses, ranks, margin = got
    return self.from_texts(prompt, responses, ranks, margin, origin, index)

  def from_texts(self, prompt, responses, ranks, margin, origin, index):
    st = self.stats
    keep, seen = [], set()
    for resp, rank in zip(responses, ranks):
      text = resp.strip()
      if not text or text in seen:
        keep.append(None)
        continue
      seen.add(text)
      keep.append((text, rank))
    live = [x for x in keep if x is not None]
    if len(live) < 2:
      if len(responses) == 2 and all(r.strip() for r in responses):
        st.skipped_identical += 1
      else:
        st.skipped_empty += 1
      return None
    if len({r for _, r in live}) < 2:
      st.skipped_tie += 1
      return None
    encoded, rks, texts = [], [], []
    for text, rank in live:
      row = self.encode_row(prompt, text, origin, index)
      if row is not None:
        encoded.append(row)
        rks.append(rank)
        texts.append(text)
    if len(encoded) < 2 or len(set(rks)) < 2:
      st.skipped_empty += 1
      return None
    rows, drop = self.fit(encoded, origin, index)
    if rows is None:
      st.skipped_long += 1
      return None
    lens = [len(r) - (first - drop) for r, (_, first) in zip(rows, encoded)]
    cut = any(len(r) < len(ids) for r, (ids, _) in zip(rows, encoded))
    rows = [np.asarray(r, np.int32) for r in rows]
    st.dropped_responses += len(responses) - len(rows)
    st.truncated += int(cut)
    return self.add(Comparison(tuple(rows), tuple(lens), tuple(rks), margin, group_of(origin),
                               tuple(word_count(t) for t in texts),
                               tuple(len(t) for t in texts), cut, where(origin, index)))

  def add(self, comp: Comparison) -> Comparison:
    self.stats.kept += 1
    r = np.asarray(comp.ranks)
    self.stats.pairs += int(np.sum(r[:, None] < r[None, :]))
    return comp


def group_of(origin: str) -> str:
  """The folder a record's file sits in ("helpful-base" for .../helpful-base/test.jsonl.gz:12),
  or the hub source name."""
  import os  # pylint: disable=g-import-not-at-top
  path = origin.rsplit(":", 1)[0] if origin.rsplit(":", 1)[-1].isdigit() else origin
  if os.path.isfile(path):
    return os.path.basename(os.path.dirname(os.path.abspath(path)))
  return path


def _split_key(rec: dict, cfg: ComparisonConfig) -> str:
  if cfg.format == "hh":
    v = _lookup(rec, cfg.chosen_field)
    return "" if v is _MISSING else first_human_turn(str(v))
  v = _lookup(rec, cfg.prompt_field)
  return "" if v is _MISSING else str(v).strip()


def comparisons_from_records(records: Iterable[tuple[str, int, dict]], tokenizer,
                             cfg: ComparisonConfig):
  """([Comparison], ComparisonStats) from (origin, index, record) triples."""
  stats = ComparisonStats()
  b = _Builder(cfg, tokenizer, stats)
  out = []
  for origin, index, rec in records:
    if not isinstance(rec, dict):
      raise DataError(f"{where(origin, index)} is a {type(rec).__name__}, not an object")
    if "prompt_ids" in rec and "response_ids" in rec and rec.get("response_ids") is not None:
      comp = _from_ids(rec, origin, index, cfg, b)
    else:
      comp = b.build(rec, origin, index)
    if comp is not None:
      out.append(comp)
      if cfg.max_records and stats.kept >= cfg.max_records:
        break
  return out, stats


def _from_ids(rec, origin, index, cfg: ComparisonConfig, b: _Builder):
  """A record that carries its own token ids (the built-in task's file): used exactly."""
  prompt = [int(t) for t in rec["prompt_ids"]]
  responses = [[int(t) for t in r] for r in rec["response_ids"]]
  ranks = _given_ranks(rec, cfg, len(responses), origin, index)
  if ranks is None:
    ranks = ranks_from_order(get_field(rec, cfg.ranking_field, origin, index), len(responses),
                             origin, index)
  texts = rec.get(cfg.responses_field)
  if not isinstance(texts, (list, tuple)) or len(texts) != len(responses):
    texts = [None] * len(responses)  # no text beside the ids: lengths in tokens
  encoded, rks, seen, words, chars = [], [], set(), [], []
  for r, rank, text in zip(responses, ranks, texts):
    if not r or tuple(r) in seen:  # empty, or a sample identical to one already kept
      b.stats.dropped_responses += 1
      continue
    seen.add(tuple(r))
    encoded.append((prompt + r, len(prompt)))
    rks.append(rank)
    words.append(len(r) if text is None else word_count(str(text)))
    chars.append(len(r) if text is None else len(str(text)))
  if len(encoded) < 2 or len(set(rks)) < 2:
    b.stats.skipped_tie += 1
    return None
  rows, drop = b.fit(encoded, origin, index)  # the same truncation rule as text records
  if rows is None:
    b.stats.skipped_long += 1
    return None
  cut = any(len(r) < len(ids) for r, (ids, _) in zip(rows, encoded))
  b.stats.truncated += int(cut)
  lens = [len(r) - (first - drop) for r, (_, first) in zip(rows, encoded)]
  return b.add(Comparison(tuple(np.asarray(r, np.int32) for r in rows), tuple(lens), tuple(rks),
                          group=group_of(origin), words=tuple(words), chars=tuple(chars),
                          truncated=cut, record=where(origin, index)))


def response_rows(records: Iterable[tuple[str, int, dict]], tokenizer, cfg: ComparisonConfig,
                  response_field: str = "response"):
  """[(record, int32 row ids)] for (prompt, response) records, one row each, rendered and cut
  to max_len exactly as a comparison's rows are (an empty response is an error: it has no
  reward)."""
  b = _Builder(cfg, tokenizer, ComparisonStats())
  out = []
  for origin, index, rec in records:
    prompt = dialogue_prompt(get_field(rec, cfg.prompt_field, origin, index), cfg, origin,
                             index)
    row = b.encode_row(prompt, str(get_field(rec, response_field, origin, index)).strip(),
                       origin, index)
    if row is None:
      raise DataError(f"{where(origin, index)}: empty {response_field!r}: nothing to score")
    rows, _ = b.fit([row], origin, index)
    if rows is None:
      raise DataError(f"{where(origin, index)}: longer than max_len={cfg.max_len} under "
                      "truncation='skip'; choose 'truncate_prompt_left' to score it")
    out.append((where(origin, index), np.asarray(rows[0], np.int32)))
  return out


def split_records(cfg: ComparisonConfig, split: str):
  """(origin, index, record) of `split` before any parsing: "eval" (held out), "valid" (a slice
  of the training records, `valid_fraction`, to choose settings on without touching eval) or
  "train" (the rest)."""
  if split not in ("train", "valid", "eval"):
    raise ConfigError(f"split={split!r} must be 'train', 'valid' or 'eval'")
  if split == "eval" and cfg.eval_split:
    if is_local(cfg.source):
      if not is_local(cfg.eval_split):
        raise ConfigError(f"data.eval_split={cfg.eval_split!r}: with a local data.source the "
                          "eval split is a local file or folder (or leave it empty to hold out "
                          "data.eval_fraction of the source)")
      return read_records(cfg.eval_split)
    return read_records(cfg.source, cfg.eval_split)
  records = read_records(cfg.source, cfg.train_split)
  if split == "eval":
    if cfg.eval_fraction <= 0:
      return iter(())
    return (r for r in records if in_eval_split(_split_key(r[2], cfg), cfg.eval_fraction))

  def keep(rec) -> bool:
    key = _split_key(rec, cfg)
    if not cfg.eval_split and cfg.eval_fraction > 0 and in_eval_split(key, cfg.eval_fraction):
      return False
    # A second, independent hash (salted key) picks the validation slice of what is left.
    in_valid = cfg.valid_fraction > 0 and in_eval_split("valid|" + key, cfg.valid_fraction)
    return in_valid == (split == "valid")
  return (r for r in records if keep(r[2]))


def load_comparisons(cfg: ComparisonConfig, tokenizer, split: str):
  """([Comparison], ComparisonStats) of `split` ("train" or "eval") from cfg.source."""
  return comparisons_from_records(split_records(cfg, split), tokenizer, cfg)


def record_texts(cfg: ComparisonConfig, split: str = "train"):
  """Every text of a split's records (prompts and responses), e.g. to train a tokenizer on."""
  fields = ((cfg.chosen_field, cfg.rejected_field) if cfg.format == "hh" else
            (cfg.prompt_field, cfg.chosen_field, cfg.rejected_field) if cfg.format == "pairs"
            else (cfg.prompt_field, cfg.responses_field))
  for _, _, rec in split_records(cfg, split):
    for f in fields:
      v = _lookup(rec, f)
      if isinstance(v, (list, tuple)):
        yield from (str(x) for x in v)
      elif v is not _MISSING:
        yield str(v)


# ---- batches -----------------------------------------------------------------------------------
def pad_comparisons(comps: Sequence[Comparison], k: int, seq_len: int, pad_id: int,
                    rows: int | None = None, response_mask: bool = False) -> dict[str, np.ndarray]:
  """{"tokens" [B,K,T] int32, "attention_mask" [B,K,T] bool, "ranks" [B,K] int32 (-1: no
  response), "margin" [B] float32}, and with `response_mask` also "response_mask" [B,K,T] bool
  (the response tokens of each row); rows beyond len(comps) are empty (count for nothing)."""
  rows = len(comps) if rows is None else rows
  tokens = np.full((rows, k, seq_len), pad_id, np.int32)
  mask = np.zeros((rows, k, seq_len), bool)
  ranks = np.full((rows, k), -1, np.int32)
  margin = np.zeros((rows,), np.float32)
  resp = np.zeros((rows, k, seq_len), bool)
  for b, c in enumerate(comps):
    if c.k > k:
      raise DataError(f"a comparison with {c.k} responses does not fit K={k}")
    for j, row in enumerate(c.rows):
      if len(row) > seq_len:
        raise DataError(f"a row of {len(row)} tokens does not fit seq_len={seq_len}")
      tokens[b, j, :len(row)] = row
      mask[b, j, :len(row)] = True
      resp[b, j, len(row) - c.response_lens[j]:len(row)] = True
      ranks[b, j] = c.ranks[j]
    margin[b] = c.margin
  out = {"tokens": tokens, "attention_mask": mask, "ranks": ranks, "margin": margin}
  if response_mask:
    out["response_mask"] = resp
  return out


def rank_matrix(comps: Sequence[Comparison], k: int) -> np.ndarray:
  """int32[N, K]: ranks (0 = best, -1 where there is no response)."""
  out = np.full((len(comps), k), -1, np.int32)
  for b, c in enumerate(comps):
    out[b, :c.k] = c.ranks
  return out


LENGTH_UNITS = ("words", "chars", "tokens")


def word_count(text: str) -> int:
  """Whitespace-separated words: the length unit of the baselines (tokenizer-independent)."""
  return len(text.split())


def response_lengths(comps: Sequence[Comparison], k: int, unit: str = "words") -> np.ndarray:
  """int32[N, K]: each response's length (0 where absent) for the length baselines: "words" or
  "chars" of the full response text, before truncation, or "tokens" as kept in the rows (what
  the model saw; shorter than the text when a row was cut to max_len)."""
  if unit not in LENGTH_UNITS:
    raise ConfigError(f"length unit {unit!r} must be one of {LENGTH_UNITS}")
  out = np.zeros((len(comps), k), np.int32)
  for b, c in enumerate(comps):
    v = c.response_lens if unit == "tokens" else getattr(c, unit)
    if len(v) != c.k:
      raise DataError(f"comparison {b} carries no full-text {unit} counts (built without its "
                      "text); use unit='tokens'")
    out[b, :c.k] = v
  return out


def truncated_fraction(comps: Sequence[Comparison]) -> float:
  """The fraction of comparisons with a row cut to max_len (nan for none)."""
  return float(np.mean([c.truncated for c in comps])) if comps else float("nan")


class ComparisonIterator:
  """Shuffled batches of whole comparisons, epoch after epoch; `state()`/`restore()` make a
  resumed run read exactly the batches an uninterrupted one would. Each process reads its own
  slice of every global batch."""

  def __init__(self, comps: Sequence[Comparison], batch_size: int, k: int, seq_len: int,
               pad_id: int, seed: int, process_index: int = 0, process_count: int = 1,
               response_mask: bool = False):
    if not comps:
      raise DataError("no training comparisons (every record was skipped or the source is "
                      "empty)")
    self.order = batching.EpochOrder(len(comps), batch_size, seed,
                                     process_index=process_index, process_count=process_count)
    self.comps, self.k, self.seq_len = comps, k, seq_len
    self.pad_id, self.response_mask = pad_id, response_mask

  def state(self) -> dict:
    s = self.order.state()  # saved as {"epoch", "pos"}, as checkpoints have always held it
    return {"epoch": s["epoch"], "pos": s["index"]}

  def restore(self, state: dict) -> None:
    self.order.restore({"epoch": state["epoch"], "index": state["pos"]})

  def next(self) -> dict[str, np.ndarray]:
    mine = self.order.next_indices()
    return pad_comparisons([self.comps[i] for i in mine], self.k, self.seq_len, self.pad_id,
                           response_mask=self.response_mask)
