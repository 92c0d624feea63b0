"""What long runs meet, injected on purpose: SIGTERM at a random step of SFT and of PPO (and during
an async checkpoint save), a NaN at a step, a second run on the same workdir, a changed config on
resume, a resume that would repeat metric rows. Each rerun must equal the uninterrupted run
bitwise; a NaN must leave the last good checkpoint as it was.

In-process runs deliver real signals to this process (`os.kill(os.getpid(), SIGTERM)`) from
inside a wrapped step, so the handlers, the checkpoint and the exception are the real ones; one
test does the same to a real `python -m rlhf_jax.main` process from outside.
"""

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from rlhf_jax import checkpoint, config_base, smoke, stages
from rlhf_jax.errors import ConfigError, NonFiniteError, Preempted, WorkdirBusy
from rlhf_jax.train import dpo_stage, lm_stage, pipeline, rl_eval, rl_setup, rm_stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import ppo as ppo_config  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import sft as sft_config  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

STEPS = 8
SFT_FLAGS = ["--config=configs/sft.py", "--config.model.hidden=32", "--config.model.mlp_dim=64",
             "--config.model.num_layers=1", "--config.data.builtin_train=64",
             "--config.data.builtin_eval=16", "--config.train.batch_size=8",
             f"--config.train.steps={STEPS}", "--config.train.log_every=1",
             "--config.train.eval_every=4", "--config.train.checkpoint_every=3",
             "--config.train.num_samples=0", "--config.train.eval_batches=1"]


def _sft(**train):
  """The SFT run of SFT_FLAGS as a ConfigDict, with `train` overrides."""
  c = sft_config.get_config()
  for flag in SFT_FLAGS[1:]:
    key, value = flag[len("--config."):].split("=")
    config_base.apply_overrides(c, {key: _typed(c, key, value)})
  for k, v in train.items():
    c.train[k] = v
  return c


def _typed(c, key, value: str):
  node = c
  for p in key.split(".")[:-1]:
    node = node[p]
  current = node[key.split(".")[-1]]
  return type(current)(value) if current is not None else int(value)


def _rows(workdir, stage="sft"):
  """metrics.jsonl rows of `stage` without wall-clock figures."""
  clock = ("tokens_per_s", "model_tflops", "mfu", "time_generate", "time_score", "time_update")
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k not in clock} for r in rows if r["stage"] == stage]


def _params(out):
  return jax.device_get(out["state"].params)


def _assert_same_run(a_dir, a_out, b_dir, b_out, stage="sft"):
  jax.tree.map(np.testing.assert_array_equal, _params(a_out), _params(b_out))
  assert _rows(a_dir, stage) == _rows(b_dir, stage)


class _SignalAt:
  """Wraps a step function: sends `sig` to this process while call number `at` runs."""

  def __init__(self, fn, at: int, sig=signal.SIGTERM):
    self.fn, self.at, self.sig, self.calls = fn, at, sig, 0
    self.jitted = getattr(fn, "jitted", None)

  def __call__(self, *args):
    self.calls += 1
    out = self.fn(*args)
    if self.calls == self.at:
      os.kill(os.getpid(), self.sig)
    return out


