"""The feedback app in a real headless browser (Debian's Chromium driven by Playwright): an admin
creates labelers and imports tasks; a labeler rates, flags, ranks with ties by mouse (drag) and
by keyboard alone, skips one and submits; a second labeler labels the overlap; the admin exports
and opens the agreement page. Screenshots go to $RLHF_FEEDBACK_SCREENSHOTS (docs/images for the
README) or the test's temporary folder."""

import json
import os
import shutil

import pytest

import feedback_live as fl

fl.need_feedback_deps()
CHROMIUM = os.environ.get("RLHF_FEEDBACK_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
  pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)",
              allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright for Python is not installed (feedback extra)")

TASKS = [{"prompt": "Human: tell me about the rose brief . Assistant:",
          "responses": ["the rose is lovely .", "a rose is red and kind .", "rose rose rose"]},
         {"prompt": "Human: write something nice about the owl . Assistant:",
          "responses": ["the owl is wise and calm . my owl is happy .", "owl .",
                        "the owl is grumpy ."]},
         {"prompt": "Human: describe the harbor long . Assistant:",
          "responses": ["the harbor is calm .", "boats .", "the harbor is busy and bright ."]}]
USERS = {"alice": "alice-pass-123", "bob": "bob-pass-1234"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
  home = tmp_path_factory.mktemp("browser_site")
  fl.make_site(home, None, labelers=[])
  with fl.live_server(home) as url, sync_api.sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=CHROMIUM if os.path.exists(CHROMIUM)
                                 else shutil.which("chromium"), args=["--no-sandbox"])
    yield {"url": url, "home": home, "browser": browser,
           "shots": os.environ.get("RLHF_FEEDBACK_SCREENSHOTS") or str(home)}
    browser.close()


def _login(app, user, password):
  ctx = app["browser"].new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
  page = ctx.new_page()
  page.goto(app["url"] + "/")
  assert "/accounts/login/" in page.url
  page.fill("input[name=username]", user)
  page.fill("input[name=password]", password)
  page.click("button[type=submit]")
  page.wait_for_url(app["url"] + "/")
  return page


def _shown(page):
  return json.loads(page.inner_text("#task-data"))["shown"]


def _admin_sets_up(app, tmp_path):
  admin = _login(app, *fl.ADMIN)
  admin.click("text=Manage")
  for name, pw in USERS.items():
    admin.fill("#id_u-username", name)
    admin.fill("#id_u-password", pw)
    admin.select_option("#id_u-role", "labeler")
    admin.click("#add-user button[type=submit]")
    assert f"labeler {name} created" in admin.inner_text(".messages")
  admin.set_input_files("#id_i-file", fl.write_jsonl(tmp_path / "tasks.jsonl", TASKS))
  admin.fill("#id_i-batch", "browser")
  admin.fill("#id_i-overlap_fraction", "1")
  admin.fill("#id_i-overlap", "2")
  admin.click("#import button[type=submit]")
  assert "imported 3 tasks" in admin.inner_text(".messages")
  return admin


