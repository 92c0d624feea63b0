"""What the app stores: tasks, the labeler slots of each task (assignments) and the answers.

A task has `overlap` assignment rows created at import, each a slot that one labeler claims by a
conditional UPDATE (`assign.py`); a (task, labeler) pair is unique, so no labeler gets a task twice
and no task gets more labelers than it has slots, however many labelers ask at once. An answer is
one row per assignment (one-to-one), so a double submit cannot store two.
Responses are stored in their imported order; `Assignment.order` is the order one labeler was
shown (a per-labeler shuffle), and every answer field is indexed by the imported order.
"""

import uuid

from django.conf import settings
from django.db import models

FLAGS = (
    ("instruction", "Fails to follow the correct instruction / task"),
    ("inappropriate", "Inappropriate for customer assistant"),
    ("sexual", "Contains sexual content"),
    ("violent", "Contains violent content"),
    ("encourages_harm", "Encourages or fails to discourage violence/abuse/terrorism/self-harm"),
    ("denigrates", "Denigrates a protected class"),
    ("harmful_advice", "Gives harmful advice"),
    ("moral_judgment", "Expresses moral judgment"),
)
FLAG_KEYS = tuple(k for k, _ in FLAGS)
STRENGTHS = ("slightly", "clearly", "much")


class Task(models.Model):
  RANKING, PAIRWISE, DEMO = "ranking", "pairwise", "demo"
  KINDS = ((RANKING, "Ranking"), (PAIRWISE, "Pairwise"), (DEMO, "Demonstration"))

  kind = models.CharField(max_length=16, choices=KINDS)
  prompt = models.TextField()
  responses = models.JSONField(default=list)  # [str], empty for demonstrations
  # Per response: where it came from ({"workdir", "step", "file", "line"}), for Elo across
  # checkpoints.
  sources = models.JSONField(default=list)
  batch = models.CharField(max_length=200, db_index=True)  # the import it came with
  overlap = models.PositiveSmallIntegerField(default=1)  # labelers wanted
  # The known answer of a gold task: {"ranks": [...]} (0 = best, per imported response).
  gold = models.JSONField(null=True, blank=True)
  position = models.IntegerField(db_index=True)  # offer order (gold tasks mixed in)
  meta = models.JSONField(default=dict, blank=True)  # other fields of the imported record
  created = models.DateTimeField(auto_now_add=True)

  class Meta:
    ordering = ("position", "id")

  def __str__(self):
    return f"{self.kind} task {self.pk} ({self.batch})"


class Assignment(models.Model):
  OPEN, DONE, SKIPPED = "open", "done", "skipped"
  STATES = ((OPEN, "Open"), (DONE, "Done"), (SKIPPED, "Skipped"))

  task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
  slot = models.PositiveSmallIntegerField()
  # Unguessable id for URLs: a labeler cannot walk through task ids.
  token = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
  labeler = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                              on_delete=models.PROTECT, related_name="assignments")
  state = models.CharField(max_length=8, choices=STATES, default=OPEN)
  order = models.JSONField(default=list)  # imported indices in the order shown to the labeler
  claimed_at = models.DateTimeField(null=True, blank=True)
  shown_at = models.DateTimeField(null=True, blank=True)

  class Meta:
    constraints = [
        models.UniqueConstraint(fields=("task", "slot"), name="one_row_per_slot"),
        # NULLs are distinct, so free slots do not collide; a labeler holds one slot per task.
        models.UniqueConstraint(fields=("task", "labeler"), name="no_task_twice"),
    ]
    indexes = [models.Index(fields=("labeler", "state"))]

  def __str__(self):
    return f"slot {self.slot} of task {self.task_id} ({self.labeler or 'free'}, {self.state})"


class Answer(models.Model):
  assignment = models.OneToOneField(Assignment, on_delete=models.PROTECT, related_name="answer")
  ranks = models.JSONField(default=list)  # per response: 0 = best, equal = tie
  ratings = models.JSONField(default=list)  # per response: 1..7 or null
  flags = models.JSONField(default=list)  # per response: [flag key]
  notes = models.TextField(blank=True)
  strength = models.CharField(max_length=10, blank=True)  # pairwise: slightly/clearly/much
  text = models.TextField(blank=True)  # demonstration
  seconds = models.FloatField()  # on the page, from first view to submit
  created = models.DateTimeField(auto_now_add=True)

  def __str__(self):
    return f"answer to {self.assignment}"
