"""The reward-model stage's figures on a file built to mislead: length baselines on the full
texts (its truncation flips the token-count rule), the held-out split read only after training
(none of it before, normalisation on training responses), per-record rewards, and
`python -m rlhf_jax.reward.score` giving the stage's own report through the same code path."""

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rlhf_jax import stages
from rlhf_jax.data import comparisons as cmp
from rlhf_jax.data.tokenizer import load_tokenizer
from rlhf_jax.errors import ConfigError
from rlhf_jax.reward import model as rm_model
from rlhf_jax.reward import score
from rlhf_jax.train import rm_stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import reward  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

WORDS = "cat dog tree sun rain book song road ship lamp".split()
MAX_LEN = 32


def _records(n, n_long, seed):
  """pairs records: the first n_long have a long chosen (60 words) over a long rejected (45),
  both far beyond MAX_LEN tokens; the rest a short chosen (2 words) over a longer rejected (5)."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    lc, lr = (60, 45) if i < n_long else (2, 5)
    out.append({"prompt": f"{' '.join(rng.choice(WORDS, 3))} {seed} {i}?",
                "chosen": " ".join(rng.choice(WORDS, lc)),
                "rejected": " ".join(rng.choice(WORDS, lr))})
  return out


def _write(path, recs):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    for r in recs:
      f.write(json.dumps(r) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One tiny RM run with no validation slice; records every split read and whether training
  had finished when it was read."""
  tmp = tmp_path_factory.mktemp("rmscore")
  train = _write(tmp / "data" / "train" / "train.jsonl", _records(48, 24, 0))
  held = _write(tmp / "data" / "test" / "test.jsonl", _records(20, 14, 1))
  c = reward.get_config("hh_scratch")
  c.data.update(source=train, eval_split=held, format="pairs", tokenizer="bpe:320",
                valid_fraction=0.0, max_len=MAX_LEN)
  c.model.update(vocab_size=320, max_seq_len=MAX_LEN, hidden=32, mlp_dim=64, num_layers=1)
  c.train.update(steps=4, batch_size=8, log_every=2, eval_every=2)
  reads, finished = [], []
  real_split, real_loop = cmp.split_records, rm_stage.train_loop

  def split_records(cfg, split):
    reads.append((split, bool(finished)))
    return real_split(cfg, split)

  def train_loop(**kw):
    out = real_loop(**kw)
    finished.append(True)
    return out

  wd = str(tmp / "rm")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(cmp, "split_records", split_records)
    mp.setattr(rm_stage, "train_loop", train_loop)
    out = stages.run(c, wd)
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    logged = set().union(*(json.loads(line).keys() for line in f))
  return {"wd": wd, "train": train, "held": held, "out": out, "reads": reads,
          "logged": logged, "config": c}


def test_length_baselines_are_on_the_full_texts(run):
  rep = run["out"]["report"]
  # Words: the chosen is longer on the 14 long pairs, shorter on the 6 short ones.
  assert rep["pairs"] == 20
  assert rep["longer_wins"] == pytest.approx(0.7) and rep["shorter_wins"] == pytest.approx(0.3)
  assert rep["longer_wins_chars"] == pytest.approx(0.7)
  assert rep["truncated_fraction"] == pytest.approx(0.7)
  assert rep["shorter_won_pairs"] == 6 and rep["longer_won_pairs"] == 14
  # The truncated token counts tie on every long pair, so counted in tokens the better rule
  # would flip to "shorter wins" (0.65 against 0.35): the file is the case the issue found.
  tok = load_tokenizer(os.path.join(run["wd"], "tokenizer"))
  comps, _ = cmp.load_comparisons(
      cmp.ComparisonConfig(source=run["held"], format="pairs", max_len=MAX_LEN,
                           eval_fraction=0.0), tok, "train")
  lens = cmp.response_lengths(comps, 2, "tokens")
  longer_tokens = np.mean((lens[:, 0] > lens[:, 1]) + 0.5 * (lens[:, 0] == lens[:, 1]))
  assert longer_tokens == pytest.approx(0.35)


def test_held_out_split_is_read_only_after_training(run):
  assert ("eval", False) not in run["reads"], run["reads"]
  assert [r for r in run["reads"] if r[0] == "eval"] == [("eval", True)]  # once, at the end
  assert "train_slice_accuracy" in run["logged"]
  assert not any(k.startswith(("eval_", "valid_")) for k in run["logged"])


