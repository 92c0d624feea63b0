"""scripts/build_hh_pretrain_text.py: the pretraining text is the training split's dialogues
only, and `--exclude` leaves a whole file out (a trunk for a cross-file figure never saw it)."""

import gzip
import json
import os
import subprocess
import sys

from rlhf_jax.data import comparisons as cmp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "build_hh_pretrain_text.py")


def _hh_folder(root):
  for name in ("alpha", "beta"):
    os.makedirs(root / name)
    with open(root / name / "test.jsonl", "w") as f:
      for i in range(60):
        turn = f"\n\nHuman: {name} question {i}?"
        f.write(json.dumps({"chosen": f"{turn}\n\nAssistant: {name} answer {i}",
                            "rejected": f"{turn}\n\nAssistant: no"}) + "\n")
  return str(root)


def _run(*args):
  return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                        timeout=120, env={**os.environ, "PYTHONPATH": REPO})


def test_exclude_leaves_a_file_out(tmp_path):
  src = _hh_folder(tmp_path / "hh")
  out = str(tmp_path / "text.jsonl.gz")
  proc = _run("--source", src, "--out", out, "--exclude", "beta")
  assert proc.returncode == 0, proc.stderr
  with gzip.open(out, "rt") as f:
    texts = [json.loads(line)["text"] for line in f]
  assert texts and not any("beta" in t for t in texts)
  assert "excluded beta: 60 records" in proc.stdout
  # Exactly alpha's training split (chosen and rejected) is written.
  cfg = cmp.ComparisonConfig(source=os.path.join(src, "alpha"), eval_fraction=0.2,
                             valid_fraction=0.1)
  assert len(texts) == 2 * sum(1 for _ in cmp.split_records(cfg, "train"))
  # By path too; and a name that matches nothing stops the script, naming the files.
  assert _run("--source", src, "--out", out, "--exclude",
              os.path.join(src, "beta", "test.jsonl")).returncode == 0
  bad = _run("--source", src, "--out", out, "--exclude", "gamma")
  assert bad.returncode != 0 and "gamma" in bad.stderr and "alpha" in bad.stderr
