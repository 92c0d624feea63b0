"""Helpers of the feedback app's tests: a site made with the real command line, a live server
(`serve` in a subprocess on a free 127.0.0.1 port), a fresh PostgreSQL database, and a labeler's
HTTP session. Not a test module; the feedback tests import it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A role that may create databases; .ci/run starts the server and sets this. Unset: the local
# socket as the current user.
PG_URL = os.environ.get("RLHF_FEEDBACK_TEST_PG", "postgresql:///postgres")
ADMIN, LABELERS = ("admin", "admin-pass-123"), [(f"lab{i}", f"lab{i}-pass-123") for i in range(4)]


def need_feedback_deps():
  for mod in ("django", "axes", "whitenoise", "waitress", "requests", "krippendorff",
              "statsmodels"):
    pytest.importorskip(mod, reason=f"the feedback extra is not installed ({mod} missing): "
                        'pip install -e ".[test,feedback]"')


def cli(home, *args, check=True, env=None):
  """Runs `python -m rlhf_jax.feedback <args> --home home`; the CompletedProcess."""
  cmd = [sys.executable, "-m", "rlhf_jax.feedback", args[0], "--home", str(home), *args[1:]]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                        env={**os.environ, "PYTHONPATH": REPO, **(env or {})})
  if check and proc.returncode:
    raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
  return proc


@contextlib.contextmanager
def postgres_database():
  """A fresh, empty PostgreSQL database (its URL), dropped afterwards; skips when no server."""
  psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
  try:
    admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=3)
  except psycopg.OperationalError as e:
    pytest.skip(f"no PostgreSQL server reachable at {PG_URL.split('@')[-1]} "
                f"({str(e).strip()[:100]}); .ci/run starts one and sets RLHF_FEEDBACK_TEST_PG "
                "(a role with CREATEDB)")
  name = f"feedback_test_{uuid.uuid4().hex[:10]}"
  admin.execute(f'CREATE DATABASE "{name}"')
  try:
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
  finally:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def live_server(home, threads=8):
  """`serve` in a subprocess; yields its base URL; stopped (by its pid) afterwards."""
  import requests  # pylint: disable=g-import-not-at-top
  port = free_port()
  log = open(os.path.join(str(home), "serve.log"), "w")
  proc = subprocess.Popen(
      [sys.executable, "-m", "rlhf_jax.feedback", "serve", "--home", str(home), "--port",
       str(port), "--threads", str(threads)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
      env={**os.environ, "PYTHONPATH": REPO})
  url = f"http://127.0.0.1:{port}"
  try:
    for _ in range(200):
      try:
        requests.get(url + "/accounts/login/", timeout=10)
        break
      except requests.RequestException:
        if proc.poll() is not None:
          raise AssertionError(open(log.name).read())
        time.sleep(0.1)
    yield url
  finally:
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def make_site(home, db=None, labelers=LABELERS):
  args = ["init", "--admin", ADMIN[0], "--password", ADMIN[1]] + (["--db", db] if db else [])
  cli(home, *args)
  for name, pw in labelers:
    cli(home, "adduser", name, "--password", pw)


def write_jsonl(path, records):
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
  return str(path)


class Session:
  """A person's browser, as HTTP: logs in through the form with its CSRF token."""

  def __init__(self, url, user=None):
    import requests  # pylint: disable=g-import-not-at-top
    self.url, self.s = url, requests.Session()
    if user:
      r = self.login(*user)
      assert "/accounts/login/" not in r.url, f"login as {user[0]} failed"

  def login(self, name, password):
    self.s.get(self.url + "/accounts/login/")
    return self.s.post(self.url + "/accounts/login/", data={
        "username": name, "password": password, "csrfmiddlewaretoken": self.csrf()})

  def csrf(self):
    return self.s.cookies.get("csrftoken", "")

  def get(self, path, **kw):
    return self.s.get(self.url + path if path.startswith("/") else path, **kw)

  def post(self, path, data, csrf=True, **kw):
    data = dict(data, **({"csrfmiddlewaretoken": self.csrf()} if csrf else {}))
    return self.s.post(self.url + path if path.startswith("/") else path, data=data, **kw)


def task_data(page) -> dict | None:
  m = re.search(r'id="task-data"[^>]*>(.*?)</script>', page.text, re.S)
  return json.loads(m.group(1)) if m else None
