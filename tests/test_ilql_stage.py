"""The ILQL stage end to end on the tiny built-in pipeline: the best-of-n stage's scored
samples as its data, evals of the held-out losses, the final table (gold, RM score, KL to the
SFT policy), and a resumed run equal to an uninterrupted one bitwise."""

import json
import os

import jax
import numpy as np
import pytest

from rlhf_jax import config_base, smoke, stages
from rlhf_jax.errors import ConfigError, DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(upstream, root):
  """configs/ilql.py over the finished tiny `upstream`; its best-of-n samples in <root>/samples."""
  c = config_base.from_file(os.path.join(REPO, "configs", "ilql.py"))
  config_base.apply_overrides(c, {k: v for k, v in {**smoke.PIPELINE,
                                                    **smoke.workdirs(upstream)}.items()
                                  if k.startswith("pipeline.")})
  c.samples.workdir = os.path.join(root, "samples")
  c.samples.data.builtin_train = 64
  c.samples.best_of_n.update(num_prompts=24, prompts_per_call=4, max_new_tokens=8)
  c.ilql.update(max_response_len=8, polyak=0.5)
  c.data.eval_fraction = 0.25
  c.optim.learning_rate = 1e-3
  c.train.update(steps=6, batch_size=8, log_every=2, eval_every=3, checkpoint_every=3)
  c.eval_policy.update(prompts=16, batch_size=8, max_new_tokens=8)
  return c


def _log(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["stage"] == "ilql"]


@pytest.fixture(scope="module")
def full(smoke_upstream, tmp_path_factory):
  """(this module's root: the samples and the uninterrupted run "full"; its result)."""
  root = str(tmp_path_factory.mktemp("ilql"))
  return root, stages.run(_config(smoke_upstream, root), os.path.join(root, "full"))


@pytest.fixture
def config(smoke_upstream, full):
  """A fresh config of the module's run (its samples are made: `full` ran first)."""
  return lambda: _config(smoke_upstream, full[0])


def test_ilql_on_the_sft_policys_scored_samples(full):
  root, out = full
  with open(os.path.join(root, "samples", "best_of_n_samples.jsonl")) as f:
    recs = [json.loads(l) for l in f]
  assert len(recs) == 24 * 4 and all({"prompt_ids", "response_ids", "rm_score", "gold"} <= set(r)
                                     for r in recs)
  rows = _log(os.path.join(root, "full"))
  evals = [r for r in rows if "eval_q_loss" in r]
  train = [r for r in rows if "cql_loss" in r and "eval_q_loss" not in r]
  assert [r["step"] for r in evals] == [0, 3, 6] and len(train) == 3
  assert all(np.isfinite(r["loss"]) and r["nonfinite"] == 0 for r in train)
  assert evals[-1]["eval_q_loss"] < evals[0]["eval_q_loss"]  # Q learns the returns
  pe = out["policy_eval"]
  assert list(pe) == ["SFT (reference)", "ILQL LM head", "ILQL (beta 1)", "ILQL (beta 4)",
                      "ILQL (beta 16)"]  # ilql.beta, then the preset's eval_betas
  assert pe["SFT (reference)"]["kl"] == 0
  assert all(np.isfinite(v["gold"]) and np.isfinite(v["rm_score"]) for v in pe.values())
  # The shaped decoding samples other responses than the LM head alone. The smoke pipeline's
  # 8-token answers never end and their gold hardly moves at this size (-5.439 for SFT, LM head
  # and beta 1 alike): compare the KL and the RM score.
  shaped, head = pe["ILQL (beta 1)"], pe["ILQL LM head"]
  assert (shaped["kl"], shaped["rm_score"]) != (head["kl"], head["rm_score"])
  with open(os.path.join(root, "full", "eval_policy.json")) as f:
    assert json.load(f) == pe
  # The workdir's params are the policy's: a later stage reads it as an SFT workdir.
  with open(os.path.join(root, "full", "model.json")) as f:
    assert json.load(f)["heads"] == "lm"


def test_resumed_ilql_run_equals_uninterrupted_bitwise(full, config, tmp_path):
  root, out = full
  c = config()
  c.eval_policy.prompts = 0  # the final table does not touch the state
  c.train.stop_at = 3
  part = stages.run(c, str(tmp_path))
  assert part["step"] == 3
  c.train.stop_at = 0
  resumed = stages.run(c, str(tmp_path))
  assert resumed["step"] == 6
  a, b = jax.device_get(out["state"]), jax.device_get(resumed["state"])
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)
  last = lambda w: [r for r in _log(w) if r["step"] == 6 and "eval_q_loss" in r][-1]  # noqa
  assert last(os.path.join(root, "full")) == last(str(tmp_path))


def test_bad_ilql_inputs_stop_with_one_clear_error(config, tmp_path):
  c = config()
  c.ilql.tau = 1.5
  with pytest.raises(ConfigError, match=r"ilql.tau=1.5 must be in \(0, 1\)"):
    stages.run(c, str(tmp_path / "a"))
  c = config()
  c.data.source = str(tmp_path / "missing.jsonl")
  with pytest.raises(DataError, match="missing.jsonl' does not exist"):
    stages.run(c, str(tmp_path / "b"))
  c = config()
  c.model.lora_rank = 4
  with pytest.raises(ConfigError, match="model.lora_rank must be 0"):
    stages.run(c, str(tmp_path / "c"))
