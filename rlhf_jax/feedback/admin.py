"""The Django admin site for admins (browse and correct tasks, assignments, answers, users).

A logged-in labeler asking for it gets 403 rather than the admin's own login form, and an
anonymous visitor goes to the one login page (with its throttling)."""

import functools

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied

from rlhf_jax.feedback.models import Answer, Assignment, Task


class FeedbackAdminSite(admin.AdminSite):
  site_header = "rlhf_jax feedback: admin"

  def admin_view(self, view, cacheable=False):
    inner = super().admin_view(view, cacheable)

    def refuse_labelers(request, *args, **kwargs):
      if request.user.is_authenticated and not request.user.is_staff:
        raise PermissionDenied("admins only")
      return inner(request, *args, **kwargs)
    return functools.update_wrapper(refuse_labelers, inner)

  def login(self, request, extra_context=None):
    if request.user.is_authenticated:
      raise PermissionDenied("admins only")
    return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)


site = FeedbackAdminSite(name="admin")


class TaskAdmin(admin.ModelAdmin):
  list_display = ("id", "kind", "batch", "overlap", "position", "created")
  list_filter = ("kind", "batch")
  search_fields = ("prompt",)


class AssignmentAdmin(admin.ModelAdmin):
  list_display = ("id", "task", "slot", "labeler", "state", "claimed_at")
  list_filter = ("state", "labeler")


class AnswerAdmin(admin.ModelAdmin):
  list_display = ("id", "assignment", "seconds", "created")


site.register(Task, TaskAdmin)
site.register(Assignment, AssignmentAdmin)
site.register(Answer, AnswerAdmin)
for model, model_admin in admin.site._registry.items():  # pylint: disable=protected-access
  site.register(model, type(model_admin))  # users and groups, as Django configures them