@pytest.fixture(scope="module")
def sft_straight(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft_straight"))
  return workdir, stages.run(_sft(), workdir)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sft_signal_at_a_random_step_then_rerun_equals_uninterrupted(sft_straight, tmp_path,
                                                                     monkeypatch, sig):
  at = random.Random(f"sft{sig}").randrange(1, STEPS)  # a step that is not the last
  real = lm_stage.make_lm_steps

  def make(*a, **k):
    train, ev = real(*a, **k)
    return _SignalAt(train, at, sig), ev

  monkeypatch.setattr(lm_stage, "make_lm_steps", make)
  workdir = str(tmp_path / "w")
  with pytest.raises(Preempted) as info:
    stages.run(_sft(), workdir)
  assert info.value.step == at  # the step in flight finished, no later one ran
  assert checkpoint.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step() == at
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored after the loop
  monkeypatch.setattr(lm_stage, "make_lm_steps", real)
  resumed = stages.run(_sft(), workdir)
  _assert_same_run(sft_straight[0], sft_straight[1], workdir, resumed)


def test_sigterm_during_an_async_save_completes_it(sft_straight, tmp_path, monkeypatch):
  real_save = checkpoint.Checkpointer.save

  def save_then_signal(self, step, *a, **k):
    real_save(self, step, *a, **k)
    if step == 3:  # the save is in flight (async) when the signal lands
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", save_then_signal)
  workdir = str(tmp_path / "w")
  with pytest.raises(Preempted) as info:
    stages.run(_sft(), workdir)
  assert info.value.step == 3
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert pipeline.latest_step(workdir) == 3
  assert not [n for n in os.listdir(ckpt_dir) if "tmp" in n]  # nothing half-written
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
  resumed = stages.run(_sft(), workdir)
  _assert_same_run(sft_straight[0], sft_straight[1], workdir, resumed)


def _nan_at(step: int):
  """An optax transformation that turns the update of optimizer step `step` (1-based) into NaN:
  a real NaN through the real compiled step."""
  def init(params):
    del params
    return {"count": np.zeros((), np.int32)}

  def update(updates, state, params=None):
    del params
    count = state["count"] + 1
    poison = jax.numpy.where(count == step, jax.numpy.nan, 1.0)
    return jax.tree.map(lambda u: u * poison, updates), {"count": count}
  return optax.GradientTransformation(init, update)


class _OutOfVocabAt:
  """Wraps an LM train step: on the calls in `at`, one token of the batch is an id past the
  vocabulary, whose embedding lookup gives NaN (jnp.take fills out-of-range rows with NaN): a
  real NaN through the real compiled step, as a tokenizer/model mismatch would make one."""

  def __init__(self, fn, at):
    self.fn, self.at, self.calls = fn, at, 0
    self.jitted = fn.jitted

  def __call__(self, state, batch):
    self.calls += 1
    if self.calls in self.at:
      vocab = state.params["embed"].shape[0]
      batch = dict(batch, tokens=batch["tokens"].at[0, 1].set(vocab))
    return self.fn(state, batch)


def _poison_steps(monkeypatch, at):
  real = lm_stage.make_lm_steps

  def make(*a, **k):
    train, ev = real(*a, **k)
    return _OutOfVocabAt(train, at), ev
  monkeypatch.setattr(lm_stage, "make_lm_steps", make)


def test_nan_at_a_step_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  _poison_steps(monkeypatch, {5})
  workdir = str(tmp_path / "w")
  with pytest.raises(NonFiniteError, match=r"step 5: .*loss=nan.*the last good checkpoint is "
                                           r"step 3 in "):
    stages.run(_sft(), workdir)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_step() == 3  # nothing was written after the NaN
  assert ckpt.read_meta()["step"] == 3
  ckpt.close()
  assert max(r["step"] for r in _rows(workdir)) == 4  # step 5's row was never logged


def test_nan_in_the_update_alone_is_caught_too(tmp_path, monkeypatch):
  # Finite loss and gradients, but the update makes the weights NaN (an optimizer blow-up).
  real = lm_stage.make_optimizer
  monkeypatch.setattr(lm_stage, "make_optimizer",
                      lambda *a, **k: optax.chain(real(*a, **k), _nan_at(2)))
  with pytest.raises(NonFiniteError, match=r"step 2: .*\(in the update\).*no checkpoint was "
                                           r"written yet"):
    stages.run(_sft(), str(tmp_path / "w"))


def test_nan_skip_mode_skips_and_stops_after_too_many_in_a_row(sft_straight, tmp_path,
                                                              monkeypatch):
  _poison_steps(monkeypatch, {5})
  out = stages.run(_sft(on_nonfinite="skip"), str(tmp_path / "skip"))
  assert out["step"] == STEPS
  rows = [r for r in _rows(str(tmp_path / "skip")) if "loss" in r]
  assert [r["step"] for r in rows if r["nonfinite"]] == [5]
  # Up to step 4 the run is the straight one; step 5's update was not applied.
  straight = [r for r in _rows(sft_straight[0]) if "loss" in r]
  assert rows[:4] == straight[:4] and rows[5] != straight[5]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(out["state"].params)))

  _poison_steps(monkeypatch, set(range(2, STEPS + 1)))
  with pytest.raises(NonFiniteError, match="step 3: .*2 steps in a row"):
    stages.run(_sft(on_nonfinite="skip", max_nonfinite_skips=2), str(tmp_path / "stop"))


