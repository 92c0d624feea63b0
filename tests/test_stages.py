"""The LM stages end to end on the built-in task: resume equals uninterrupted (bitwise), a
checkpoint restores onto another mesh, SFT can start from a pretrain workdir, and the
command line fails cleanly on bad input."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rlhf_jax import checkpoint, parallel, stages
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.models import ModelConfig
from rlhf_jax.train_state import OptimConfig, create_state, state_shardings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sft_config(**train):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  import sft  # pylint: disable=g-import-not-at-top
  c = sft.get_config()
  c.model.hidden, c.model.mlp_dim, c.model.num_layers = 32, 64, 1
  c.data.builtin_train, c.data.builtin_eval = 64, 16
  c.train.batch_size = 8
  c.train.num_samples = 2
  c.train.sample_tokens = 4
  # 20 eval examples in batches of 8: the last eval batch is topped up with empty rows.
  c.data.builtin_eval = 20
  defaults = dict(steps=6, log_every=2, eval_every=3, checkpoint_every=100, eval_batches=0)
  for k, v in {**defaults, **train}.items():
    c.train[k] = v
  return c


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_resumed_run_equals_uninterrupted_bitwise(tmp_path):
  straight = stages.run(_sft_config(), str(tmp_path / "a"))
  # One compilation each for the whole run, the padded last eval batch included.
  assert {k: f._cache_size() for k, f in straight["compiled"].items()} == {"train": 1, "eval": 1}
  first = stages.run(_sft_config(stop_at=3), str(tmp_path / "b"))
  assert first["step"] == 3
  resumed = stages.run(_sft_config(), str(tmp_path / "b"))
  assert resumed["step"] == 6
  pa = jax.device_get(straight["state"].params)
  pb = jax.device_get(resumed["state"].params)
  jax.tree.map(np.testing.assert_array_equal, pa, pb)
  np.testing.assert_array_equal(jax.device_get(straight["state"].opt_state[1][0].mu["embed"]),
                                jax.device_get(resumed["state"].opt_state[1][0].mu["embed"]))
  assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
  assert os.listdir(tmp_path / "a" / "tb")  # TensorBoard event files beside metrics.jsonl
  # The eval after resuming sees the same numbers too.
  assert straight["history"][-1]["eval_loss"] == resumed["history"][-1]["eval_loss"]


def test_checkpoint_restores_onto_another_mesh(tmp_path):
  cfg = ModelConfig(vocab_size=64, hidden=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    mlp_dim=64, max_seq_len=16)
  tx = OptimConfig().make()
  rules = parallel.DEFAULT_RULES
  mesh_a = parallel.make_mesh({"fsdp": 8})
  state, _ = create_state(cfg, tx, mesh_a, rules, seed=3)
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(7, state, {"data": {"epoch": 0, "index": 5}})
  ckpt.wait()
  mesh_b = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  abstract, shardings, _ = state_shardings(cfg, tx, mesh_b, rules)
  restored, meta = ckpt.restore(abstract, shardings)
  assert meta["data"] == {"epoch": 0, "index": 5}
  q = restored.params["layers"]["attn"]["q_kernel"]
  assert q.sharding.mesh.shape == mesh_b.shape
  assert q.sharding.spec == shardings.params["layers"]["attn"]["q_kernel"].spec
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(restored))
  ckpt.close()


def test_sft_starts_from_a_pretrain_workdir(tmp_path):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  import pretrain  # pylint: disable=g-import-not-at-top
  p = pretrain.get_config()
  p.model.hidden, p.model.mlp_dim, p.model.num_layers = 32, 64, 1
  p.data.builtin_train, p.data.builtin_eval = 64, 16
  p.train.steps, p.train.batch_size, p.train.num_samples = 2, 8, 0
  p.train.eval_batches = 1
  pre = stages.run(p, str(tmp_path / "pre"))
  s = _sft_config(steps=1)
  s.init.from_workdir = str(tmp_path / "pre")
  s.optim.learning_rate = 1e-9
  out = stages.run(s, str(tmp_path / "sft"))
  a = jax.device_get(pre["state"].params["embed"])
  b = jax.device_get(out["state"].params["embed"])
  np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_inputs_raise_one_clear_error(tmp_path):
  c = _sft_config()
  c.data.source = str(tmp_path / "missing.jsonl")
  with pytest.raises(DataError, match="missing.jsonl"):
    stages.run(c, str(tmp_path / "w"))
  c = _sft_config()
  c.data.max_len = 4096
  with pytest.raises(ConfigError, match="max_len"):
    stages.run(c, str(tmp_path / "w2"))
  c = _sft_config()
  c.init.from_workdir = str(tmp_path / "nothing")
  with pytest.raises(DataError, match="model.json"):
    stages.run(c, str(tmp_path / "w3"))


def _main(*args, timeout=120):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  return subprocess.run([sys.executable, "-m", "rlhf_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_cli_rejects_a_misspelt_config_key():
  r = _main("--config=configs/sft.py", "--config.train.stepz=3")
  assert r.returncode != 0
  assert "stepz" in r.stderr
  assert "Traceback" not in r.stderr


def test_cli_names_a_missing_file_without_a_trace(tmp_path):
  r = _main("--config=configs/sft.py", f"--workdir={tmp_path}",
            f"--config.data.source={tmp_path}/nope.jsonl", "--config.data.tokenizer=builtin")
  assert r.returncode == 2, r.stderr[-2000:]
  assert "nope.jsonl" in r.stderr
  assert "Traceback" not in r.stderr
  r = _main("--config=configs/sft.py", f"--workdir={tmp_path}", "--config.mesh.data=3")
  assert r.returncode == 2 and "mesh" in r.stderr and "Traceback" not in r.stderr


def test_checkpoint_taken_mid_run_survives_the_steps_after_it(tmp_path):
  """The state is donated to the step after an (async) save; the saved copy must not change."""
  straight = stages.run(_sft_config(), str(tmp_path / "a"))
  stages.run(_sft_config(checkpoint_every=2, stop_at=5, keep_checkpoints=3), str(tmp_path / "b"))
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(tmp_path / "b" / "checkpoints" / "5")  # resume from step 4, saved mid-run
  resumed = stages.run(_sft_config(checkpoint_every=2), str(tmp_path / "b"))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight["state"].params),
               jax.device_get(resumed["state"].params))
