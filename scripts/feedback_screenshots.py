"""The README's screenshots of the feedback app (docs/images/ranking.png, agreement.png): a fresh
site with built-in tasks, three simulated labelers answering the overlap and gold tasks through
the app, then Chromium (Playwright) on the agreement page and on a labeler's ranking page.

  python scripts/feedback_screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
import feedback_live as fl  # noqa: E402  pylint: disable=wrong-import-position
from rlhf_jax.data import builtin_task as bt  # noqa: E402  pylint: disable=wrong-import-position
from rlhf_jax.feedback import simulate  # noqa: E402  pylint: disable=wrong-import-position

SIMS = [(f"labeler{i}", f"labeler{i}-pass-123") for i in range(3)]


def tasks(n, seed, gold=False):
  rng, tok, out = np.random.default_rng(seed), bt.tokenizer(), []
  for p in bt.prompts(n, "train", seed):
    resp = list(dict.fromkeys(" ".join(bt.write_response(p, rng.uniform(0.2, 1), rng).split()[:24])
                              for _ in range(4)))
    rec = {"prompt": p.text, "responses": resp}
    if gold:
      g = bt.gold_scores([p.ids] * len(resp), [tok.encode(r) + [tok.eos_id] for r in resp])
      rec["gold_ranks"] = [int(x) for x in np.argsort(np.argsort(-g))]
    out.append(rec)
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--out", default=os.path.join(REPO, "docs", "images"))
  args = ap.parse_args()
  from playwright.sync_api import sync_playwright  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as home:
    fl.make_site(home, None, SIMS + [("alice", "alice-pass-123")])
    fl.cli(home, "import", fl.write_jsonl(os.path.join(home, "o.jsonl"), tasks(40, 1)),
           "--overlap-fraction", "1", "--overlap", "3")
    fl.cli(home, "import", fl.write_jsonl(os.path.join(home, "g.jsonl"), tasks(8, 2, gold=True)),
           "--gold-overlap", "3")
    with fl.live_server(home) as url, sync_playwright() as pw:
      simulate.run(url, SIMS)
      fl.cli(home, "import", fl.write_jsonl(os.path.join(home, "a.jsonl"), tasks(3, 3)))
      browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
      for user, path in ((fl.ADMIN, "/manage/agreement/"), (("alice", "alice-pass-123"), "/next/")):
        page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        page.goto(url + "/accounts/login/")
        page.fill("input[name=username]", user[0])
        page.fill("input[name=password]", user[1])
        page.click("button[type=submit]")
        page.goto(url + path)
        if path == "/next/":
          for pos, rating in enumerate((6, 3, 6, 2)):
            page.check(f"input[name=rating_{pos}][value='{rating}']")
          page.check("input[name=flag_3][value=instruction]")
          for pos, row in ((0, 1), (2, 1), (1, 2), (3, 3)):
            page.drag_and_drop(f"[data-chip='{pos}']", f"[data-row='{row}']")
          page.fill("textarea[name=notes]", "1 and 3 are equally good")
          page.wait_for_timeout(2100)
          page.screenshot(path=os.path.join(args.out, "ranking.png"), full_page=True)
        else:
          page.wait_for_function("document.querySelector('img.plot').naturalWidth > 0")
          page.screenshot(path=os.path.join(args.out, "agreement.png"), full_page=True)
      browser.close()
  print(f"screenshots in {args.out}")


if __name__ == "__main__":
  main()