def test_checkpoint_of_nonfinite_params_is_never_written(tmp_path):
  c = _sft()
  out = stages.run(c, str(tmp_path / "w"))
  ckpt = checkpoint.Checkpointer(str(tmp_path / "ckpt"), keep=1)
  ckpt.save(1, out["state"], {"step": 1}, force=True)
  bad = out["state"].replace(params=jax.tree.map(lambda x: x * np.nan, out["state"].params))
  with pytest.raises(NonFiniteError, match="step 2: the parameters hold NaN"):
    ckpt.save(2, bad, {"step": 2}, force=True)
  ckpt.wait()
  assert ckpt.latest_step() == 1  # rotation (keep=1) never dropped the finite one
  ckpt.close()


def test_second_run_on_a_workdir_refuses_and_the_first_equals_a_lone_run(sft_straight,
                                                                         tmp_path):
  workdir = str(tmp_path / "w")
  first = subprocess.Popen([sys.executable, "-m", "rlhf_jax.main", *SFT_FLAGS,
                            f"--workdir={workdir}"], cwd=REPO, env=_env(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  line = first.stdout.readline()  # the first line is printed with the lock held
  assert line, first.communicate()
  with pytest.raises(WorkdirBusy, match=rf"in use by pid {first.pid} on host"):
    stages.run(_sft(), workdir)
  rest = first.communicate(timeout=300)[0]
  assert first.returncode == 0, line + rest
  assert _rows(workdir) == _rows(sft_straight[0])


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid,
                                             "started": "then", "command": "crashed"}))
  stages.run(_sft(steps=1), str(workdir))
  assert f"took over the lock of pid {dead.pid}" in capsys.readouterr().out


def test_resume_with_a_changed_config_names_the_keys(tmp_path, capsys):
  workdir = str(tmp_path / "w")
  stages.run(_sft(stop_at=3), workdir)
  changed = _sft()
  changed.model.hidden = 64
  changed.optim.learning_rate = 1e-4
  with pytest.raises(ConfigError, match=r"model.hidden: 32 -> 64; optim.learning_rate"):
    stages.run(changed, workdir)
  harmless = _sft(log_every=2, eval_every=2, steps=STEPS + 2)  # cadence, and more steps
  out = stages.run(harmless, workdir)
  assert out["step"] == STEPS + 2
  assert "train.steps: 8 -> 10" in capsys.readouterr().out
  shorter = _sft(steps=STEPS)
  with pytest.raises(ConfigError, match="train.steps: 10 -> 8"):
    stages.run(shorter, workdir)


def test_reused_builtin_comparisons_are_checked_against_their_settings(ppo_straight, tmp_path):
  root = ppo_straight[0]  # its pipeline made the reward model's comparison files
  rm = _ppo(root).pipeline.reward
  rm.data.num_responses = 3  # the files were made with 2
  rm.workdir = str(tmp_path / "rm2")
  os.makedirs(rm.workdir)
  for split in ("train", "eval"):
    for suffix in (".jsonl", ".settings.json"):
      name = f"comparisons_{split}{suffix}"
      os.link(os.path.join(root, "reward", name), os.path.join(rm.workdir, name))
  with pytest.raises(ConfigError, match=r"comparisons_train.jsonl was made with .*"
                                        r"num_responses: 2 -> 3"):
    stages.run(rm, rm.workdir)


