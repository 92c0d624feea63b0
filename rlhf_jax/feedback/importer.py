"""Tasks from JSON-lines files, in one transaction (a bad line imports nothing).

Accepted records, one per line:
- the sample stage's `samples.jsonl` ({"prompt", "response", ...}): lines are grouped by prompt,
  across every file given, into one task per prompt (two checkpoints' samples -> pairs);
- {"prompt", "responses": [str, ...]} (also the `ranked` comparison schema), with optional
  "gold_ranks" (per response, 0 = best) making a gold task;
- {"prompt"} alone: a demonstration task.
Each response keeps where it came from: {"file", "line", "workdir", "step"} (workdir: the record's
own, else the file's folder), so an export can compare checkpoints.
A fraction of tasks (seeded) gets `overlap` labelers for agreement; gold tasks get `gold_overlap`;
offer positions are shuffled so gold tasks are mixed in.
"""

from __future__ import annotations

import json
import os

import numpy as np
from django.db import transaction
from django.db.models import Max

from rlhf_jax.errors import DataError
from rlhf_jax.feedback.models import Assignment, Task

K_RANGE = {Task.RANKING: (2, 9), Task.PAIRWISE: (2, 2), Task.DEMO: (0, 0)}
_SAMPLE_EXTRA = ("tokens", "eos", "logprob", "gold")


def _read(path: str):
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
      if not isinstance(rec, dict):
        raise DataError(f"{path}:{n}: a {type(rec).__name__}, not a JSON object")
      if not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
        raise DataError(f"{path}:{n}: no 'prompt' text")
      yield n, rec


def _source(path, n, rec) -> dict:
  src = {"file": os.path.abspath(path), "line": n,
         "workdir": rec.get("workdir") or os.path.dirname(os.path.abspath(path)),
         "step": rec.get("step")}
  src.update({k: rec[k] for k in _SAMPLE_EXTRA if k in rec})
  return src


def parse_files(paths) -> list[dict]:
  """Task dicts {prompt, responses, sources, gold, meta, where} from the files, in order."""
  tasks, by_prompt = [], {}
  for path in paths:
    for n, rec in _read(path):
      where = f"{path}:{n}"
      if "response" in rec:  # samples.jsonl: one response per line
        if not isinstance(rec["response"], str):
          raise DataError(f"{where}: 'response' must be text")
        t = by_prompt.get(rec["prompt"])
        if t is None:
          t = by_prompt[rec["prompt"]] = {"prompt": rec["prompt"], "responses": [],
                                          "sources": [], "gold": None, "meta": {}, "where": where}
          tasks.append(t)
        t["responses"].append(rec["response"])
        t["sources"].append(_source(path, n, rec))
        continue
      resp = rec.get("responses", [])
      if not isinstance(resp, list) or not all(isinstance(r, str) for r in resp):
        raise DataError(f"{where}: 'responses' must be a list of texts")
      gold = rec.get("gold_ranks")
      if gold is not None and (not isinstance(gold, list) or len(gold) != len(resp) or
                               not all(isinstance(g, int) and g >= 0 for g in gold)):
        raise DataError(f"{where}: 'gold_ranks' must give a rank (0 = best) per response")
      meta = {k: v for k, v in rec.items() if k not in ("prompt", "responses", "gold_ranks")}
      tasks.append({"prompt": rec["prompt"], "responses": resp,
                    "sources": [_source(path, n, rec) for _ in resp],
                    "gold": {"ranks": gold} if gold is not None else None, "meta": meta,
                    "where": where})
  if not tasks:
    raise DataError(f"{', '.join(paths)}: no records")
  return tasks


def _kind_of(t: dict, kind: str | None) -> str:
  k = kind or (Task.RANKING if t["responses"] else Task.DEMO)
  lo, hi = K_RANGE[k]
  n = len(t["responses"])
  if not lo <= n <= hi:
    want = "no responses" if hi == 0 else f"{lo} to {hi} responses" if lo != hi else f"{lo}"
    raise DataError(f"{t['where']}: {n} responses for prompt {t['prompt'][:60]!r}; a {k} task "
                    f"takes {want}")
  if len(set(r.strip() for r in t["responses"])) < n:
    raise DataError(f"{t['where']}: two responses are identical; nothing to compare")
  return k


def import_files(paths, kind: str | None = None, batch: str = "", overlap_fraction: float = 0.0,
                 overlap: int = 2, gold_overlap: int = 20, seed: int = 0) -> int:
  """Imports every task of `paths` (all or nothing); returns how many."""
  if kind not in (None, Task.RANKING, Task.PAIRWISE, Task.DEMO):
    raise DataError(f"kind={kind!r}: use ranking, pairwise or demo")
  if not 0 <= overlap_fraction <= 1 or overlap < 2:
    raise DataError(f"overlap_fraction={overlap_fraction} must be in [0, 1] and overlap={overlap} "
                    ">= 2")
  parsed = parse_files(paths)
  kinds = [_kind_of(t, kind) for t in parsed]
  rng = np.random.default_rng(seed)
  wide = rng.random(len(parsed)) < overlap_fraction
  with transaction.atomic():
    start = (Task.objects.aggregate(m=Max("position"))["m"] or 0) + 1
    positions = start + rng.permutation(len(parsed))
    objs = [Task(kind=k, prompt=t["prompt"], responses=t["responses"], sources=t["sources"],
                 gold=t["gold"], meta=t["meta"], batch=batch or os.path.basename(paths[0]),
                 position=int(pos),
                 overlap=gold_overlap if t["gold"] else overlap if w else 1)
            for t, k, w, pos in zip(parsed, kinds, wide, positions)]
    made = Task.objects.bulk_create(objs)
    Assignment.objects.bulk_create(
        [Assignment(task=t, slot=s) for t in made for s in range(t.overlap)], batch_size=500)
  return len(made)
