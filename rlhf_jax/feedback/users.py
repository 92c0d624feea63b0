"""Adding people: an admin (Django staff + superuser: the admin pages and the Django admin) or a
labeler (neither: only their own assignments). Passwords are hashed by Django's hasher and must
pass its validators (length, not a common password)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from rlhf_jax.errors import ConfigError


def add_user(username: str, password: str, admin: bool = False):
  User = get_user_model()  # pylint: disable=invalid-name
  if not username or not username.strip():
    raise ConfigError("a username is required")
  if User.objects.filter(username=username).exists():
    raise ConfigError(f"user {username!r} already exists")
  user = User(username=username, is_staff=admin, is_superuser=admin)
  try:
    validate_password(password, user)
  except ValidationError as e:
    raise ConfigError(f"password for {username!r}: {' '.join(e.messages)}") from None
  user.set_password(password)
  user.save()
  return user