def test_normalisation_is_fitted_on_training_responses(run):
  norm = rm_model.read_normalization(run["wd"])
  assert "training" in norm["samples"] and norm["n"] == 2 * 48
  from rlhf_jax.reward import score  # pylint: disable=g-import-not-at-top
  got = score.run(run["wd"], run["train"], out=os.path.join(run["wd"], "train_scores.jsonl"))
  with open(os.path.join(run["wd"], "train_scores.jsonl")) as f:
    raw = np.array([json.loads(line)["rewards"] for line in f])
  assert got["records"] == 48
  np.testing.assert_allclose([raw.mean(), raw.std()], [norm["raw_mean"], norm["raw_std"]],
                             rtol=1e-4, atol=1e-5)


def test_score_command_gives_the_stage_report(run, tmp_path):
  from rlhf_jax.reward import score  # pylint: disable=g-import-not-at-top
  out, rep_path = str(tmp_path / "scores.jsonl"), str(tmp_path / "report.json")
  got = score.run(run["wd"], run["held"], out=out, report=rep_path)["report"]
  with open(os.path.join(run["wd"], "eval_report.json")) as f:
    stage = json.load(f)
  with open(rep_path) as f:
    assert json.load(f) == pytest.approx(got)
  exact = ("pairs", "longer_wins", "shorter_wins", "longer_wins_chars", "shorter_wins_chars",
           "truncated_fraction", "shorter_won_pairs", "longer_won_pairs", "length_unit")
  assert {k: got[k] for k in exact} == {k: stage[k] for k in exact}
  for k in ("accuracy", "reward_mean", "reward_std", "shorter_won_accuracy"):
    assert got[k] == pytest.approx(stage[k], abs=1e-4), k
  with open(out) as f, open(os.path.join(run["wd"], rm_stage.EVAL_REWARDS)) as g:
    mine, theirs = [json.loads(x) for x in f], [json.loads(x) for x in g]
  assert [r["record"] for r in mine] == [r["record"] for r in theirs]
  assert mine[0]["record"].endswith("test.jsonl:1")
  np.testing.assert_allclose([r["normalized"] for r in mine],
                             [r["normalized"] for r in theirs], atol=1e-4)
  # Single (prompt, response) records: the chosen responses alone score as in their pairs.
  singles = _write(tmp_path / "singles.jsonl",
                   [{"prompt": r["prompt"], "response": r["chosen"]}
                    for r in _records(20, 14, 1)])
  score.run(run["wd"], singles, out=str(tmp_path / "s.jsonl"), format="prompt_response")
  with open(tmp_path / "s.jsonl") as f:
    single = [json.loads(x)["reward"] for x in f]
  np.testing.assert_allclose(single, [r["rewards"][0] for r in mine], atol=1e-5)


def test_score_command_bad_workdir_is_one_clear_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "rlhf_jax.reward.score", f"--workdir={tmp_path / 'nope'}",
       "--source=x.jsonl"], cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "PYTHONPATH": REPO})
  assert proc.returncode == 2, proc.stderr
  assert "nope" in proc.stderr and "Traceback" not in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_normalisation_reads_train_norm_comparisons(run, tmp_path):
  """train.norm_comparisons sets how many training comparisons the gain and bias are fitted on
  (the SmolLM2 preset's 64: all 1,200 would be an hour of CPU forward passes); a finished run
  resumed with it only redoes the end."""
  wd = str(tmp_path / "rm")
  shutil.copytree(run["wd"], wd)
  c = copy.deepcopy(run["config"])
  c.train.norm_comparisons = 10
  stages.run(c, wd)
  norm = rm_model.read_normalization(wd)
  assert norm["n"] == 20 and "first 10 training comparisons" in norm["samples"]
  score.run(wd, run["train"], out=os.path.join(wd, "train_scores.jsonl"))
  with open(os.path.join(wd, "train_scores.jsonl")) as f:
    raw = np.array([json.loads(line)["rewards"] for line in f])[:10]
  np.testing.assert_allclose([raw.mean(), raw.std()], [norm["raw_mean"], norm["raw_std"]],
                             rtol=1e-4, atol=1e-5)
  c.train.norm_comparisons = 0
  with pytest.raises(ConfigError, match="train.norm_comparisons=0 must be >= 1"):
    stages.run(c, wd)
