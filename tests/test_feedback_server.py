"""The feedback app as a running server, on SQLite and on a real PostgreSQL server: the labeler's
flow, double submits, overlap under concurrent labelers, skips, the admin's pages, imports that
fail cleanly, migrations, and the security rules (login everywhere, roles, CSRF, throttling, no
access to another labeler's assignment)."""

import collections
import json
import re
import threading
import uuid

import pytest

import feedback_live as fl

fl.need_feedback_deps()
EXTRA = [("victim", "victim-pass-123")]  # locked out by the throttling test
RANKING = [{"prompt": f"Human: tell me about the cat {i} . Assistant:",
            "responses": [f"the cat {i} is kind .", f"a cat {i} .", f"cat cat {i} is sad ."]}
           for i in range(6)]
PAIRS = [{"prompt": f"Human: describe the dog {i} . Assistant:",
          "responses": [f"the dog {i} is happy .", f"dog {i} ."]} for i in range(2)]
GOLD = [{"prompt": "Human: tell me about the rose . Assistant:",
         "responses": ["the rose is lovely .", "rose rose rose"], "gold_ranks": [0, 1]}]
DEMOS = [{"prompt": "Human: write about the sun . Assistant:"}]
OVERLAP = 2
STATE = {}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
  home = tmp_path_factory.mktemp(f"site_{request.param}")
  with fl.postgres_database() if request.param == "postgresql" else _none() as db:
    fl.make_site(home, db, fl.LABELERS + EXTRA)
    fl.cli(home, "import", fl.write_jsonl(home / "r.jsonl", RANKING + GOLD), "--batch", "r",
           "--overlap-fraction", "1", "--overlap", str(OVERLAP), "--gold-overlap", "5")
    fl.cli(home, "import", fl.write_jsonl(home / "p.jsonl", PAIRS), "--kind", "pairwise",
           "--batch", "p", "--overlap-fraction", "1", "--overlap", str(OVERLAP))
    fl.cli(home, "import", fl.write_jsonl(home / "d.jsonl", DEMOS), "--batch", "d")
    # The sample stage's files of two checkpoints: one response a line, paired by prompt.
    samples = []
    for ckpt, step in (("ppo", 180), ("sft", 400)):
      (home / ckpt).mkdir()
      samples.append(fl.write_jsonl(home / ckpt / "samples.jsonl", [
          {"prompt": f"Human: describe the owl {i} . Assistant:", "response": f"{ckpt} owl {i} .",
           "tokens": 4, "eos": True, "workdir": f"runs/{ckpt}", "step": step} for i in range(2)]))
    fl.cli(home, "import", *samples, "--kind", "pairwise", "--batch", "s", "--overlap-fraction",
           "1", "--overlap", str(OVERLAP))
    with fl.live_server(home) as url:
      yield {"home": home, "url": url, "backend": request.param}


class _none:
  def __enter__(self):
    return None

  def __exit__(self, *a):
    return False


def _answer(data: dict) -> dict:
  k = len(data["shown"])
  if data["kind"] == "demo":
    return {"action": "submit", "text": "the sun is bright ."}
  if data["kind"] == "pairwise":
    return {"action": "submit", "preference": "A-clearly"}
  form = {"action": "submit"}
  for p in range(k):
    form.update({f"rank_{p}": str(p + 1), f"rating_{p}": str(7 - p)})
  return form


def _export(server, tmp_path):
  out = tmp_path / "export"
  fl.cli(server["home"], "export", "--out", str(out), "--include-gold")
  with open(out / "comparisons.jsonl") as f:
    comps = [json.loads(line) for line in f]
  with open(out / "demonstrations.jsonl") as f:
    demos = [json.loads(line) for line in f]
  return comps, demos


def test_anonymous_requests_go_to_login(server):
  s = fl.Session(server["url"])
  for path in ("/", "/next/", "/manage/", "/manage/agreement/", "/manage/export/comparisons.jsonl",
               f"/a/{uuid.uuid4()}/", "/admin/", "/admin/feedback/answer/"):
    r = s.get(path)  # (the Django admin's own login page sends on to the same login)
    assert r.history and r.history[0].status_code == 302, path
    assert r.url.split("?")[0] == server["url"] + "/accounts/login/" and r.status_code == 200
  assert s.get("/accounts/login/").status_code == 200


