"""Demonstrations (and plain text) from files, the hub, or memory, as tokenized `Example`s.

Records come through `datasets` (local .json/.jsonl/.parquet files, optionally .gz, a folder of
them, or a hub dataset name) or as in-memory dicts (the built-in task); all take the same path:
record -> segments of text, each a prompt part or a target part -> ids and a loss mask.

Formats (`DemoConfig.format`):
- "prompt_response": fields `prompt_field` (+ optional `input_field`) and `response_field`;
  rendered with the tokenizer's chat template when it has one and no `prompt_template` is set,
  else with `prompt_template` ("{prompt}" placeholder). The response is tokenized on its own,
  after a single space, and followed by EOS; only response and EOS tokens carry loss.
- "dialogue": Anthropic hh-rlhf text ("\\n\\nHuman: ... \\n\\nAssistant: ...") in `text_field`;
  loss on the last assistant turn (default) or on all of them.
- "messages": a list of {"role", "content"} in `messages_field`; loss on assistant turns.
- "text": pretraining documents in `text_field`; loss on every token, EOS appended.
Not for: comparison data (the reward-model stage), batching (`batching.py`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import time
import zlib
from typing import Any, Iterable

from rlhf_jax.data.batching import Example, make_example
from rlhf_jax.errors import ConfigError, DataError, ShapeError

FORMATS = ("prompt_response", "dialogue", "messages", "text")
TRUNCATION = ("skip", "truncate_prompt_left", "error")
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
DEFAULT_PROMPT_TEMPLATE = "\n\nHuman: {prompt}\n\nAssistant:"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  source: str
  format: str = "prompt_response"
  prompt_field: str = "prompt"
  response_field: str = "response"
  input_field: str | None = None
  text_field: str = "text"
  messages_field: str = "messages"
  dialogue_loss: str = "last_turn"  # or "all_turns"
  prompt_template: str | None = None  # None: chat template if any, else DEFAULT_PROMPT_TEMPLATE
  add_bos: bool = False
  max_len: int = 512
  truncation: str = "truncate_prompt_left"
  train_split: str = "train"
  eval_split: str | None = None  # None: hold out eval_fraction of train_split by prompt hash
  eval_fraction: float = 0.05
  max_records: int | None = None

  def __post_init__(self):
    if self.format not in FORMATS:
      raise ConfigError(f"data.format={self.format!r} must be one of {FORMATS}")
    if self.truncation not in TRUNCATION:
      raise ConfigError(f"data.truncation={self.truncation!r} must be one of {TRUNCATION}")
    if self.dialogue_loss not in ("last_turn", "all_turns"):
      raise ConfigError(f"data.dialogue_loss={self.dialogue_loss!r}: 'last_turn' or 'all_turns'")
    if self.max_len < 2:
      raise ConfigError(f"data.max_len={self.max_len} must be at least 2")
    if not 0 <= self.eval_fraction < 1:
      raise ConfigError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")
    if self.prompt_template is not None and "{prompt}" not in self.prompt_template:
      raise ConfigError(f"data.prompt_template={self.prompt_template!r} lacks '{{prompt}}'")


@dataclasses.dataclass
class Stats:
  kept: int = 0
  skipped_empty: int = 0
  skipped_long: int = 0
  truncated: int = 0

  def __str__(self):
    return (f"{self.kept} kept, {self.truncated} truncated, {self.skipped_long} too long "
            f"skipped, {self.skipped_empty} empty skipped")


# ---- reading records ---------------------------------------------------------------------------
def _local_files(path: str) -> list[str]:
  if os.path.isdir(path):
    files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                   if _builder(f, strict=False))
    if not files:
      raise DataError(f"data.source={path!r}: no .json/.jsonl/.parquet files in the folder")
    return files
  _builder(path)
  return [path]


def _builder(path: str, strict: bool = True) -> str | None:
  name = path[:-3] if path.endswith(".gz") else path
  ext = os.path.splitext(name)[1].lower()
  if ext in _BUILDERS:
    return _BUILDERS[ext]
  if strict:
    raise DataError(f"data.source={path!r}: unsupported file type {ext or '(none)'}; use .json, "
                    ".jsonl or .parquet (optionally .gz)")
  return None


def _is_local(source: str) -> bool:
  return os.path.sep in source and not re.fullmatch(r"[\w.-]+/[\w.-]+", source) or \
      os.path.exists(source) or source.startswith((".", "~"))


def read_records(source: str, split: str | None = None) -> Iterable[tuple[str, int, dict]]:
  """(origin, index, record) from a local file/folder or a hub dataset."""
  import datasets  # pylint: disable=g-import-not-at-top
  datasets.disable_progress_bars()
  source = os.path.expanduser(source)
  if _is_local(source):
    if not os.path.exists(source):
      raise DataError(f"data.source={source!r} does not exist")
    for f in _local_files(source):
      try:
        ds = datasets.load_dataset(_builder(f), data_files=f, split="train")
      except Exception as e:  # datasets wraps parse errors in several types
        raise DataError(f"{f}: could not be read as {_builder(f)}: "
                        f"{str(e).splitlines()[0][:300]}") from None
      for i, rec in enumerate(ds):
        yield f, i, rec
  else:
    try:
      ds = datasets.load_dataset(source, split=split)
    except Exception as e:
      raise DataError(f"data.source={source!r} (hub dataset, split {split!r}) could not be "
                      f"loaded: {str(e).splitlines()[0][:300]}") from None
    for i, rec in enumerate(ds):
      yield f"{source}[{split}]", i, rec


def get_field(rec: dict, path: str, origin: str, index: int) -> Any:
  """rec[path], where path may be dotted ("instances.0.output"); DataError names what lacks."""
  cur: Any = rec
  for part in path.split("."):
    # `datasets` gives every record every column of the file, None where the record lacks it.
    if isinstance(cur, dict) and cur.get(part) is not None:
      cur = cur[part]
    elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
      cur = cur[int(part)]
    else:
      have = sorted(k for k, v in rec.items() if v is not None) if isinstance(rec, dict) else (
          type(rec).__name__)
      raise DataError(f"{origin}: record {index} has no field {path!r} (its fields: {have})")
  return cur


# ---- records to segments -----------------------------------------------------------------------
_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_dialogue(text: str) -> list[dict]:
  """hh-rlhf text -> [{"role": "user"|"assistant", "content"}], in order."""
  parts = _TURN.split(text)
  turns = []
  for role, content in zip(parts[1::2], parts[2::2]):
    turns.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
  return turns


def _plain_segments(messages: list[dict], train_roles: list[bool]) -> list[tuple[str, bool]]:
  """hh-style rendering; each trained assistant reply is its own target segment."""
  segs = []
  for m, train in zip(messages, train_roles):
    tag = "Human" if m["role"] in ("user", "human") else (
        "Assistant" if m["role"] == "assistant" else m["role"].capitalize())
    if m["role"] == "assistant":
      segs.append((f"\n\n{tag}:", False))
      segs.append((" " + m["content"], train))
    else:
      segs.append((f"\n\n{tag}: {m['content']}", False))
  return segs


class _Encoder:
  def __init__(self, cfg: DemoConfig, tokenizer):
    self.cfg, self.tok = cfg, tokenizer
    self.use_chat = (cfg.prompt_template is None and bool(getattr(tokenizer, "chat_template",
                                                                  None)))

  def encode(self, rec: dict, origin: str, index: int):
    """(ids, mask) or None for an empty target."""
    cfg, tok = self.cfg, self.tok
    if cfg.format == "text":
      text = get_field(rec, cfg.text_field, origin, index)
      ids = tok.encode(str(text))
      return (ids + [tok.eos_id], [True] * (len(ids) + 1)) if ids else None
    if cfg.format == "prompt_response":
      prompt = str(get_field(rec, cfg.prompt_field, origin, index))
      if cfg.input_field:
        extra = rec.get(cfg.input_field) if isinstance(rec, dict) else None
        if extra:
          prompt = f"{prompt}\n\n{extra}"
      response = str(get_field(rec, cfg.response_field, origin, index)).strip()
      if not response:
        return None
      messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
      if self.use_chat:
        return tok.render_messages(messages)
      template = cfg.prompt_template or DEFAULT_PROMPT_TEMPLATE
      segs = [(template.format(prompt=prompt), False), (" " + response, True)]
      return self._segments(segs)
    if cfg.format == "dialogue":
      text = get_field(rec, cfg.text_field, origin, index)
      messages = split_dialogue(str(text))
      if not messages or messages[-1]["role"] != "assistant":
        raise DataError(f"{origin}: record {index} field {cfg.text_field!r} does not end with an "
                        "'\\n\\nAssistant:' turn")
    else:
      messages = get_field(rec, cfg.messages_field, origin, index)
      if not isinstance(messages, list) or not all(
          isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise DataError(f"{origin}: record {index} field {cfg.messages_field!r} is not a list of "
                        "{'role', 'content'} dicts")
    if not messages or messages[-1]["role"] != "assistant" or not messages[-1]["content"]:
      return None
    last = len(messages) - 1
    train = [m["role"] == "assistant" and (cfg.dialogue_loss == "all_turns" or i == last)
             for i, m in enumerate(messages)]
    if self.use_chat:
      ids, mask = tok.render_messages(messages)
      if cfg.dialogue_loss == "last_turn":
        prefix, _ = tok.render_messages(messages[:-1]) if last else ([], [])
        mask = [m and i >= len(prefix) for i, m in enumerate(mask)]
      return ids, mask
    return self._segments(_plain_segments(messages, train))

  def _segments(self, segs):
    ids, mask = [], []
    for i, (text, target) in enumerate(segs):
      piece = self.tok.encode(text)
      ids += piece
      mask += [target] * len(piece)
      # EOS closes every trained reply (the last segment's, or one before a later turn).
      if target and (i == len(segs) - 1):
        ids.append(self.tok.eos_id)
        mask.append(True)
    return ids, mask


def _truncate(ids, mask, cfg: DemoConfig, stats: Stats, origin: str, index: int):
  n = len(ids)
  if n <= cfg.max_len:
    return ids, mask
  if cfg.truncation == "error":
    raise ShapeError(f"{origin}: record {index} is {n} tokens, longer than data.max_len="
                     f"{cfg.max_len} (data.truncation='error')")
  if cfg.truncation == "skip":
    stats.skipped_long += 1
    return None
  stats.truncated += 1
  first_target = mask.index(True)
  keep_head = 1 if cfg.add_bos else 0
  drop = min(n - cfg.max_len, max(first_target - keep_head - 1, 0))  # keep >= 1 prompt token
  ids = ids[:keep_head] + ids[keep_head + drop:]
  mask = mask[:keep_head] + mask[keep_head + drop:]
  return ids[:cfg.max_len], mask[:cfg.max_len]  # then the response's tail, if still too long


def _split_key(rec: dict, cfg: DemoConfig) -> str:
  """The text that decides a record's split: its prompt, so one prompt never lands in both."""
  if cfg.format == "prompt_response":
    return str(rec.get(cfg.prompt_field, ""))
  if cfg.format == "dialogue":
    turns = split_dialogue(str(rec.get(cfg.text_field, "")))
    return turns[0]["content"] if turns else ""
  if cfg.format == "messages":
    msgs = rec.get(cfg.messages_field) or [{}]
    return str(msgs[0].get("content", "")) if isinstance(msgs[0], dict) else ""
  return str(rec.get(cfg.text_field, ""))[:200]


