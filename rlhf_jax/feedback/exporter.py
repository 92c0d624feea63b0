"""Answers -> the files the training stages read, from one consistent snapshot.

`comparisons.jsonl` is the reward stage's `ranked` schema (data.format="ranked"), one record per
answer: {"prompt", "responses", "ranking" (indices best first; tied responses in imported order),
"ranks" (per response, 0 = best, equal = tie: the loader skips tied pairs), "labeler", "ratings",
"flags", "notes", "seconds", "shown_order", "strength" (pairwise), "task", "batch", "sources",
and "prompt_ids"/"response_ids" when the task was imported with them}.
`demonstrations.jsonl` is the SFT stage's prompt_response schema: {"prompt", "response",
"labeler", "seconds", "task", "batch"}. Gold (qualification) tasks are left out unless asked for.
The snapshot: one read transaction (REPEATABLE READ on PostgreSQL; SQLite's WAL read transaction),
so an export taken while labelers submit is the state at one instant, and both files agree.
"""

from __future__ import annotations

import json
import os

from django.db import connection, transaction

from rlhf_jax.feedback.models import Answer, Task


def _answers(kinds, batch: str | None, include_gold: bool):
  q = (Answer.objects.select_related("assignment__task", "assignment__labeler")
       .filter(assignment__task__kind__in=kinds).order_by("assignment__task_id", "id"))
  if batch:
    q = q.filter(assignment__task__batch=batch)
  if not include_gold:
    q = q.filter(assignment__task__gold__isnull=True)
  return q


def comparison_record(ans: Answer) -> dict:
  a, t = ans.assignment, ans.assignment.task
  ranking = sorted(range(len(ans.ranks)), key=lambda i: (ans.ranks[i], i))
  rec = {"prompt": t.prompt, "responses": t.responses, "ranking": ranking, "ranks": ans.ranks,
         "labeler": a.labeler.username, "ratings": ans.ratings, "flags": ans.flags,
         "notes": ans.notes, "seconds": round(ans.seconds, 3), "shown_order": a.order,
         "task": t.pk, "kind": t.kind, "batch": t.batch, "sources": t.sources}
  if t.kind == Task.PAIRWISE:
    rec["strength"] = ans.strength
  # Token ids imported with the task (iterated RLHF's samples) go back out, so the reward stage
  # reads exactly the sampled tokens.
  rec.update({k: t.meta[k] for k in ("prompt_ids", "response_ids") if k in t.meta})
  return rec


def demonstration_record(ans: Answer) -> dict:
  a, t = ans.assignment, ans.assignment.task
  return {"prompt": t.prompt, "response": ans.text, "labeler": a.labeler.username,
          "seconds": round(ans.seconds, 3), "task": t.pk, "batch": t.batch}


def write_comparisons(f, batch=None, include_gold=False) -> int:
  n = 0
  for ans in _answers((Task.RANKING, Task.PAIRWISE), batch, include_gold).iterator():
    f.write(json.dumps(comparison_record(ans)) + "\n")
    n += 1
  return n


def write_demonstrations(f, batch=None, include_gold=False) -> int:
  n = 0
  for ans in _answers((Task.DEMO,), batch, include_gold).iterator():
    f.write(json.dumps(demonstration_record(ans)) + "\n")
    n += 1
  return n


def incomplete(batch: str | None) -> int:
  """Slots of the batch still open (unclaimed, or claimed and not answered or skipped)."""
  from rlhf_jax.feedback.models import Assignment  # pylint: disable=g-import-not-at-top
  q = Assignment.objects.filter(state=Assignment.OPEN)
  return (q.filter(task__batch=batch) if batch else q).count()


def export_dir(out: str, batch: str | None = None, include_gold: bool = False) -> dict:
  """Writes out/comparisons.jsonl and out/demonstrations.jsonl from one snapshot; returns the
  counts. Files are written beside and renamed, so a reader never sees half a file."""
  os.makedirs(out, exist_ok=True)
  counts = {}
  with transaction.atomic():
    if connection.vendor == "postgresql":
      with connection.cursor() as c:
        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    for name, writer in (("comparisons", write_comparisons),
                         ("demonstrations", write_demonstrations)):
      path = os.path.join(out, f"{name}.jsonl")
      with open(path + ".tmp", "w", encoding="utf-8") as f:
        counts[name] = writer(f, batch, include_gold)
    for name in counts:
      path = os.path.join(out, f"{name}.jsonl")
      os.replace(path + ".tmp", path)
  return counts