def test_labeler_cannot_reach_others_or_admin_pages_and_csrf_is_required(server):
  a, b = fl.Session(server["url"], fl.LABELERS[0]), fl.Session(server["url"], fl.LABELERS[1])
  page = a.get("/next/")
  token = re.search(r"/a/([0-9a-f-]+)/", page.url).group(1)
  STATE["lab0_token"] = token
  # Another labeler: the assignment does not exist for them (404, not 403), read or write.
  assert b.get(f"/a/{token}/").status_code == 404
  assert b.post(f"/a/{token}/", _answer(fl.task_data(page))).status_code == 404
  assert b.get(f"/a/{uuid.uuid4()}/").status_code == 404  # guessing ids finds nothing
  for path in ("/manage/", "/manage/export/comparisons.jsonl", "/manage/agreement/",
               "/manage/agreement.png", "/admin/", "/admin/feedback/answer/",
               "/admin/auth/user/"):
    assert b.get(path, allow_redirects=False).status_code == 403, path
  # A form post without the CSRF token is refused, and stores nothing.
  r = a.post(f"/a/{token}/", _answer(fl.task_data(page)), csrf=False)
  assert r.status_code == 403
  assert a.get(f"/a/{token}/").status_code == 200  # still open


def test_login_throttling_locks_after_repeated_failures(server):
  s = fl.Session(server["url"])
  for _ in range(5):
    r = s.login("victim", "wrong-password")
    assert "/accounts/login/" in r.url
  r = s.login(*EXTRA[0])  # the right password, but locked out now
  assert r.status_code in (403, 429) and s.get("/", allow_redirects=False).status_code == 302


