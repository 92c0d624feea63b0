"""Demonstrations (and plain text) from files, the hub, or memory, as tokenized `Example`s.

Records come through `datasets` (local .json/.jsonl/.parquet files, optionally .gz, a folder of
them, or a hub dataset name) or as in-memory dicts (the built-in task); all take one path:
record -> messages or segments of text -> ids and a loss mask (`Example`, see `batching.py`).
loss_mask[t] is True iff token t is a target: response/assistant tokens and the EOS closing the
trained reply; never prompt tokens, BOS or padding.

Formats (`DemoConfig.format`):
- "prompt_response": fields `prompt_field` (+ optional `input_field`, appended after a blank
  line as Alpaca does) and `response_field`; dotted paths ("instances.0.output") reach nested
  fields. Rendered with the tokenizer's chat template when it has one and no `prompt_template`
  is set, else with `prompt_template` ("{prompt}" placeholder). Joining rule: the response is
  tokenized on its own as " " + response.strip() (one space after the prompt, as in
  "Assistant: ..."), then EOS is appended.
- "dialogue": Anthropic hh-rlhf text ("\\n\\nHuman: ... \\n\\nAssistant: ...") in `text_field`;
  loss on the last assistant turn (default) or on all of them ("all_turns").
- "messages": a list of {"role", "content"} in `messages_field`; chat template if the tokenizer
  has one (each trained turn's end marker is a target), else the hh-style plain rendering.
- "text": pretraining documents in `text_field`; loss on every token, EOS after each document,
  no truncation (rows are cut by `batching.pack_examples`).
In the plain hh-style rendering a conversation stays exactly the hh-rlhf text, so the only EOS
is the one after the final reply; with "all_turns", earlier replies are targets without an EOS.

Splits: a hub source uses `train_split` / `eval_split` as split names; a local source holds out
`eval_fraction` of records by a hash of the prompt text (one prompt never lands in both), or,
when `eval_split` is set, reads eval records from that local path instead.
Not for: comparison data (the reward-model stage), batching (`batching.py`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import time
import zlib
from typing import Any, Iterable, Iterator, Sequence

from rlhf_jax.data.batching import Example, make_example
from rlhf_jax.errors import ConfigError, DataError, ShapeError

FORMATS = ("prompt_response", "dialogue", "messages", "text")
TRUNCATION = ("skip", "truncate_prompt_left", "error")
DIALOGUE_LOSS = ("last_turn", "all_turns")
_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
# Extensions that mark a source as a (possibly mistyped) local path rather than a hub name.
_FILE_LIKE = tuple(_BUILDERS) + (".gz", ".csv", ".tsv", ".txt", ".arrow", ".zst", ".bz2", ".xz")
DEFAULT_PROMPT_TEMPLATE = "\n\nHuman: {prompt}\n\nAssistant:"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  """How to read and tokenize one demonstrations source (built from the stage's `config.data`)."""

  source: str  # local file/folder or hub dataset name
  format: str = "prompt_response"  # one of FORMATS
  prompt_field: str = "prompt"
  response_field: str = "response"
  input_field: str | None = None  # appended to the prompt when present and non-empty
  text_field: str = "text"  # "dialogue" uses it too (hh-rlhf: "chosen")
  messages_field: str = "messages"
  dialogue_loss: str = "last_turn"  # or "all_turns"; "dialogue" and "messages" formats
  prompt_template: str | None = None  # None: chat template if any, else DEFAULT_PROMPT_TEMPLATE
  prompt_suffix: str = ""  # appended to every prompt text before rendering ("Answer with ...")
  add_bos: bool = False
  max_len: int = 512
  truncation: str = "truncate_prompt_left"  # one of TRUNCATION
  train_split: str = "train"  # hub split name
  eval_split: str | None = None  # hub split name, or a local path; None: hash split of train
  eval_fraction: float = 0.05
  max_records: int | None = None  # stop after this many kept examples

  def __post_init__(self):
    if not isinstance(self.source, str) or not self.source:
      raise ConfigError(f"data.source={self.source!r} must be a non-empty path or dataset name")
    if self.format not in FORMATS:
      raise ConfigError(f"data.format={self.format!r} must be one of {FORMATS}")
    if self.truncation not in TRUNCATION:
      raise ConfigError(f"data.truncation={self.truncation!r} must be one of {TRUNCATION}")
    if self.dialogue_loss not in DIALOGUE_LOSS:
      raise ConfigError(f"data.dialogue_loss={self.dialogue_loss!r} must be one of "
                        f"{DIALOGUE_LOSS}")
    for name in ("prompt_field", "response_field", "text_field", "messages_field"):
      if not getattr(self, name):
        raise ConfigError(f"data.{name} is empty")
    if self.max_len < 2:
      raise ConfigError(f"data.max_len={self.max_len} must be at least 2")
    if not 0 <= self.eval_fraction < 1:
      raise ConfigError(f"data.eval_fraction={self.eval_fraction} must be in [0, 1)")
    if self.max_records is not None and self.max_records < 1:
      raise ConfigError(f"data.max_records={self.max_records} must be positive (or None: all)")
    if self.prompt_template is not None and "{prompt}" not in self.prompt_template:
      raise ConfigError(f"data.prompt_template={self.prompt_template!r} lacks '{{prompt}}'")
    if self.prompt_template is not None:
      try:
        self.prompt_template.format(prompt="")
      except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"data.prompt_template={self.prompt_template!r} has a placeholder "
                          f"other than {{prompt}} ({e!r}); double literal braces") from None