def _alice_by_mouse_then_keyboard_then_skip(app):
  alice = _login(app, "alice", USERS["alice"])
  alice.click("text=Start labeling")
  # Task 1, by mouse: ratings and a flag clicked, chips dragged into rank rows (1 and 2 tied).
  assert "page 1 / 3" in alice.inner_text(".taskbar")
  first = _shown(alice)
  for pos, rating in enumerate((6, 6, 2)):
    alice.check(f"input[name=rating_{pos}][value='{rating}']")
  alice.check("input[name=flag_2][value=instruction]")
  alice.drag_and_drop("[data-chip='0']", "[data-row='1']")
  alice.drag_and_drop("[data-chip='1']", "[data-row='1']")
  alice.drag_and_drop("[data-chip='2']", "[data-row='2']")
  assert [alice.input_value(f"select[name=rank_{p}]") for p in range(3)] == ["1", "1", "2"]
  alice.wait_for_timeout(1100)  # the running timer ticks
  assert alice.inner_text("#timer") != "0:00"
  alice.screenshot(path=os.path.join(app["shots"], "ranking.png"), full_page=True)
  alice.click("button[value=submit]")
  # Task 2, keyboard alone: focus moves by Tab, space ticks, digits and arrows rank, Enter sends.
  assert "page 2 / 3" in alice.inner_text(".taskbar")
  second = _shown(alice)
  alice.focus("input[name=rating_0][value='1']")
  for _ in range(4):
    alice.keyboard.press("ArrowRight")  # radio group: 1 -> 5
  alice.focus("input[name=rating_1][value='3']")
  alice.keyboard.press("Space")
  alice.focus("input[name=rating_2][value='7']")
  alice.keyboard.press("Space")
  alice.focus("[data-chip='2']")
  alice.keyboard.press("1")
  alice.focus("[data-chip='0']")
  alice.keyboard.press("2")
  alice.focus("[data-chip='1']")
  alice.keyboard.press("3")
  alice.keyboard.press("ArrowUp")  # 3 -> 2: tied with chip 0
  assert [alice.input_value(f"select[name=rank_{p}]") for p in range(3)] == ["2", "2", "1"]
  alice.focus("textarea[name=notes]")
  alice.keyboard.type("keyboard only")
  alice.focus("button[value=submit]")
  with alice.expect_navigation():
    alice.keyboard.press("Enter")
  assert alice.locator(".error").count() == 0, alice.inner_text(".error")
  # Task 3: skipped.
  assert "page 3 / 3" in alice.inner_text(".taskbar")
  skipped = json.loads(alice.inner_text("#task-data"))["prompt"]
  alice.click("button[value=skip]")
  assert "No tasks left" in alice.inner_text("main")
  return first, second, skipped


def test_admin_labelers_export_and_agreement_in_a_browser(app, tmp_path):
  admin = _admin_sets_up(app, tmp_path)
  first, second, skipped = _alice_by_mouse_then_keyboard_then_skip(app)
  bob = _login(app, "bob", USERS["bob"])
  bob.click("text=Start labeling")
  for _ in range(3):  # bob labels the overlap with the rank selects
    for p in range(3):
      bob.check(f"input[name=rating_{p}][value='{4 + p}']")
      bob.select_option(f"select[name=rank_{p}]", str(3 - p))
    bob.click("button[value=submit]")
  assert "No tasks left" in bob.inner_text("main")

  admin.goto(app["url"] + "/manage/")
  with admin.expect_download() as dl:
    admin.click("text=comparisons.jsonl")
  recs = [json.loads(x) for x in open(dl.value.path())]
  assert sorted((r["labeler"], r["prompt"]) for r in recs) == sorted(
      [("alice", t["prompt"]) for t in TASKS if t["prompt"] != skipped] +
      [("bob", t["prompt"]) for t in TASKS])

  def alice_ranks(shown, want):
    rec = next(r for r in recs if r["labeler"] == "alice" and r["responses"] is not None
               and sorted(r["responses"]) == sorted(shown))
    return [want[shown.index(text)] for text in rec["responses"]], rec
  expect, rec = alice_ranks(first, [0, 0, 1])
  assert rec["ranks"] == expect
  assert rec["flags"][rec["responses"].index(first[2])] == ["instruction"]
  assert rec["ratings"][rec["responses"].index(first[0])] == 6
  expect, rec = alice_ranks(second, [1, 1, 0])
  assert rec["ranks"] == expect and rec["notes"] == "keyboard only"
  assert rec["ratings"][rec["responses"].index(second[0])] == 5

  admin.click("text=Agreement and bias report")
  table = admin.inner_text("#agreement-table")
  assert "pairwise agreement" in table and "alice: agrees with others' majority" in table
  admin.wait_for_function("document.querySelector('img.plot').naturalWidth > 0")
  admin.screenshot(path=os.path.join(app["shots"], "agreement.png"), full_page=True)
