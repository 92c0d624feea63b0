"""Iterated RLHF with people: a round's new comparisons come from a feedback site, not from the
simulated labelers.

`collect(...)` is called where the simulated round would label. The first time, it writes the
policy's samples as tasks (`<path>.tasks.jsonl`: prompt, the distinct responses, their token ids)
and imports them into the site as batch `<batch>`, then stops the run with `FeedbackPending`;
rerunning the same command after labelling exports the batch (`--require-complete`) straight to
`path`, in the `ranked` schema with the token ids carried through, and the round continues. While
slots are still open it stops again, saying how many. The site is reached only through its
command line (`python -m rlhf_jax.feedback`), so training code never imports the web app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Callable

from rlhf_jax.errors import ConfigError, UserError


class FeedbackPending(UserError):
  """The round's tasks wait for labelers; rerun the same command once they are labelled."""


def _feedback(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "rlhf_jax.feedback", *args], capture_output=True,
                        text=True, check=False)


def task_records(prompts, ids, responses, tokenizer, workdir: str) -> list[dict]:
  """Import records: one per prompt, its distinct responses (a prompt left with one is dropped)."""
  out = []
  for p, pid, resp in zip(prompts, ids, responses):
    keep = {}
    for r in resp:
      keep.setdefault(tokenizer.decode(r).strip(), r)
    keep.pop("", None)
    if len(keep) >= 2:
      out.append({"prompt": getattr(p, "text", p), "responses": list(keep),
                  "prompt_ids": list(pid), "response_ids": [list(r) for r in keep.values()],
                  "workdir": workdir})
  return out


def collect(home: str, batch: str, path: str, make_tasks: Callable[[], list[dict]]) -> None:
  """Ensures `path` holds the labelled comparisons of `batch`, or raises FeedbackPending."""
  if os.path.exists(path):
    return
  if not home:
    raise ConfigError("iterative.labelers='human' needs iterative.feedback_home: a site made by "
                      "`python -m rlhf_jax.feedback init --home DIR`")
  tasks = path + ".tasks.jsonl"
  if not os.path.exists(tasks):
    os.makedirs(os.path.dirname(tasks) or ".", exist_ok=True)
    with open(tasks + ".tmp", "w", encoding="utf-8") as f:
      for rec in make_tasks():
        f.write(json.dumps(rec) + "\n")
    proc = _feedback("import", tasks + ".tmp", "--home", home, "--batch", batch)
    if proc.returncode:
      raise UserError(f"importing {tasks} into the feedback site {home}: {proc.stderr.strip()}")
    os.replace(tasks + ".tmp", tasks)  # imported exactly once
    raise FeedbackPending(
        f"{batch}: new comparison tasks are in the feedback site {home}. Label them "
        f"(python -m rlhf_jax.feedback serve --home {home}), then rerun this command.")
  with tempfile.TemporaryDirectory(dir=os.path.dirname(path) or ".") as tmp:
    proc = _feedback("export", "--home", home, "--batch", batch, "--require-complete",
                     "--out", tmp)
    if proc.returncode == 3:
      raise FeedbackPending(f"{batch}: {proc.stderr.strip()}; rerun this command after labelling")
    if proc.returncode:
      raise UserError(f"exporting {batch} from the feedback site {home}: {proc.stderr.strip()}")
    os.replace(os.path.join(tmp, "comparisons.jsonl"), path)
