"""Which task a labeler gets next, and the labeler's progress.

Claiming is one conditional UPDATE (`... SET labeler = me WHERE id = slot AND labeler IS NULL`):
the database decides the race between two labelers asking for the same slot, so a task never has
more labelers than slots. The (task, labeler) unique constraint stops one labeler taking two slots
of one task (two tabs asking at once). A skipped slot is replaced by a fresh free slot, so the task
still reaches its overlap with someone else.
"""

from __future__ import annotations

import random

from django.db import IntegrityError, transaction
from django.utils import timezone

from rlhf_jax.feedback.models import Assignment, Task

# Labelers asking at once pick among the first few free slots at random, so they rarely race for
# the same row. A lost race means another labeler claimed a slot, so retrying always progresses;
# the cap only guards against a bug.
SPREAD, MAX_TRIES = 8, 10_000


def open_assignment(user) -> Assignment | None:
  """The labeler's claimed, unanswered assignment (first by offer order), if any."""
  return (Assignment.objects.filter(labeler=user, state=Assignment.OPEN)
          .select_related("task").order_by("task__position", "task_id").first())


def _free_slots(user):
  mine = Assignment.objects.filter(labeler=user).values("task_id")
  return (Assignment.objects.filter(labeler__isnull=True).exclude(task_id__in=mine)
          .order_by("task__position", "task_id", "slot"))


def claim_next(user) -> Assignment | None:
  """The labeler's open assignment, else a newly claimed free slot, else None."""
  current = open_assignment(user)
  if current is not None:
    return current
  for _ in range(MAX_TRIES):
    candidates = list(_free_slots(user).values_list("pk", flat=True)[:SPREAD])
    if not candidates:
      return None
    slot = Assignment(pk=random.choice(candidates))
    try:
      with transaction.atomic():
        won = Assignment.objects.filter(pk=slot.pk, labeler__isnull=True).update(
            labeler=user, claimed_at=timezone.now())
    except IntegrityError:  # this labeler took another slot of the task in another tab
      continue
    if won:
      a = Assignment.objects.select_related("task").get(pk=slot.pk)
      _shuffle(a)
      return a
  return None


def _shuffle(a: Assignment) -> None:
  """Stores the per-labeler order the responses will be shown in."""
  n = len(a.task.responses)
  order = list(range(n))
  random.SystemRandom().shuffle(order)
  a.order = order
  a.save(update_fields=["order"])


def skip(a: Assignment) -> bool:
  """Marks an open assignment skipped and frees a replacement slot; False if already closed."""
  with transaction.atomic():
    Task.objects.select_for_update().get(pk=a.task_id)  # serialises skips of one task
    changed = Assignment.objects.filter(pk=a.pk, state=Assignment.OPEN).update(
        state=Assignment.SKIPPED)
    if changed:
      last = Assignment.objects.filter(task_id=a.task_id).order_by("-slot").first()
      Assignment.objects.create(task_id=a.task_id, slot=last.slot + 1)
  return bool(changed)


def progress(user) -> tuple[int, int]:
  """(this page's number, pages in all) for "page 3 / 11": closed + open + still claimable."""
  closed = Assignment.objects.filter(labeler=user).exclude(state=Assignment.OPEN).count()
  opened = Assignment.objects.filter(labeler=user, state=Assignment.OPEN).count()
  free = _free_slots(user).values("task_id").distinct().count()
  return closed + 1, closed + opened + free


def tasks_overview() -> dict:
  """Counts for the admin page."""
  return {"tasks": Task.objects.count(),
          "answers": Assignment.objects.filter(state=Assignment.DONE).count(),
          "skipped": Assignment.objects.filter(state=Assignment.SKIPPED).count(),
          "free": Assignment.objects.filter(labeler__isnull=True).count()}