@dataclasses.dataclass
class Stats:
  """Counts the stage logs: what was kept, and what was dropped or cut, and why."""

  kept: int = 0
  skipped_empty: int = 0
  skipped_long: int = 0
  truncated: int = 0

  def __str__(self):
    return (f"{self.kept} kept, {self.truncated} truncated, {self.skipped_long} too long "
            f"skipped, {self.skipped_empty} empty skipped")


# ---- reading records ---------------------------------------------------------------------------
def _builder(path: str, strict: bool = True) -> str | None:
  name = path[:-3] if path.endswith(".gz") else path
  ext = os.path.splitext(name)[1].lower()
  if ext in _BUILDERS:
    return _BUILDERS[ext]
  if strict:
    raise DataError(f"data.source={path!r}: unsupported file type {ext or '(none)'}; use .json, "
                    ".jsonl or .parquet (optionally .gz)")
  return None


def _local_files(path: str) -> list[str]:
  if os.path.isdir(path):
    files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                   if os.path.isfile(f) and _builder(f, strict=False))
    if not files:
      raise DataError(f"data.source={path!r}: no .json/.jsonl/.parquet files in the folder")
    return files
  _builder(path)
  return [path]


def is_local(source: str) -> bool:
  """Whether `source` names a local path (existing or not) rather than a hub dataset.

  Hub names are "name" or "owner/name"; anything that exists, is absolute, starts with "." or
  "~", has more than one "/", or ends like a data file is a path, so a mistyped path gets
  "does not exist" rather than a confusing hub error.
  """
  return (os.path.exists(os.path.expanduser(source)) or os.path.isabs(source) or
          source.startswith((".", "~")) or source.count("/") > 1 or
          (os.path.sep != "/" and os.path.sep in source) or
          source.lower().endswith(_FILE_LIKE))


def read_records(source: str, split: str | None = None) -> Iterator[tuple[str, int, dict]]:
  """(origin, index, record) from a local file/folder (`split` ignored) or a hub dataset."""
  import datasets  # pylint: disable=g-import-not-at-top
  datasets.disable_progress_bars()
  if is_local(source):
    path = os.path.expanduser(source)
    if not os.path.exists(path):
      raise DataError(f"data.source={source!r} does not exist")
    for f in _local_files(path):
      try:
        ds = datasets.load_dataset(_builder(f), data_files=f, split="train")
      except Exception as e:  # datasets wraps parse errors in several types
        bad = _first_bad_json_line(f)
        if bad:
          raise DataError(bad) from None
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise DataError(f"{f}: could not be read as {_builder(f)}: {first}") from None
      lines = _is_json_lines(f)
      try:
        for i, rec in enumerate(ds):
          yield (f"{f}:{i + 1}" if lines else f), i, rec
      except UnicodeDecodeError:
        raise DataError(_first_bad_json_line(f) or f"{f}: not UTF-8 text") from None
  else:
    try:
      ds = datasets.load_dataset(source, split=split)
    except Exception as e:  # offline, unknown name, unknown split, ...
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
      raise DataError(f"data.source={source!r} (hub dataset, split {split!r}) could not be "
                      f"loaded: {first}") from None
    for i, rec in enumerate(ds):
      yield f"{source}[{split}]", i, rec