def test_invalid_answer_names_the_problem_and_double_submit_stores_once(server, tmp_path):
  a = fl.Session(server["url"], fl.LABELERS[0])
  page = a.get(f"/a/{STATE['lab0_token']}/")
  data = fl.task_data(page)
  form = _answer(data)
  bad = {k: v for k, v in form.items() if k != "rank_0"}
  r = a.post(page.url, bad)
  if data["kind"] == "ranking":
    assert r.status_code == 400 and "response 1 rank" in r.text
  first = a.post(page.url, form)
  assert first.status_code == 200
  again = a.post(page.url, form)  # a refresh / a retry
  assert again.status_code == 200 and "already" in again.text
  # Two tabs submitting at once: one answer.
  b = fl.Session(server["url"], fl.LABELERS[1])
  page_b = b.get("/next/")
  results = []
  threads = [threading.Thread(target=lambda: results.append(
      b.post(page_b.url, _answer(fl.task_data(page_b))).status_code)) for _ in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert results == [200] * 4
  comps, demos = _export(server, tmp_path)
  mine = collections.Counter((c["task"], c["labeler"]) for c in comps)
  mine.update((d["task"], d["labeler"]) for d in demos)
  assert all(v == 1 for v in mine.values()) and len(mine) == 2


def test_skip_frees_the_slot_for_someone_else(server):
  s = fl.Session(server["url"], fl.LABELERS[2])
  page = s.get("/next/")
  assert re.search(r"page \d+ / \d+", page.text) and 'id="timer"' in page.text
  token = page.url.rstrip("/").rsplit("/", 1)[-1]
  after = s.post(page.url, {"action": "skip"})
  assert after.status_code == 200 and token not in after.url
  STATE["skipped"] = (fl.task_data(page)["prompt"], fl.LABELERS[2][0])


def test_admin_pages_add_a_labeler_import_export_and_agreement(server):
  adm = fl.Session(server["url"], fl.ADMIN)
  page = adm.get("/manage/")
  assert page.status_code == 200 and "Import tasks" in page.text
  r = adm.post("/manage/", {"form": "user", "u-username": "newbie", "u-password": "newbie-pass-1",
                            "u-role": "labeler"})
  assert r.status_code == 200 and "labeler newbie created" in r.text
  fl.Session(server["url"], ("newbie", "newbie-pass-1"))  # can log in
  bad = adm.s.post(server["url"] + "/manage/", data={
      "form": "import", "i-kind": "ranking", "i-batch": "bad", "i-overlap_fraction": "0",
      "i-overlap": "2", "csrfmiddlewaretoken": adm.csrf()},
      files={"i-file": ("bad.jsonl", b'{"prompt": "p", "responses": ["a", "b"]}\n{oops\n')})
  assert "bad.jsonl:2: not valid JSON" in bad.text
  assert adm.get("/manage/export/comparisons.jsonl").headers["Content-Type"].startswith(
      "application/jsonl")
  agree = adm.get("/manage/agreement/")
  assert agree.status_code == 200 and "pairwise agreement" in agree.text
  assert adm.get("/admin/feedback/answer/").status_code == 200  # the Django admin, for admins
  png = adm.get("/manage/agreement.png")
  assert png.headers["Content-Type"] == "image/png" and png.content[:4] == b"\x89PNG"


def test_bad_import_is_one_clear_line_and_imports_nothing(server, tmp_path):
  path = fl.write_jsonl(tmp_path / "t.jsonl", [RANKING[0], "{not json", RANKING[1]])
  proc = fl.cli(server["home"], "import", path, check=False)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines() == [f"error: {path}:2: not valid JSON "
                                              "(Expecting property name enclosed in double "
                                              "quotes)"]
  proc = fl.cli(server["home"], "import", fl.write_jsonl(tmp_path / "k.jsonl", [
      {"prompt": "p", "responses": [str(i) for i in range(10)]}]), check=False)
  assert proc.returncode == 2 and "k.jsonl:1: 10 responses" in proc.stderr
  adm = fl.Session(server["url"], fl.ADMIN)
  assert "<strong>12</strong> tasks" in adm.get("/manage/").text  # 6 + 1 + 2 + 1 + 2: none added


def test_migrations_match_the_models_and_upgrade_in_place(server):
  proc = fl.cli(server["home"], "migrate")
  assert "No migrations to apply" in proc.stdout
  check = fl.subprocess.run(
      [fl.sys.executable, "-c", "import sys; from rlhf_jax.feedback import site; "
       "site.setup(sys.argv[1]); from django.core.management import call_command; "
       "call_command('makemigrations', 'feedback', check=True, dry_run=True)",
       str(server["home"])], cwd=fl.REPO, capture_output=True, text=True,
      env={**fl.os.environ, "PYTHONPATH": fl.REPO})
  assert check.returncode == 0, check.stdout + check.stderr


def test_concurrent_labelers_fill_each_overlap_exactly(server, tmp_path):
  from rlhf_jax.feedback import simulate  # pylint: disable=g-import-not-at-top
  counts = simulate.run(server["url"], fl.LABELERS)
  comps, demos = _export(server, tmp_path)
  assert sum(counts.values()) + 2 == len(comps) + len(demos)  # + the two answered above
  per_task = collections.Counter(c["task"] for c in comps)
  gold = {c["task"] for c in comps if c["prompt"] == GOLD[0]["prompt"]}
  skipped_gold = STATE["skipped"][0] == GOLD[0]["prompt"]  # its skipper may not take it again
  for task, n in per_task.items():
    assert n == (len(fl.LABELERS) - skipped_gold if task in gold else OVERLAP), (task, n)
  assert len(per_task) == len(RANKING) + len(PAIRS) + len(GOLD) + 2
  owls = [c for c in comps if "owl" in c["prompt"]]
  assert len(owls) == 2 * OVERLAP and all(c["kind"] == "pairwise" for c in owls)
  for c in owls:  # each answer credits the two checkpoints it compared
    assert sorted((x["workdir"], x["step"]) for x in c["sources"]) == [("runs/ppo", 180),
                                                                       ("runs/sft", 400)]
    assert c["strength"] in ("slightly", "clearly", "much")
  prompt, skipper = STATE["skipped"]
  assert not any(c["prompt"] == prompt and c["labeler"] == skipper for c in comps)
  for c in comps:  # shown order is a permutation; ranks match the ranking
    assert sorted(c["shown_order"]) == list(range(len(c["responses"])))
    assert [c["ranks"][i] for i in c["ranking"]] == sorted(c["ranks"])
  agreement = json.loads(fl.cli(server["home"], "agreement", "--json").stdout)
  assert agreement["answers"] == len(comps) and agreement["overlap_tasks"] == 10
  assert set(agreement["gold"]) == {name for name, _ in fl.LABELERS} - (
      {skipper} if skipped_gold else set())
  # The two checkpoints' answers feed an Elo table: every owl answer is one game.
  assert {e["system"] for e in agreement["elo"]} == {"runs/ppo@180", "runs/sft@400"}
  assert sum(e["games"] for e in agreement["elo"]) == 2 * len(owls)


def test_secret_is_generated_per_site_and_serve_binds_to_localhost(server, tmp_path):
  from rlhf_jax.feedback import cli  # pylint: disable=g-import-not-at-top
  key = server["home"] / "secret_key"
  assert (key.stat().st_mode & 0o777) == 0o600 and len(key.read_text().strip()) >= 50
  fl.cli(tmp_path / "other", "init", "--password", "admin-pass-123")
  assert (tmp_path / "other" / "secret_key").read_text() != key.read_text()
  assert cli.parser().parse_args(["serve"]).host == "127.0.0.1"
  proc = fl.cli(tmp_path / "other", "init", "--password", "admin-pass-123", check=False)
  assert proc.returncode == 2 and "already holds a feedback site" in proc.stderr
