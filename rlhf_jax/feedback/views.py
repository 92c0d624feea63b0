"""The labeler's pages: home (progress), next task, and one assignment page per task kind.

Every view is behind Django's LoginRequiredMiddleware (settings); an assignment is looked up by
its random token AND the logged-in labeler, so another labeler's assignment is a 404, never a
403 that would confirm it exists.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from rlhf_jax.feedback import answers, assign
from rlhf_jax.feedback.models import FLAGS, Assignment, Task

TEMPLATES = {Task.RANKING: "feedback/ranking.html", Task.PAIRWISE: "feedback/pairwise.html",
             Task.DEMO: "feedback/demo.html"}


@require_http_methods(["GET"])
def home(request):
  page, total = assign.progress(request.user)
  done = Assignment.objects.filter(labeler=request.user, state=Assignment.DONE).count()
  return render(request, "feedback/home.html", {"done": done, "left": total - page + 1})


@require_http_methods(["GET", "POST"])
def next_task(request):
  a = assign.claim_next(request.user)
  if a is None:
    return render(request, "feedback/done.html")
  return redirect("assignment", token=a.token)


def _mine(request, token) -> Assignment:
  try:
    return Assignment.objects.select_related("task").get(token=token, labeler=request.user)
  except Assignment.DoesNotExist:
    raise Http404("no such assignment") from None


def _items(a: Assignment, post=None) -> list[dict]:
  """The responses in shown order, with any values the labeler already posted."""
  out = []
  for p, i in enumerate(a.order):
    item = {"pos": p, "number": p + 1, "text": a.task.responses[i],
            "letter": "AB"[p] if p < 2 else ""}
    if post is not None:
      item.update(rank=post.get(f"rank_{p}", ""), rating=post.get(f"rating_{p}", ""),
                  flags=post.getlist(f"flag_{p}"))
    out.append(item)
  return out


def _page(request, a: Assignment, post=None, problems=(), status=200):
  page, total = assign.progress(request.user)
  k = len(a.order)
  ctx = {"a": a, "task": a.task, "items": _items(a, post), "flags": FLAGS,
         "ranks": range(1, k + 1), "ratings": range(1, 8), "page": page, "total": total,
         "problems": problems, "post": post or {},
         "elapsed": int((timezone.now() - a.shown_at).total_seconds()),
         # What a program driving the page (the simulated labelers) reads: the labeler's own view.
         "task_data": {"kind": a.task.kind, "prompt": a.task.prompt,
                       "shown": [a.task.responses[i] for i in a.order]}}
  return render(request, TEMPLATES[a.task.kind], ctx, status=status)


@require_http_methods(["GET", "POST"])
def assignment(request, token):
  a = _mine(request, token)
  if a.state != Assignment.OPEN:
    messages.info(request, "That task is already answered; here is the next one.")
    return redirect("next")
  if a.shown_at is None:
    Assignment.objects.filter(pk=a.pk, shown_at__isnull=True).update(shown_at=timezone.now())
    a.refresh_from_db(fields=["shown_at"])
  if request.method == "GET":
    return _page(request, a)
  if request.POST.get("action") == "skip":
    assign.skip(a)
    return redirect("next")
  try:
    stored = answers.submit(a.pk, request.user, request.POST)
  except answers.Invalid as e:
    return _page(request, a, request.POST, e.problems, status=400)
  if not stored:
    messages.info(request, "That answer was already stored once; it was not stored again.")
  return redirect("next")