def _tb_scalars(tb_dir):
  """{(tag, step): [values]} as TensorBoard shows them: events read in order, a SessionLog
  START at step s purging what came before at steps >= s (tensorboardX's purge_step)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  seen = {}
  for name in sorted(os.listdir(tb_dir), key=lambda n: os.path.getmtime(os.path.join(tb_dir, n))):
    with open(os.path.join(tb_dir, name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
        seen = {k: v for k, v in seen.items() if k[1] < ev.step}
      for v in ev.summary.value:
        seen.setdefault((v.tag, ev.step), []).append(v.simple_value)
  return seen


def test_metrics_after_resume_do_not_repeat_steps(sft_straight, tmp_path, monkeypatch):
  # A run killed hard after step 5: its last checkpoint is step 3, its logs reach step 5.
  real_save = checkpoint.Checkpointer.save
  monkeypatch.setattr(checkpoint.Checkpointer, "save",
                      lambda self, step, *a, **k: None if step == 5 else real_save(
                          self, step, *a, **k))
  workdir = str(tmp_path / "w")
  stages.run(_sft(stop_at=5), workdir)
  assert max(r["step"] for r in _rows(workdir)) == 5
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
  resumed = stages.run(_sft(), workdir)  # resumes at 3: steps 4 and 5 run again
  _assert_same_run(sft_straight[0], sft_straight[1], workdir, resumed)
  tb = _tb_scalars(os.path.join(workdir, "tb"))
  assert all(len(v) == 1 for v in tb.values()), [k for k, v in tb.items() if len(v) > 1]
  straight = _tb_scalars(os.path.join(sft_straight[0], "tb"))
  clock = ("tokens_per_s", "model_tflops", "mfu")
  assert ({k: v for k, v in tb.items() if not k[0].endswith(clock)} ==
          {k: v for k, v in straight.items() if not k[0].endswith(clock)})


# ---- PPO --------------------------------------------------------------------------------------
def _ppo(root):
  c = ppo_config.get_config()
  config_base.apply_overrides(c, {**smoke.PIPELINE, **smoke.workdirs(root), "rl.iterations": 5,
                                  "train.log_every": 1, "train.eval_every": 2,
                                  "train.checkpoint_every": 2})
  return c


@pytest.fixture(scope="module")
def ppo_straight(smoke_upstream, tmp_path_factory):
  """(the session's finished upstream, read only; an uninterrupted 5-iteration PPO workdir; its
  result)."""
  workdir = str(tmp_path_factory.mktemp("ppo"))
  return smoke_upstream, workdir, stages.run(_ppo(smoke_upstream), workdir)


@pytest.mark.slow  # 25 s; the default suite keeps test_main_sigterm_exits_75_and_the_rerun_equals_uninterrupted
# and test_rl_stage.py::test_resumed_ppo_run_equals_uninterrupted_bitwise (the suite under 30 min)
def test_ppo_sigterm_at_a_random_iteration_then_rerun_equals_uninterrupted(
    ppo_straight, tmp_path, monkeypatch):
  root, straight_dir, straight = ppo_straight
  at = random.Random("ppo").randrange(1, 5)
  real = rl_setup.compile_rl

  def compile_with_signal(**kw):
    fns = real(**kw)
    return dataclasses.replace(fns, update=_SignalAt(fns.update, at))

  monkeypatch.setattr(rl_setup, "compile_rl", compile_with_signal)
  workdir = str(tmp_path / "ppo")
  with pytest.raises(Preempted) as info:
    stages.run(_ppo(root), workdir)
  assert info.value.step == at
  monkeypatch.setattr(rl_setup, "compile_rl", real)
  resumed = stages.run(_ppo(root), workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight["state"]),
               jax.device_get(resumed["state"]))
  assert _rows(straight_dir, "ppo") == _rows(workdir, "ppo")
  assert resumed["summary"]["final"] == straight["summary"]["final"]


class _NaNRolloutAt:
  """Wraps the scoring program: on call `at` the rollout's advantages and KL are NaN (as a reward
  model that overflows would make them), a real NaN into the real update and KL controller."""

  def __init__(self, fn, at: int):
    self.fn, self.at, self.calls = fn, at, 0

  def __call__(self, *args):
    self.calls += 1
    ro = self.fn(*args)
    if self.calls == self.at:
      ro = dict(ro, advantages=ro["advantages"] * np.nan, kl_seq=ro["kl_seq"] * np.nan)
    return ro


def _poison_rollout(monkeypatch, at):
  real = rl_setup.compile_rl

  def compile_poisoned(**kw):
    fns = real(**kw)
    return dataclasses.replace(fns, score=_NaNRolloutAt(fns.score, at))
  monkeypatch.setattr(rl_setup, "compile_rl", compile_poisoned)


def test_ppo_nan_stops_or_skips_and_beta_is_never_nan(ppo_straight, tmp_path, monkeypatch):
  root = ppo_straight[0]
  # Call 2 scores iteration 2's rollout (held-out evaluations have their own program).
  _poison_rollout(monkeypatch, 2)
  with pytest.raises(NonFiniteError, match=r"\[ppo\] step 2: .*loss=nan.*no checkpoint was "
                                           r"written yet"):
    stages.run(_ppo(root), str(tmp_path / "stop"))
  assert pipeline.latest_step(str(tmp_path / "stop")) is None  # iteration 2's was due
  _poison_rollout(monkeypatch, 2)
  c = _ppo(root)
  c.train.on_nonfinite = "skip"
  out = stages.run(c, str(tmp_path / "skip"))
  rows = [r for r in _rows(str(tmp_path / "skip"), "ppo") if "beta" in r]
  assert [r["nonfinite"] for r in rows] == [0, 1, 0, 0, 0]
  assert np.isfinite([r["beta"] for r in rows]).all()
  assert rows[2]["beta"] == rows[1]["beta"]  # the skipped iteration left β where it was
  assert np.isfinite(float(out["state"].kl_coef))
  assert np.isfinite(list(out["summary"]["final"].values())).all()


def _upstream_stage(root, name):
  """A 6-step run of stage `name` over the finished tiny pipeline in `root`."""
  if name == "dpo":
    c = config_base.from_file(os.path.join(REPO, "configs", "dpo.py"))
    config_base.apply_overrides(c, {k: v for k, v in {**smoke.PIPELINE,
                                                      **smoke.workdirs(root)}.items()
                                    if k.startswith("pipeline.")})
    c.pipeline.run_upstream = False
    c.eval_policy.prompts = 0
  else:
    c = _ppo(root).pipeline[name]
  c.train.update(steps=6, batch_size=8, log_every=1, eval_every=100, checkpoint_every=2)
  return c


@pytest.mark.parametrize("name,module", [("pretrain", lm_stage), ("reward", rm_stage),
                                         ("dpo", dpo_stage)])
def test_every_supervised_loop_stops_at_a_nan(ppo_straight, tmp_path, monkeypatch, name,
                                              module):
  real = module.make_optimizer
  monkeypatch.setattr(module, "make_optimizer",
                      lambda *a, **k: optax.chain(real(*a, **k), _nan_at(3)))
  workdir = str(tmp_path / name)
  with pytest.raises(NonFiniteError, match=rf"\[{name}\] step 3: .*the last good checkpoint is "
                                           "step 2"):
    stages.run(_upstream_stage(ppo_straight[0], name), workdir)
  assert pipeline.latest_step(workdir) == 2


def _env():
  env = {k: v for k, v in os.environ.items() if not k.startswith("RLHF_JAX_")}
  # The same 8 devices as this process's runs: the same programs, so bitwise the same numbers.
  env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
             PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""))
  return env


def test_main_sigterm_exits_75_and_the_rerun_equals_uninterrupted(sft_straight, tmp_path):
  workdir = str(tmp_path / "w")
  cmd = [sys.executable, "-m", "rlhf_jax.main", *SFT_FLAGS, f"--workdir={workdir}"]
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  at = random.Random("main").randrange(2, STEPS - 1)
  out = []
  for line in proc.stdout:
    out.append(line)
    if line.startswith(f"[sft] step {at}:"):
      proc.send_signal(signal.SIGTERM)
      break
  rest, err = proc.communicate(timeout=300)
  assert proc.returncode == 75, "".join(out) + rest + err
  stopped = pipeline.latest_step(workdir)
  assert at <= stopped < STEPS
  assert err.strip().splitlines() == [
      f"[sft] SIGTERM: stopped at step {stopped} with a checkpoint in {workdir}/checkpoints; "
      "run the same command again to resume"]
  done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert _rows(workdir) == _rows(sft_straight[0])


def test_no_gain_is_reported_from_a_nonfinite_evaluation(tmp_path):
  sft_path = tmp_path / "eval_sft.json"
  sft_path.write_text(json.dumps({"eval_gold": 1.0, "eval_gold_std": 0.5, "eval_kl": 0.0}))
  final = {"eval_gold": float("nan"), "eval_gold_std": 0.5, "eval_kl": 3.0}
  cfg = type("Cfg", (), {"temperature": 1.0, "rollout_batch": 16, "adaptive_kl": False})()

  class Quiet:
    def text(self, line):
      raise AssertionError(f"printed a table line: {line}")

  with pytest.raises(NonFiniteError, match=r"NaN/Inf \(eval_gold\): no SFT-vs-RL table"):
    rl_eval.final_report("ppo", str(tmp_path), str(sft_path), final, 5, cfg, Quiet())
  assert not (tmp_path / "summary.json").exists()
