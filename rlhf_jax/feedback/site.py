"""A feedback site on disk: the folder with its settings (`site.json`), its generated secret key
and, by default, its SQLite database; and the one place Django is configured from it.

`site.json` holds {"database": URL}; URL is `sqlite:///abs/path.sqlite3` or
`postgresql://user:password@host:port/name`. The secret key is generated at `init` (never in the
repository) and stored with mode 0600.
Not for: the Django settings themselves (`settings.py`).
"""

from __future__ import annotations

import json
import os
import secrets
from urllib.parse import unquote, urlparse

from rlhf_jax.errors import ConfigError

SITE_FILE, SECRET_FILE, DEFAULT_DB = "site.json", "secret_key", "feedback.sqlite3"
ENV_HOME = "RLHF_FEEDBACK_HOME"


def database_settings(url: str) -> dict:
  """Django's DATABASES["default"] for a database URL (sqlite:/// or postgresql://)."""
  u = urlparse(url)
  if u.scheme == "sqlite":
    path = unquote(u.path)
    if not path or path == "/":
      raise ConfigError(f"database URL {url!r}: sqlite:///path/to/file.sqlite3 needs a path")
    # WAL lets readers (export) see a snapshot while labelers write; IMMEDIATE transactions take
    # the write lock up front, so concurrent submits queue (timeout) instead of deadlocking.
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path,
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE",
                        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}}
  if u.scheme in ("postgres", "postgresql"):
    if not u.path.strip("/"):
      raise ConfigError(f"database URL {url!r}: postgresql://user:pass@host:port/NAME needs a "
                        "database name")
    return {"ENGINE": "django.db.backends.postgresql", "NAME": u.path.strip("/"),
            "USER": unquote(u.username or ""), "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "", "PORT": str(u.port or ""), "CONN_MAX_AGE": 60}
  raise ConfigError(f"database URL {url!r}: use sqlite:///path or postgresql://user:pass@host/db")


def home_dir(home: str | None) -> str:
  return os.path.abspath(home or os.environ.get(ENV_HOME) or "feedback_site")


def create(home: str, database: str | None) -> dict:
  """Writes site.json and a fresh secret key into `home` (refuses to overwrite a site)."""
  os.makedirs(home, exist_ok=True)
  path = os.path.join(home, SITE_FILE)
  if os.path.exists(path):
    raise ConfigError(f"{path} exists: this folder already holds a feedback site")
  url = database or "sqlite:///" + os.path.join(home, DEFAULT_DB)
  database_settings(url)  # fails early on a bad URL
  key = os.path.join(home, SECRET_FILE)
  fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
  with os.fdopen(fd, "w") as f:
    f.write(secrets.token_urlsafe(50))
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"database": url}, f, indent=1)
  return read(home)


def read(home: str) -> dict:
  path = os.path.join(home, SITE_FILE)
  if not os.path.exists(path):
    raise ConfigError(f"no feedback site in {home!r} (no {SITE_FILE}): run "
                      f"`python -m rlhf_jax.feedback init --home {home}` first")
  with open(path, encoding="utf-8") as f:
    site = json.load(f)
  with open(os.path.join(home, SECRET_FILE), encoding="utf-8") as f:
    site["secret_key"] = f.read().strip()
  site["home"] = home
  return site


def setup(home: str) -> dict:
  """Configures and starts Django for the site in `home` (once per process)."""
  import django  # pylint: disable=g-import-not-at-top
  from django.conf import settings  # pylint: disable=g-import-not-at-top
  site = read(home)
  if not settings.configured:
    os.environ[ENV_HOME] = home
    os.environ["DJANGO_SETTINGS_MODULE"] = "rlhf_jax.feedback.settings"
    django.setup()
  return site
