"""A labeler's form post -> one stored answer, in one transaction, at most once per assignment.

The page's fields are per shown position (`rank_0`, `rating_0`, `flag_0`, ...); they are mapped
back to the imported order through the assignment's stored shown order, so every stored list is
indexed like `Task.responses`. Invalid input raises `Invalid` with every problem named.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone

from rlhf_jax.feedback.models import FLAG_KEYS, STRENGTHS, Answer, Assignment, Task

PREFERENCES = tuple(f"{side}-{s}" for side in "AB" for s in STRENGTHS)


class Invalid(ValueError):
  """The form post cannot be stored; `problems` lists why, in words for the labeler."""

  def __init__(self, problems):
    super().__init__("; ".join(problems))
    self.problems = problems


def dense_ranks(values) -> list[int]:
  """Rank numbers as chosen (1, 1, 3) -> 0-based dense ranks (0, 0, 1): only order matters."""
  levels = sorted(set(values))
  return [levels.index(v) for v in values]


def _int(post, name, lo, hi, problems, label):
  raw = post.get(name, "")
  try:
    v = int(raw)
  except (TypeError, ValueError):
    problems.append(f"{label}: choose a value from {lo} to {hi}")
    return None
  if not lo <= v <= hi:
    problems.append(f"{label}: {v} is not between {lo} and {hi}")
    return None
  return v


def parse_ranking(post, order: list[int]) -> dict:
  k, problems = len(order), []
  ranks, ratings, flags = [None] * k, [None] * k, [[] for _ in range(k)]
  for p, i in enumerate(order):
    label = f"response {p + 1}"
    ranks[i] = _int(post, f"rank_{p}", 1, k, problems, f"{label} rank")
    ratings[i] = _int(post, f"rating_{p}", 1, 7, problems, f"{label} rating")
    chosen = post.getlist(f"flag_{p}") if hasattr(post, "getlist") else post.get(f"flag_{p}", [])
    bad = [f for f in chosen if f not in FLAG_KEYS]
    if bad:
      problems.append(f"{label}: unknown flag(s) {bad}")
    flags[i] = sorted(set(chosen) - set(bad))
  if problems:
    raise Invalid(problems)
  return {"ranks": dense_ranks(ranks), "ratings": ratings, "flags": flags,
          "notes": post.get("notes", "").strip()}


def parse_pairwise(post, order: list[int]) -> dict:
  pref = post.get("preference", "")
  if pref not in PREFERENCES:
    raise Invalid(["choose which response is better (A or B) and by how much"])
  side, strength = pref.split("-")
  winner = order[0] if side == "A" else order[1]
  ranks = [1, 1]
  ranks[winner] = 0
  return {"ranks": ranks, "strength": strength, "notes": post.get("notes", "").strip()}


def parse_demo(post, order) -> dict:  # pylint: disable=unused-argument
  text = post.get("text", "").strip()
  if not text:
    raise Invalid(["write a response before submitting"])
  return {"text": text, "notes": post.get("notes", "").strip()}


PARSERS = {Task.RANKING: parse_ranking, Task.PAIRWISE: parse_pairwise, Task.DEMO: parse_demo}


def submit(assignment_id: int, user, post) -> bool:
  """Stores the answer; False (nothing stored) when the assignment was already answered or
  skipped — a refresh, a second tab or a client retry."""
  with transaction.atomic():
    # The row lock makes a concurrent second submit wait, then see the first one's answer.
    a = (Assignment.objects.select_for_update().select_related("task")
         .get(pk=assignment_id, labeler=user))
    if a.state != Assignment.OPEN:
      return False
    fields = PARSERS[a.task.kind](post, a.order)
    now = timezone.now()
    seconds = (now - (a.shown_at or a.claimed_at or now)).total_seconds()
    try:
      with transaction.atomic():
        Answer.objects.create(assignment=a, seconds=seconds, **fields)
    except IntegrityError:
      return False
    a.state = Assignment.DONE
    a.save(update_fields=["state"])
  return True
