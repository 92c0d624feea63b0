"""Load benchmark of the feedback app (a script, not a test): L simulated labelers in threads on
127.0.0.1 submit N answers, every `double_every`-th one posted twice (a refresh / retry), against
a fresh site on SQLite or PostgreSQL. Checks every answer is stored exactly once and that the
export holds exactly the answers sent; prints throughput and latency percentiles.

  python scripts/feedback_load.py --db sqlite
  python scripts/feedback_load.py --db postgresql://user:pass@127.0.0.1:5432/postgres

(`--db postgresql://...` names a role that may create databases: a fresh one is made and dropped.)
Latency is one submit as a browser sees it: the POST, its redirect and the next task's page.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
import feedback_live as fl  # noqa: E402  pylint: disable=wrong-import-position


def tasks(n: int) -> list[dict]:
  return [{"prompt": f"Human: tell me about the cat number {i} . Assistant:",
           "responses": [f"the cat {i} is kind .", f"a cat {i} .", f"cat {i} is sad ."]}
          for i in range(n)]


def labeler(url, user, answers_max, double_every, out, lock):
  s = fl.Session(url, user)
  page, sent, lat, doubles = s.get("/next/"), [], [], 0
  for n in range(answers_max):  # bounded: never more than this labeler's share
    data = fl.task_data(page)
    if data is None:
      break
    form = {"action": "submit"}
    for p in range(len(data["shown"])):
      form.update({f"rank_{p}": str(p + 1), f"rating_{p}": "5"})
    t0 = time.perf_counter()
    nxt = s.post(page.url, form)
    lat.append(time.perf_counter() - t0)
    if nxt.status_code != 200:
      raise RuntimeError(f"{user[0]}: HTTP {nxt.status_code} on submit")
    sent.append((data["prompt"], user[0]))
    if double_every and n % double_every == 0:
      again = s.post(page.url, form)  # the same answer again: must not be stored twice
      doubles += 1
      if again.status_code != 200:
        raise RuntimeError(f"{user[0]}: HTTP {again.status_code} on a double submit")
    page = nxt
  with lock:
    out["sent"] += sent
    out["lat"] += lat
    out["doubles"] += doubles


def run(db_url: str | None, n_labelers: int, n_answers: int, double_every: int, threads: int):
  with tempfile.TemporaryDirectory() as tmp:
    users = [(f"load{i}", f"load{i}-pass-123") for i in range(n_labelers)]
    fl.make_site(tmp, db_url, users)
    fl.cli(tmp, "import", fl.write_jsonl(os.path.join(tmp, "t.jsonl"), tasks(n_answers // 2)),
           "--overlap-fraction", "1", "--overlap", "2")
    out, lock = {"sent": [], "lat": [], "doubles": 0}, threading.Lock()
    with fl.live_server(tmp, threads=threads) as url:
      share = n_answers // n_labelers * 2 + 10
      ths = [threading.Thread(target=labeler, args=(url, u, share, double_every, out, lock))
             for u in users]
      t0 = time.perf_counter()
      for t in ths:
        t.start()
      for t in ths:
        t.join()
      wall = time.perf_counter() - t0
    fl.cli(tmp, "export", "--out", os.path.join(tmp, "exp"))
    with open(os.path.join(tmp, "exp", "comparisons.jsonl")) as f:
      exported = collections.Counter((r["prompt"], r["labeler"]) for r in map(json.loads, f))
  sent = collections.Counter(out["sent"])
  lat = np.array(out["lat"]) * 1000
  return {"answers_sent": sum(sent.values()), "double_submits": out["doubles"],
          "exported": sum(exported.values()), "stored_once": exported == sent,
          "max_per_answer": max(exported.values()), "wall_s": round(wall, 1),
          "answers_per_s": round(sum(sent.values()) / wall, 1),
          "p50_ms": round(float(np.percentile(lat, 50)), 1),
          "p95_ms": round(float(np.percentile(lat, 95)), 1)}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--db", default="sqlite", help="sqlite, or a postgresql:// URL (CREATEDB role)")
  ap.add_argument("--labelers", type=int, default=20)
  ap.add_argument("--answers", type=int, default=2000)
  ap.add_argument("--double-every", type=int, default=10)
  ap.add_argument("--threads", type=int, default=8, help="server threads")
  args = ap.parse_args()
  if args.db == "sqlite":
    res = run(None, args.labelers, args.answers, args.double_every, args.threads)
  else:
    os.environ["RLHF_FEEDBACK_TEST_PG"] = args.db
    fl.PG_URL = args.db
    with fl.postgres_database() as url:
      res = run(url, args.labelers, args.answers, args.double_every, args.threads)
  print(json.dumps({"db": "sqlite" if args.db == "sqlite" else "postgresql", **res}))
  ok = res["stored_once"] and res["exported"] == res["answers_sent"] == args.answers
  sys.exit(0 if ok else 1)


if __name__ == "__main__":
  main()
