"""The training loop every supervised stage shares (pretrain, SFT, reward model).

`train_loop` steps a jitted `train_step(state, batch) -> (state, metrics)` from a resumable batch
iterator, logs every `train.log_every` steps (loss, tokens/s, model FLOPs utilisation, ETA),
evaluates every `train.eval_every` steps, checkpoints every `train.checkpoint_every` steps and at
the end (with the iterator's position, so a resumed run reads the batches an uninterrupted one
would), and stops early at `train.stop_at` as a pre-empted run would.
The helpers before it are the set-up every such stage repeats: the optimizer from
`config.optim`, the state restored from the workdir's checkpoint (with the batch iterator's
position) or created fresh, and the one-line description of model and mesh.
Not for: the steps or the data (each stage builds its own).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import numpy as np

from rlhf_jax import checkpoint, metrics, nonfinite, parallel, preemption
from rlhf_jax.errors import ConfigError, Preempted
from rlhf_jax.models import lora
from rlhf_jax.train_state import OptimConfig, create_state, state_shardings


def stage_setup(config, workdir: str, prefix: str):
  """(mesh, rules, writer, ckpt, latest): what a training stage opens first. The mesh and its
  rules (the global batch checked against them), the metric writer, the workdir's
  checkpointer and its newest step (None for a fresh run)."""
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  parallel.check_batch_size(config.train.batch_size, mesh, rules)
  check_train_section(config.train)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                 keep=config.train.keep_checkpoints)
  latest = ckpt.latest_step()
  writer = metrics.MetricWriter(workdir, prefix=prefix, resume_step=latest)
  return mesh, rules, writer, ckpt, latest


def check_train_section(tc) -> None:
  """ConfigError for cadences a loop divides by, and the non-finite policy."""
  for name in ("log_every", "eval_every", "checkpoint_every"):
    if tc[name] < 1:
      raise ConfigError(f"train.{name}={tc[name]} must be >= 1 (a cadence in steps; the last "
                        "step is always logged, evaluated and checkpointed)")
  nonfinite.check_config(tc)


def make_optimizer(section, total_steps: int, model_cfg=None):
  """The optax transformation of an optim config section; unless the section sets
  `total_steps`, the schedule spans `total_steps` optimizer steps. A model with LoRA adapters
  (`model_cfg.lora_rank > 0`) trains its adapters and score head only."""
  opt_d = dict(section)
  opt_d["total_steps"] = opt_d.get("total_steps") or total_steps
  lora_on = model_cfg is not None and model_cfg.lora_rank > 0
  return OptimConfig.from_dict(opt_d).make(lora.trainable if lora_on else None)


def restore_or_create(*, stage: str, ckpt, latest, model_cfg, tx, mesh, rules, seed: int,
                      init_params, batches, writer, heads: str = "lm"):
  """(state, shardings): the latest checkpoint with the iterator moved to its position, or a
  fresh state born sharded from `init_params` (None: random init)."""
  if latest is not None:
    abstract, shardings, _ = state_shardings(model_cfg, tx, mesh, rules, heads)
    state, meta = ckpt.restore(abstract, shardings)
    batches.restore(meta["data"])
    writer.text(f"[{stage}] resumed from {ckpt.directory} at step {latest}")
    return state, shardings
  return create_state(model_cfg, tx, mesh, rules, seed, params=init_params, heads=heads)


def describe(stage: str, model_cfg, mesh, source: str, data_summary: str) -> str:
  return (f"[{stage}] model: {model_cfg.num_params() / 1e6:.2f}M params, "
          f"{model_cfg.num_layers} layers, hidden {model_cfg.hidden}, from {source}"
          f"{lora_summary(model_cfg)}; mesh "
          f"{dict(mesh.shape)} on {len(mesh.devices.flat)} {jax.devices()[0].platform} "
          f"device(s); {data_summary}")


def lora_summary(model_cfg) -> str:
  """", LoRA rank r on q,v: N trainable adapter params (frozen base)" or ""."""
  if not model_cfg.lora_rank:
    return ""
  n = model_cfg.num_lora_params()
  return (f", LoRA rank {model_cfg.lora_rank} (alpha {model_cfg.lora_alpha:g}) on "
          f"{model_cfg.lora_targets}: {n / 1e6:.3f}M adapter params "
          f"({100 * n / model_cfg.num_params():.2f}%), base frozen")


def train_loop(*, stage: str, state, train_step: Callable, batches, put: Callable,
               evaluate: Callable[[Any, int], dict], ckpt, tc, writer, flops_per_token: float,
               peak_flops: float):
  """Runs to `tc.steps` (or `tc.stop_at`); returns (state, step, history of eval dicts).

  batches: has next() -> host batch, state() and restore(); put: host batch -> device batch;
  evaluate(params, step) -> metrics dict (it may print samples). tokens/s counts the real
  tokens of the batch (its "attention_mask"), over all processes. A step whose loss or
  gradient is not finite stops the run (`nonfinite.Watch`); SIGTERM/SIGINT stop it after the
  step with a checkpoint (`preemption`). The checkpointer is closed (every save on disk) on
  every way out.
  """
  step = int(state.step)
  stop = min(tc.stop_at or tc.steps, tc.steps)
  progress = metrics.Progress(tc.steps, start=step)
  history = []
  guard = nonfinite.Watch(stage, tc, ckpt, writer)
  rate = _Rate(flops_per_token, peak_flops)

  def save():
    ckpt.save(step, state, {"data": batches.state(), "step": step}, force=True)

  try:
    if step == 0 or step >= tc.steps:
      history.append(writer.write(step, evaluate(state.params, step)))
    with preemption.watch(stage) as preempt:
      while step < stop:
        batch = batches.next()
        rate.count(batch)
        state, step_metrics = train_step(state, put(batch))
        step += 1
        rate.after_first_step(step_metrics)
        guard.check(step, step_metrics)
        if step % tc.log_every == 0 or step == tc.steps:
          writer.write(step, rate.read(step_metrics))
          writer.text(f"  progress {progress.eta(step)}")
        # The eval of a step comes before its checkpoint: a run resumed there has it already.
        if step % tc.eval_every == 0 or step == tc.steps:
          history.append(writer.write(step, evaluate(state.params, step)))
        saved = step % tc.checkpoint_every == 0 or step == stop
        if saved:
          save()
        if preempt.requested(step):
          if not saved:
            save()
          ckpt.close()  # waits until the checkpoint is on disk
          raise Preempted(stage, step, ckpt.directory, preempt.signal_name)
  finally:
    ckpt.close()
  if step < tc.steps:
    writer.text(f"[{stage}] stopped at step {step} of {tc.steps} (train.stop_at); run the same "
                "command again to resume")
  return state, step, history


class _Rate:
  """tokens/s, model TFLOP/s and MFU between log lines (compilation kept out of the first)."""

  def __init__(self, flops_per_token: float, peak_flops: float):
    self.flops_per_token, self.peak_flops = flops_per_token, peak_flops
    self.t_last, self.tokens, self.first = time.perf_counter(), 0, True

  def count(self, batch) -> None:
    self.tokens += int(batch["attention_mask"].sum()) * jax.process_count()

  def read(self, step_metrics) -> dict:
    # The clock is read when the step has finished, not when it was queued: one stall per log.
    jax.block_until_ready(step_metrics)
    now = time.perf_counter()
    vals = {k: np.asarray(v) for k, v in step_metrics.items()}
    vals["tokens_per_s"] = self.tokens / max(now - self.t_last, 1e-9)
    # Model FLOPs utilisation counts the FLOPs the model needs (6N + attention per token), not
    # what remat recomputes; the peak is the device's dense bf16 figure or train.peak_tflops.
    vals["model_tflops"] = vals["tokens_per_s"] * self.flops_per_token / 1e12
    if self.peak_flops:
      vals["mfu"] = vals["tokens_per_s"] * self.flops_per_token / self.peak_flops
    self.t_last, self.tokens = now, 0
    return vals

  def after_first_step(self, step_metrics) -> None:
    if self.first:  # keep compilation out of the first tokens/s figure
      jax.block_until_ready(step_metrics)
      self.t_last, self.tokens, self.first = time.perf_counter(), 0, False
