"""The admin's pages (staff only): overview, add a labeler, import tasks, export, agreement.

A labeler reaching any of these gets 403 (`staff_only`); the Django admin site is refused the same
way (`admin.py`).
"""

from __future__ import annotations

import io
import os
import tempfile

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from rlhf_jax.errors import UserError
from rlhf_jax.feedback import assign, exporter, importer, report, users


def staff_only(view):
  def wrapped(request, *args, **kwargs):
    if not request.user.is_staff:
      raise PermissionDenied("admins only")
    return view(request, *args, **kwargs)
  wrapped.__name__ = view.__name__
  return wrapped


class UserForm(forms.Form):
  username = forms.CharField(max_length=150)
  password = forms.CharField(widget=forms.PasswordInput, min_length=8)
  role = forms.ChoiceField(choices=(("labeler", "Labeler"), ("admin", "Admin")))

  def clean_password(self):
    validate_password(self.cleaned_data["password"])
    return self.cleaned_data["password"]


class ImportForm(forms.Form):
  file = forms.FileField(help_text="JSON lines: samples.jsonl, prompt + responses, or prompts")
  kind = forms.ChoiceField(choices=(("ranking", "Ranking"), ("pairwise", "Pairwise"),
                                    ("demo", "Demonstration")))
  batch = forms.CharField(max_length=200, required=False)
  overlap_fraction = forms.FloatField(min_value=0, max_value=1, initial=0.2)
  overlap = forms.IntegerField(min_value=2, max_value=20, initial=2,
                               label="Labelers per overlap task")


@staff_only
@require_http_methods(["GET", "POST"])
def manage(request):
  user_form, import_form = UserForm(prefix="u"), ImportForm(prefix="i")
  if request.method == "POST" and request.POST.get("form") == "user":
    user_form = UserForm(request.POST, prefix="u")
    if user_form.is_valid():
      d = user_form.cleaned_data
      try:
        users.add_user(d["username"], d["password"], admin=d["role"] == "admin")
      except UserError as e:
        user_form.add_error("username", str(e))
      else:
        messages.success(request, f"{d['role']} {d['username']} created")
        return redirect("manage")
  elif request.method == "POST" and request.POST.get("form") == "import":
    import_form = ImportForm(request.POST, request.FILES, prefix="i")
    if import_form.is_valid():
      msg = _import_upload(import_form)
      if msg.startswith("imported"):
        messages.success(request, msg)
        return redirect("manage")
      import_form.add_error("file", msg)
  ctx = {"user_form": user_form, "import_form": import_form, "counts": assign.tasks_overview(),
         "labelers": get_user_model().objects.order_by("username")}
  return render(request, "feedback/manage.html", ctx)


def _import_upload(form) -> str:
  d = form.cleaned_data
  upload = d["file"]
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, os.path.basename(upload.name) or "upload.jsonl")
    with open(path, "wb") as f:
      for chunk in upload.chunks():
        f.write(chunk)
    try:
      n = importer.import_files([path], kind=d["kind"], batch=d["batch"] or upload.name,
                                overlap_fraction=d["overlap_fraction"], overlap=d["overlap"])
    except UserError as e:
      return str(e).replace(tmp + os.sep, "")
  return f"imported {n} tasks"


@staff_only
@require_http_methods(["GET"])
def export(request, what):
  buf = io.StringIO()
  if what == "comparisons":
    exporter.write_comparisons(buf)
  elif what == "demonstrations":
    exporter.write_demonstrations(buf)
  else:
    raise PermissionDenied("unknown export")
  resp = HttpResponse(buf.getvalue(), content_type="application/jsonl; charset=utf-8")
  resp["Content-Disposition"] = f'attachment; filename="{what}.jsonl"'
  return resp


@staff_only
@require_http_methods(["GET"])
def agreement(request):
  rep = report.compute()
  return render(request, "feedback/agreement.html", {"r": rep, "rows": report.table_rows(rep)})


@staff_only
@require_http_methods(["GET"])
def agreement_png(request):
  return HttpResponse(report.plot_png(report.compute()), content_type="image/png")
