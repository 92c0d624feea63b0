"""The built-in task's simulated labelers, answering through the web app over HTTP.

Each labeler logs in with a username and password, as a person would, asks for the next task,
reads the page's task data (the prompt and the responses in the order shown to it), answers with
its preferences from `rlhf_jax.data.labelers` and posts the form with its CSRF token. Labeler i of
`--users` is `default_labelers(n)[i]` (neutral, likes long answers, likes short ones, ...).

A labeler's ranking is a Plackett–Luce draw whose Gumbel noise is derived from (labeler seed,
prompt, response) for each response, so it does not depend on the shown order: `rank_as` gives
the same answer written directly, without the app. Ratings map the labeler's utility onto 1–7;
the flag "fails to follow the instruction" is ticked when the gold score is below 0 (off topic).
Texts are read with the built-in tokenizer, and every response is taken as ended (EOS).
Not for: labelling outside the built-in task.
"""

from __future__ import annotations

import json
import re
import threading
import zlib

import numpy as np
import requests

from rlhf_jax.data import builtin_task as bt
from rlhf_jax.data import labelers as lab
from rlhf_jax.errors import ConfigError, DataError

_DATA = re.compile(r'<script[^>]*id="task-data"[^>]*>(.*?)</script>', re.S)


def parse_users(spec: str) -> list[tuple[str, str]]:
  out = []
  for part in spec.split(","):
    name, sep, password = part.partition(":")
    if not sep or not name or not password:
      raise ConfigError(f"--users entry {part!r}: write name:password")
    out.append((name, password))
  return out


def _ids(prompt: str, responses) -> tuple[list[int], list[list[int]]]:
  tok = bt.tokenizer()
  return tok.encode(prompt), [tok.encode(r) + [tok.eos_id] for r in responses]


def _gumbel(labeler: lab.Labeler, prompt_ids, response_ids) -> float:
  h = zlib.crc32(np.asarray(response_ids, np.int64).tobytes(),
                 zlib.crc32(np.asarray(prompt_ids, np.int64).tobytes()))
  return float(np.random.default_rng([labeler.seed, h]).gumbel())


def rank_as(labeler: lab.Labeler, prompt: str, responses) -> list[int]:
  """Ranks (0 = best) the labeler gives these responses, in the order given."""
  pid, rids = _ids(prompt, responses)
  u = labeler.utilities([pid] * len(rids), rids)
  t = max(labeler.temperature, 1e-9)
  score = [u[i] / t + _gumbel(labeler, pid, r) for i, r in enumerate(rids)]
  order = sorted(range(len(rids)), key=lambda i: -score[i])
  ranks = [0] * len(rids)
  for r, i in enumerate(order):
    ranks[i] = r
  return ranks


def ratings_and_flags(labeler: lab.Labeler, prompt: str, responses):
  pid, rids = _ids(prompt, responses)
  u = labeler.utilities([pid] * len(rids), rids)
  lo, hi = bt.GOLD_RANGE
  ratings = [int(np.clip(round(1 + 6 * (x - lo) / (hi - lo)), 1, 7)) for x in u]
  gold = bt.gold_scores([pid] * len(rids), rids)
  return ratings, [["instruction"] if g < 0 else [] for g in gold]


def _form(labeler: lab.Labeler, data: dict) -> dict:
  shown, prompt = data["shown"], data["prompt"]
  if data["kind"] == "demo":
    return {"action": "submit", "text": "the garden is lovely ."}
  ranks = rank_as(labeler, prompt, shown)
  if data["kind"] == "pairwise":
    pid, rids = _ids(prompt, shown)
    gap = abs(float(np.diff(labeler.utilities([pid, pid], rids))[0]))
    strength = "slightly" if gap < 0.5 else "clearly" if gap < 1.5 else "much"
    return {"action": "submit", "preference": f"{'A' if ranks[0] == 0 else 'B'}-{strength}"}
  ratings, flags = ratings_and_flags(labeler, prompt, shown)
  form = {"action": "submit"}
  for p, (r, g, f) in enumerate(zip(ranks, ratings, flags)):
    form[f"rank_{p}"], form[f"rating_{p}"] = str(r + 1), str(g)
    if f:
      form[f"flag_{p}"] = f
  return form


class Client:
  """One labeler's browser session: login, then next task, answer, next task, ..."""

  def __init__(self, url: str, username: str, password: str, timeout: float = 60):
    self.url, self.s, self.timeout = url.rstrip("/"), requests.Session(), timeout
    r = self.s.get(self.url + "/accounts/login/", timeout=timeout)
    r = self.s.post(self.url + "/accounts/login/", timeout=timeout, data={
        "username": username, "password": password, "csrfmiddlewaretoken": self.csrf()})
    if "/accounts/login/" in r.url:
      raise DataError(f"{self.url}: login as {username!r} failed (HTTP {r.status_code})")

  def csrf(self) -> str:
    return self.s.cookies.get("csrftoken", "")

  def post(self, url: str, form: dict) -> requests.Response:
    return self.s.post(url, data={**form, "csrfmiddlewaretoken": self.csrf()},
                       timeout=self.timeout)

  def next_page(self) -> requests.Response:
    return self.s.get(self.url + "/next/", timeout=self.timeout)


def task_data(page: requests.Response) -> dict | None:
  m = _DATA.search(page.text)
  return json.loads(m.group(1)) if m else None


def run_one(url, username, password, labeler, max_tasks, counts, lock):
  c = Client(url, username, password)
  page, n = c.next_page(), 0
  while n < max_tasks:
    data = task_data(page)
    if data is None:
      break
    page = c.post(page.url, _form(labeler, data))
    if page.status_code != 200:
      raise DataError(f"{username}: the app refused an answer (HTTP {page.status_code})")
    n += 1
  with lock:
    counts[username] = n


def run(url: str, users, seed: int = 0, max_tasks: int = 100000) -> dict[str, int]:
  """Every labeler answers until no task is left for it (or max_tasks); {username: answers}."""
  labelers = lab.default_labelers(len(users), seed)
  counts, lock, errors = {}, threading.Lock(), []

  def work(i):
    try:
      run_one(url, users[i][0], users[i][1], labelers[i], max_tasks, counts, lock)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
  threads = [threading.Thread(target=work, args=(i,)) for i in range(len(users))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise errors[0]
  return counts
