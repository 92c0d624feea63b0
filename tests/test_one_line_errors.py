"""Bad input and a hostile disk end in one line naming the problem, never a traceback: non-UTF-8
data (file and line), a missing --config file, a zero checkpoint cadence, a truncated safetensors
file, an unwritable workdir, a full disk (the path), and a resume onto a checkpoint of another
shape (with nothing from Orbax's background threads after the message)."""

import os
import subprocess
import sys

import jax
import pytest

from rlhf_jax import stages
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.models import ModelConfig, hf, init_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import sft as sft_config  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

TINY = ["--config=configs/sft.py", "--config.model.hidden=32", "--config.model.mlp_dim=64",
        "--config.model.num_layers=1", "--config.data.builtin_train=32",
        "--config.data.builtin_eval=8", "--config.train.batch_size=8",
        "--config.train.steps=2", "--config.train.num_samples=0",
        "--config.train.eval_batches=1"]


def _main(*args):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "rlhf_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def _one_line(res, rc=2) -> str:
  lines = res.stderr.strip().splitlines()
  assert res.returncode == rc and len(lines) == 1, (res.returncode, res.stderr[-3000:])
  assert lines[0].startswith("error: ")
  return lines[0]


def _sft(**kw):
  c = sft_config.get_config()
  c.model.hidden, c.model.mlp_dim, c.model.num_layers = 32, 64, 1
  c.data.builtin_train, c.data.builtin_eval = 32, 8
  c.train.batch_size, c.train.steps, c.train.num_samples = 8, 2, 0
  for k, v in kw.items():
    section, key = k.split("__")
    c[section][key] = v
  return c


def test_non_utf8_data_names_the_file_and_line(tmp_path):
  path = tmp_path / "demos.jsonl"
  path.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n'
                   b'{"prompt": "caf\xe9", "response": "e"}\n')
  c = _sft(data__source=str(path), data__tokenizer="builtin")
  with pytest.raises(DataError, match=rf"{path}:3: not UTF-8 text \(byte 0xe9 at column 16\)"):
    stages.run(c, str(tmp_path / "w"))


def test_zero_cadence_is_a_config_error(tmp_path):
  for key in ("checkpoint_every", "eval_every", "log_every"):
    with pytest.raises(ConfigError, match=rf"train.{key}=0 must be >= 1"):
      stages.run(_sft(**{f"train__{key}": 0}), str(tmp_path / key))


def test_truncated_safetensors_names_the_file(tmp_path):
  cfg = ModelConfig(vocab_size=64, hidden=32, num_layers=1, num_heads=4, num_kv_heads=2,
                    mlp_dim=64, max_seq_len=16)
  params = init_params(cfg, jax.random.PRNGKey(0))
  hf.save_checkpoint(str(tmp_path), cfg, params)
  weights = tmp_path / "model.safetensors"
  data = weights.read_bytes()
  weights.write_bytes(data[:len(data) // 2])  # a download cut short
  with pytest.raises(DataError, match=rf"{weights}.* cannot be read: .*truncated or corrupt"):
    hf.load_checkpoint(str(tmp_path))
  weights.write_bytes(data[:5])  # not even a header
  with pytest.raises(DataError, match=rf"{weights} cannot be read"):
    hf.load_checkpoint(str(tmp_path))


def test_unwritable_workdir_names_it(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(DataError, match=rf"cannot create workdir {blocker}/w: Not a directory"):
    stages.run(_sft(), str(blocker / "w"))


def test_main_one_line_errors(tmp_path):
  line = _one_line(_main("--config=configs/no_such_stage.py"))
  assert "No such file or directory: 'configs/no_such_stage.py'" in line
  # A full disk: the metrics file sits on /dev/full, where every write fails with ENOSPC.
  full = tmp_path / "full"
  full.mkdir()
  os.symlink("/dev/full", full / "metrics.jsonl")
  line = _one_line(_main(*TINY, f"--workdir={full}"))
  assert line == f"error: cannot write {full}/metrics.jsonl: no space left on the device"
  # A resume onto checkpoints of another shape, the config check overridden on purpose.
  w = str(tmp_path / "w")
  assert _main(*TINY, f"--workdir={w}").returncode == 0
  line = _one_line(_main(*TINY, "--config.model.hidden=64", f"--workdir={w}",
                         "--allow_config_change"))
  assert "does not match this run's model or optimizer" in line
  assert "params['embed']: saved (512, 32), this run (512, 64)" in line
  # Without the override the changed key is named before anything is restored.
  line = _one_line(_main(*TINY, "--config.model.hidden=64", f"--workdir={w}"))
  assert "model.hidden: 32 -> 64" in line