def _is_json_lines(path: str) -> bool:
  return (path[:-3] if path.endswith(".gz") else path).lower().endswith(".jsonl")


def _first_bad_json_line(path: str) -> str | None:
  """'FILE:LINE: what is wrong' for the first line of a JSON file that is not UTF-8, or of a
  JSON-lines file that is not one JSON object; None when every line is fine."""
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  opener = gzip.open if path.endswith(".gz") else open
  if _builder(path) == "json":  # text: every line must be UTF-8
    with opener(path, "rb") as fh:
      for n, raw in enumerate(fh, 1):
        try:
          raw.decode("utf-8")
        except UnicodeDecodeError as e:
          return (f"{path}:{n}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                  f"{e.start + 1}); re-encode the file as UTF-8")
  if not _is_json_lines(path):
    return None
  with opener(path, "rt", encoding="utf-8") as fh:
    for n, line in enumerate(fh, 1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        return f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})"
      if not isinstance(obj, dict):
        return f"{path}:{n}: a {type(obj).__name__}, not a JSON object"
  return None


_MISSING = object()


def where(origin: str, index: int) -> str:
  """How an error names a record: "file.jsonl:12" when the origin has a line, else
  "file.parquet: record 11"."""
  tail = origin.rsplit(":", 1)[-1]
  return origin if tail.isdigit() else f"{origin}: record {index}"


def _lookup(rec: Any, path: str) -> Any:
  """rec[path] for a dotted path ("instances.0.output"), or _MISSING."""
  cur = rec
  for part in path.split("."):
    # `datasets` gives every record every column of the file, None where the record lacks it.
    if isinstance(cur, dict) and cur.get(part) is not None:
      cur = cur[part]
    elif isinstance(cur, (list, tuple)) and part.isdigit() and int(part) < len(cur):
      cur = cur[int(part)]
    else:
      return _MISSING
  return cur


def get_field(rec: dict, path: str, origin: str, index: int) -> Any:
  """rec[path] (path may be dotted); DataError names the file, record, field and what it has."""
  value = _lookup(rec, path)
  if value is _MISSING:
    have = (sorted(k for k, v in rec.items() if v is not None) if isinstance(rec, dict)
            else type(rec).__name__)
    raise DataError(f"{where(origin, index)}: has no field {path!r} (its fields: {have})")
  return value


# ---- records to token ids and masks ------------------------------------------------------------
# A turn starts at "\n\nHuman:" / "\n\nAssistant:" or at the very start of the text.
_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")


def split_dialogue(text: str) -> list[dict]:
  """hh-rlhf text -> [{"role": "user"|"assistant", "content"}], in order."""
  parts = _TURN.split(text)
  return [{"role": "user" if role == "Human" else "assistant", "content": content.strip()}
          for role, content in zip(parts[1::2], parts[2::2])]


def _plain_segments(messages: Sequence[dict], train: Sequence[bool]) -> list[tuple[str, bool]]:
  """hh-style rendering as (text, is_target) pieces; an assistant reply is its own piece."""
  segs = []
  for m, target in zip(messages, train):
    role = m["role"]
    tag = {"user": "Human", "human": "Human", "assistant": "Assistant"}.get(role,
                                                                             role.capitalize())
    if role == "assistant":
      segs.append((f"\n\n{tag}:", False))
      segs.append((" " + str(m["content"]).strip(), target))
    else:
      segs.append((f"\n\n{tag}: {str(m['content']).strip()}", False))
  return segs