def in_eval_split(key: str, eval_fraction: float) -> bool:
  return (zlib.crc32(key.encode("utf-8")) % 10_000) < eval_fraction * 10_000


def examples_from_records(records: Iterable[dict] | Iterable[tuple[str, int, dict]], tokenizer,
                          cfg: DemoConfig, origin: str = "<memory>") -> tuple[list[Example], Stats]:
  """Tokenized examples and counts; `records` are dicts or (origin, index, dict) triples."""
  enc = _Encoder(cfg, tokenizer)
  stats, out = Stats(), []
  t0 = time.perf_counter()
  for i, item in enumerate(records):
    if i and i % 20_000 == 0:  # a progress line for big datasets
      print(f"  tokenized {i} records ({stats.kept} kept) in {time.perf_counter() - t0:.0f}s",
            flush=True)
    org, idx, rec = item if isinstance(item, tuple) else (origin, i, item)
    if not isinstance(rec, dict):
      raise DataError(f"{org}: record {idx} is a {type(rec).__name__}, not an object")
    pair = enc.encode(rec, org, idx)
    if pair is None or not any(pair[1]):
      stats.skipped_empty += 1
      continue
    ids, mask = pair
    if cfg.add_bos and tokenizer.bos_id is not None:
      ids, mask = [tokenizer.bos_id] + ids, [False] + mask
    if cfg.format != "text":  # documents are packed, not truncated
      res = _truncate(ids, mask, cfg, stats, org, idx)
      if res is None:
        continue
      ids, mask = res
    out.append(make_example(ids, mask))
    stats.kept += 1
    if cfg.max_records and stats.kept >= cfg.max_records:
      break
  return out, stats


def load_examples(cfg: DemoConfig, tokenizer, split: str) -> tuple[list[Example], Stats]:
  """Examples of `split` ("train" or "eval") from cfg.source."""
  if split == "eval" and cfg.eval_split:
    return examples_from_records(read_records(cfg.source, cfg.eval_split), tokenizer, cfg)
  want_eval = split == "eval"
  records = read_records(cfg.source, cfg.train_split)
  if cfg.eval_fraction > 0 and not (cfg.eval_split and split == "train"):
    records = (r for r in records
               if in_eval_split(_split_key(r[2], cfg), cfg.eval_fraction) == want_eval)
  return examples_from_records(records, tokenizer, cfg)
