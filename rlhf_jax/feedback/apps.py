"""The Django app of the feedback package."""

from django.apps import AppConfig


class FeedbackConfig(AppConfig):
  name = "rlhf_jax.feedback"
  label = "feedback"
  verbose_name = "Human feedback"
  default_auto_field = "django.db.models.BigAutoField"
