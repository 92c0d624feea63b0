"""The reward-model stage end to end on the built-in task: it starts from the SFT policy's trunk,
a resumed run equals an uninterrupted one bitwise, the saved normalisation makes the training
prompts' SFT samples mean 0 / std 1 through the frozen-scorer API PPO uses, one RM step is the
same on every mesh, and bad input stops with one clear line."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from rlhf_jax import parallel, stages
from rlhf_jax.data import comparisons as cmp
from rlhf_jax.errors import DataError
from rlhf_jax.models import ModelConfig
from rlhf_jax.reward import combine
from rlhf_jax.reward import model as rm_model
from rlhf_jax.train import model_init
from rlhf_jax.train.rm_steps import RMLossConfig, make_rm_steps
from rlhf_jax.train_state import OptimConfig, create_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import reward  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import sft  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def _tiny_model(c):
  c.model.hidden, c.model.mlp_dim, c.model.num_layers = 32, 64, 1
  c.model.tie_embeddings = False  # so the RM has an LM head to drop


@pytest.fixture(scope="module")
def sft_workdir(tmp_path_factory):
  c = sft.get_config()
  _tiny_model(c)
  c.data.builtin_train, c.data.builtin_eval = 64, 8
  c.train.update(steps=4, batch_size=8, log_every=2, eval_every=100, checkpoint_every=100,
                 num_samples=0)
  path = str(tmp_path_factory.mktemp("sft"))
  stages.run(c, path)
  return path


def _rm_config(sft_dir, **train):
  c = reward.get_config()
  c.init.from_workdir = sft_dir
  c.data.builtin_train, c.data.builtin_eval = 24, 10
  c.data.num_responses = 3
  c.data.max_len = 40
  defaults = dict(steps=6, batch_size=8, log_every=2, eval_every=3, checkpoint_every=100)
  c.train.update({**defaults, **train})
  return c


def _log(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_resumed_reward_run_equals_uninterrupted_bitwise(sft_workdir, tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  straight = stages.run(_rm_config(sft_workdir), a)
  assert {k: f._cache_size() for k, f in straight["compiled"].items()} == {"train": 1, "eval": 1}
  first = stages.run(_rm_config(sft_workdir, stop_at=3), b)
  assert first["step"] == 3 and first["report"] is None  # no normalisation before the end
  assert not os.path.exists(os.path.join(b, rm_model.NORM_FILE))
  resumed = stages.run(_rm_config(sft_workdir), b)
  assert resumed["step"] == 6
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight["state"].params),
               jax.device_get(resumed["state"].params))
  strip = lambda rows: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "model_tflops")}  # noqa
                        for r in rows]
  assert strip(_log(a)) == strip(_log(b))
  for name in ("comparisons_train.jsonl", "comparisons_eval.jsonl"):
    with open(os.path.join(a, name)) as fa, open(os.path.join(b, name)) as fb:
      assert fa.read() == fb.read()  # sampling and labelling are seeded
  rep = straight["report"]
  assert 0 <= rep["accuracy"] <= 1 and 0 <= rep["gold_agreement"] <= 1
  assert 0.5 < rep["labeler_ceiling"] < 1
  assert rep["longer_wins"] + rep["shorter_wins"] == pytest.approx(1.0)


def test_reward_model_starts_from_the_sft_trunk(sft_workdir):
  c = _rm_config(sft_workdir)
  cfg_lm, lm = model_init.load_workdir_params(sft_workdir, c, heads="lm")
  cfg_rm, rm = model_init.load_workdir_params(sft_workdir, c, heads="score")
  assert cfg_lm == cfg_rm
  assert not cfg_lm.tie_embeddings
  assert "lm_head" in lm and "lm_head" not in rm
  assert "score_kernel" in rm and "score_kernel" not in lm
  for k in ("embed", "layers", "final_norm"):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(lm[k]), jax.device_get(rm[k]))


def test_normalised_scorer_matches_the_stage(sft_workdir, tmp_path):
  wd = str(tmp_path / "rm")
  c = _rm_config(sft_workdir)
  out = stages.run(c, wd)
  rm = rm_model.load_reward_model(wd, c)
  assert rm.name == "rm" and rm.model_cfg.hidden == 32
  def rows_of(name):
    comps, _ = cmp.comparisons_from_records(
        ((f"x:{i}", i, json.loads(line)) for i, line in
         enumerate(open(os.path.join(wd, name)))),
        None, cmp.ComparisonConfig(source="x", format="ranked", max_len=40))
    return [r for comp in comps for r in comp.rows]

  train_rows, rows = rows_of("comparisons_train.jsonl"), rows_of("comparisons_eval.jsonl")
  score = jax.jit(lambda p, t, m: rm_model.normalized_rewards(rm, p, t, m))
  # The normalisation was fitted on the training prompts' SFT samples (never on the held-out
  # ones): mean 0, std 1 there.
  width = max(len(r) for r in train_rows)
  t_tokens = np.zeros((len(train_rows), width), np.int32)
  t_mask = np.zeros((len(train_rows), width), bool)
  for i, r in enumerate(train_rows):
    t_tokens[i, :len(r)], t_mask[i, :len(r)] = r, True
  zt = np.asarray(score(rm.params, t_tokens, t_mask))
  np.testing.assert_allclose([zt.mean(), zt.std()], [0.0, 1.0], atol=1e-4)
  width = max(len(r) for r in rows)
  tokens = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, r in enumerate(rows):
    tokens[i, :len(r)], mask[i, :len(r)] = r, True
  z = np.asarray(score(rm.params, tokens, mask))
  # And the scorer agrees with the stage's own eval rewards (batched with other rows).
  norm = rm_model.read_normalization(wd)
  raw = (z - norm["bias"]) / norm["gain"]
  assert out["report"]["reward_mean"] == pytest.approx(float(raw.mean()), abs=1e-4)

  # Two reward models by name (here the same workdir twice), combined by the configured rule.
  section = ml_collections.ConfigDict(combine.rewards_section())
  section.models = f"helpful={wd},safety={wd}"
  section.weights = "helpful=1.0,safety=0.25"
  models, rule = rm_model.load_reward_models(section, c)
  total, each = jax.jit(lambda ps, t, m: rm_model.combined_rewards(models, rule, ps, t, m))(
      [m.params for m in models], tokens, mask)
  np.testing.assert_allclose(np.asarray(each["helpful"]), z, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(total), 1.25 * z, rtol=1e-5, atol=1e-5)


def test_rm_step_is_the_same_on_every_mesh():
  cfg = ModelConfig(vocab_size=64, hidden=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    mlp_dim=64, max_seq_len=16, tie_embeddings=False)
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(0, 64, (8, 3, 12)).astype(np.int32),
           "attention_mask": np.ones((8, 3, 12), bool),
           "ranks": rng.integers(-1, 3, (8, 3)).astype(np.int32),
           "margin": np.zeros((8,), np.float32)}
  batch["attention_mask"][:, 1, 7:] = False
  results = {}
  for name, shape in {"single": {"data": 1}, "d2f2t2": {"data": 2, "fsdp": 2, "tensor": 2},
                      "fsdp8": {"fsdp": 8}}.items():
    n = int(np.prod(list(shape.values())))
    mesh = parallel.make_mesh(shape, jax.devices()[:n])
    rules = parallel.DEFAULT_RULES
    tx = OptimConfig(learning_rate=1e-2, warmup_steps=0, eps=1e-4).make()  # see test_sharding
    state, sh = create_state(cfg, tx, mesh, rules, seed=0, heads="score")
    step, _ = make_rm_steps(cfg, tx, mesh, rules, sh, RMLossConfig())
    state, m = step(state, parallel.put_batch(batch, mesh, rules))
    results[name] = (float(m["loss"]), jax.device_get(state.params))
  loss0, p0 = results["single"]
  assert "lm_head" not in p0
  for name in ("d2f2t2", "fsdp8"):
    loss, p = results[name]
    worst = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), p, p0)))
    print(f"RM MESH {name}: |loss diff| {abs(loss - loss0):.2e}, max |param diff| {worst:.2e}")
    assert abs(loss - loss0) <= 1e-5 and worst <= 1e-5


def test_missing_sft_policy_is_one_clear_error(tmp_path):
  c = _rm_config(str(tmp_path / "no_sft_here"))
  with pytest.raises(DataError, match="no_sft_here"):
    stages.run(c, str(tmp_path / "rm"))
  proc = subprocess.run(
      [sys.executable, "-m", "rlhf_jax.main", "--config=configs/reward.py",
       f"--workdir={tmp_path / 'rm2'}", f"--config.init.from_workdir={tmp_path / 'nope'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "nope" in proc.stderr and "Traceback" not in proc.stderr
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_from_scratch_on_hh_files_with_a_trained_tokenizer(tmp_path):
  """The hh_scratch preset's path on a small hh-format file: the BPE tokenizer is trained on the
  training split only, saved in the workdir, recorded in model.json and reused on resume."""
  rng = np.random.default_rng(0)
  words = "cat dog tree sun rain book song road ship lamp".split()
  src = tmp_path / "data" / "toy" / "train.jsonl"
  src.parent.mkdir(parents=True)
  with open(src, "w") as f:
    for i in range(80):
      q = " ".join(rng.choice(words, 4))
      good, bad = " ".join(rng.choice(words, 6)), "no"
      f.write(json.dumps({"chosen": f"\n\nHuman: {q} {i}?\n\nAssistant: {good}",
                          "rejected": f"\n\nHuman: {q} {i}?\n\nAssistant: {bad}"}) + "\n")
  c = reward.get_config("hh_scratch")
  c.data.source = str(src.parent.parent)
  c.data.tokenizer = "bpe:320"
  c.data.valid_fraction = 0.25  # periodic evals on a validation slice, held-out once at the end
  c.model.vocab_size = 320
  c.data.max_len = c.model.max_seq_len = 48
  _tiny_model(c)
  c.train.update(steps=4, stop_at=2, batch_size=8, log_every=2, eval_every=2)
  wd = str(tmp_path / "rm")
  stages.run(c, wd)
  tok_dir = os.path.join(wd, "tokenizer")
  assert os.path.exists(os.path.join(tok_dir, "tokenizer.json"))
  with open(os.path.join(wd, "model.json")) as f:
    assert json.load(f)["tokenizer"] == os.path.abspath(tok_dir)
  stamp = os.path.getmtime(os.path.join(tok_dir, "tokenizer.json"))
  c.train.stop_at = 0
  out = stages.run(c, wd)
  assert out["step"] == 4 and os.path.getmtime(os.path.join(tok_dir, "tokenizer.json")) == stamp
  assert set(out["report"]) >= {"accuracy", "longer_wins", "shorter_wins"}
  assert "gold_agreement" not in out["report"]  # no gold outside the built-in task
  logged = set().union(*(r.keys() for r in _log(wd)))
  assert "valid_accuracy" in logged and "eval_accuracy" not in logged
  with open(os.path.join(wd, "eval_report.json")) as f:
    assert json.load(f)["pairs"] == out["report"]["pairs"] > 0