class Encoder:
  """One record -> (ids, mask), or None when there is nothing to learn from it."""

  def __init__(self, cfg: DemoConfig, tokenizer):
    self.cfg, self.tok = cfg, tokenizer
    self.use_chat = (cfg.prompt_template is None and
                     bool(getattr(tokenizer, "chat_template", None)) and
                     hasattr(tokenizer, "render_messages"))

  def encode(self, rec: dict, origin: str, index: int):
    cfg = self.cfg
    if cfg.format == "text":
      ids = self.tok.encode(str(get_field(rec, cfg.text_field, origin, index)))
      return (ids + [self.tok.eos_id], [True] * (len(ids) + 1)) if ids else None
    if cfg.format == "prompt_response":
      return self._prompt_response(rec, origin, index)
    if cfg.format == "dialogue":
      text = get_field(rec, cfg.text_field, origin, index)
      messages = split_dialogue(str(text))
      if not messages:
        raise DataError(f"{where(origin, index)}: field {cfg.text_field!r} has no "
                        "'\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    else:
      messages = get_field(rec, cfg.messages_field, origin, index)
      if not isinstance(messages, (list, tuple)) or not all(
          isinstance(m, dict) and m.get("role") is not None and m.get("content") is not None
          for m in messages):
        raise DataError(f"{where(origin, index)}: field {cfg.messages_field!r} is not a list of "
                        "{'role', 'content'} dicts")
      messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    # Turns after the last assistant reply have nothing to teach; drop them.
    while messages and messages[-1]["role"] != "assistant":
      messages = messages[:-1]
    if not messages or not messages[-1]["content"].strip():
      return None
    last = len(messages) - 1
    train = [m["role"] == "assistant" and (cfg.dialogue_loss == "all_turns" or i == last)
             for i, m in enumerate(messages)]
    return self._render(messages, train)

  def _prompt_response(self, rec, origin, index):
    cfg = self.cfg
    prompt = str(get_field(rec, cfg.prompt_field, origin, index)).strip()
    if cfg.input_field:
      extra = _lookup(rec, cfg.input_field)
      if extra is not _MISSING and str(extra).strip():
        prompt = f"{prompt}\n\n{str(extra).strip()}"
    prompt += cfg.prompt_suffix
    response = str(get_field(rec, cfg.response_field, origin, index)).strip()
    if not response:
      return None
    if self.use_chat:
      return self.tok.render_messages([{"role": "user", "content": prompt},
                                       {"role": "assistant", "content": response}])
    template = cfg.prompt_template if cfg.prompt_template is not None else (
        DEFAULT_PROMPT_TEMPLATE)
    return self._segments([(template.format(prompt=prompt), False), (" " + response, True)])

  def _render(self, messages, train):
    if self.use_chat:
      return self.tok.render_messages(messages, train)
    return self._segments(_plain_segments(messages, train))

  def _segments(self, segs):
    """Each piece tokenized on its own (so target boundaries are exact); EOS after the last."""
    ids, mask = [], []
    for text, target in segs:
      piece = self.tok.encode(text)
      ids += piece
      mask += [target] * len(piece)
    if segs and segs[-1][1]:
      ids.append(self.tok.eos_id)
      mask.append(True)
    return ids, mask


def truncate_example(ids, mask, cfg: DemoConfig, stats: Stats, origin: str, index: int):
  """Applies cfg.truncation to a sequence longer than cfg.max_len; None means skip it."""
  n = len(ids)
  if n <= cfg.max_len:
    return ids, mask
  if cfg.truncation == "error":
    raise ShapeError(f"{where(origin, index)}: {n} tokens, longer than data.max_len="
                     f"{cfg.max_len} (data.truncation='error'; 'skip' or "
                     "'truncate_prompt_left' would keep going)")
  if cfg.truncation == "skip":
    stats.skipped_long += 1
    return None
  # truncate_prompt_left: drop the oldest prompt tokens (keeping BOS and one prompt token so the
  # reply still has context), then the response's tail if it alone is still too long.
  first_target = mask.index(True)
  keep_head = 1 if cfg.add_bos else 0
  drop = min(n - cfg.max_len, max(first_target - keep_head - 1, 0))
  ids = (ids[:keep_head] + ids[keep_head + drop:])[:cfg.max_len]
  mask = (mask[:keep_head] + mask[keep_head + drop:])[:cfg.max_len]
  if not any(mask):
    stats.skipped_long += 1
    return None
  stats.truncated += 1
  return ids, mask


def _split_key(rec: dict, cfg: DemoConfig) -> str:
  """The text that decides a record's split: its prompt, so one prompt never lands in both."""
  def text(path):
    v = _lookup(rec, path)
    return "" if v is _MISSING else str(v)
  if cfg.format == "prompt_response":
    return text(cfg.prompt_field).strip()
  if cfg.format == "dialogue":
    turns = split_dialogue(text(cfg.text_field))
    return turns[0]["content"] if turns else ""
  if cfg.format == "messages":
    msgs = _lookup(rec, cfg.messages_field)
    firsts = [m for m in msgs if isinstance(m, dict) and m.get("role") != "system"] if (
        isinstance(msgs, (list, tuple))) else []
    return str(firsts[0].get("content", "")).strip() if firsts else ""
  return text(cfg.text_field)[:200]


def in_eval_split(key: str, eval_fraction: float) -> bool:
  """Deterministic across runs and machines (crc32, not Python's salted hash)."""
  return (zlib.crc32(key.encode("utf-8")) % 10_000) < eval_fraction * 10_000


def examples_from_records(records: Iterable[dict] | Iterable[tuple[str, int, dict]], tokenizer,
                          cfg: DemoConfig, origin: str = "<memory>") -> tuple[list[Example], Stats]:
  """Tokenized examples and counts; `records` are dicts or (origin, index, dict) triples.

  The one path for files, the hub and in-memory lists (the built-in task's
  [{"prompt", "response"}]); `cfg.source` is not read here.
  """
  enc = Encoder(cfg, tokenizer)
  stats, out = Stats(), []
  t0 = time.perf_counter()
  for i, item in enumerate(records):
    if i and i % 20_000 == 0:  # a progress line for big datasets
      print(f"  tokenized {i} records ({stats.kept} kept) in {time.perf_counter() - t0:.0f}s",
            flush=True)
    org, idx, rec = item if isinstance(item, tuple) else (origin, i, item)
    if not isinstance(rec, dict):
      raise DataError(f"{where(org, idx)}: is a {type(rec).__name__}, not an object")
    pair = enc.encode(rec, org, idx)
    if pair is None or not any(pair[1]):
      stats.skipped_empty += 1
      continue
    ids, mask = pair
    if cfg.add_bos and tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
      ids, mask = [tokenizer.bos_id] + ids, [False] + mask
    if cfg.format != "text":  # documents are packed into rows, not truncated
      res = truncate_example(ids, mask, cfg, stats, org, idx)
      if res is None:
        continue
      ids, mask = res
    out.append(make_example(ids, mask))
    stats.kept += 1
    if cfg.max_records and stats.kept >= cfg.max_records:
      break
  return out, stats


def load_examples(cfg: DemoConfig, tokenizer, split: str) -> tuple[list[Example], Stats]:
  """Examples of `split` ("train" or "eval") from cfg.source (see the module doc on splits)."""
  return examples_from_records(split_records(cfg, split), tokenizer, cfg)


def split_records(cfg: DemoConfig, split: str) -> Iterator[tuple[str, int, dict]]:
  """(origin, index, record) of `split` ("train" or "eval") from cfg.source, as
  `load_examples` reads them (see the module doc on splits)."""
  if split not in ("train", "eval"):
    raise ConfigError(f"split={split!r} must be 'train' or 'eval'")
  if cfg.eval_split:
    if split == "train":
      records = read_records(cfg.source, cfg.train_split)
    elif is_local(cfg.source):
      if not is_local(cfg.eval_split):
        raise ConfigError(f"data.eval_split={cfg.eval_split!r}: with a local data.source the "
                          "eval split is a local file or folder (or leave it empty to hold out "
                          "data.eval_fraction of the source)")
      records = read_records(cfg.eval_split)
    else:
      records = read_records(cfg.source, cfg.eval_split)
    return records
  records = read_records(cfg.source, cfg.train_split)
  if cfg.eval_fraction > 0:
    want_eval = split == "eval"
    records = (r for r in records
               if in_eval_split(_split_key(r[2], cfg), cfg.eval_fraction) == want_eval)
  elif split == "eval":
    records = iter(())  # nothing held out
  return records


def load_text_corpus(source: str, tokenizer, split: str = "train", text_field: str = "text",
                     eval_fraction: float = 0.0, train_split: str = "train",
                     eval_split: str | None = None, add_bos: bool = False,
                     max_records: int | None = None) -> tuple[list[Example], Stats]:
  """Pretraining documents: loss on every token, EOS after each (pack with `pack_examples`)."""
  cfg = DemoConfig(source=source, format="text", text_field=text_field, add_bos=add_bos,
                   train_split=train_split, eval_split=eval_split, eval_fraction=eval_fraction,
                   max_records=max_records)
  return load_examples(cfg, tokenizer, split)
