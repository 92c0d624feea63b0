"""The pretrain and SFT stages: one loop, two data sources.

`run(config, workdir)` builds the mesh, tokenizer, model and data; restores the latest
checkpoint in the workdir if there is one; trains with the jitted LM step; evaluates held-out
loss and prints samples; checkpoints; and writes `model.json` so later stages (reward model, RL)
can find the policy. Pretraining puts the loss on every token; SFT on response tokens only.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np

from rlhf_jax import checkpoint, metrics, parallel
from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError
from rlhf_jax.train import model_init
from rlhf_jax.train.lm_steps import make_lm_steps
from rlhf_jax.train.state import OptimConfig, create_state, state_shardings


def run(config, workdir: str) -> dict:
  """Runs the stage named by `config.stage` ("pretrain" or "sft"); returns the final eval."""
  stage = config.stage
  if stage not in ("pretrain", "sft"):
    raise ConfigError(f"stage={stage!r}: the LM loop runs 'pretrain' or 'sft'")
  tc = config.train
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  writer = metrics.MetricWriter(workdir, prefix=stage)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints)
  latest = ckpt.latest_step()
  tokenizer = lm_data.load_tokenizer(config)
  # A run that resumes reads its params from its own checkpoint, not from init.*.
  model_cfg, init_params = model_init.build(config, tokenizer, load_params=latest is None)
  data = lm_data.build(config, tokenizer, model_cfg)
  writer.text(f"[{stage}] model: {model_cfg.num_params() / 1e6:.2f}M params, "
              f"{model_cfg.num_layers} layers, hidden {model_cfg.hidden}; mesh "
              f"{dict(mesh.shape)} on {len(mesh.devices.flat)} {jax.devices()[0].platform} "
              f"device(s); {data.describe()}")

  opt_d = dict(config.optim)
  opt_d["total_steps"] = opt_d.get("total_steps") or tc.steps
  tx = OptimConfig.from_dict(opt_d).make()
  if latest is not None:
    abstract, shardings, _ = state_shardings(model_cfg, tx, mesh, rules)
    state, meta = ckpt.restore(abstract, shardings)
    data.train_iter.restore(meta["data"])
    writer.text(f"[{stage}] resumed from {ckpt.directory} at step {latest}")
  else:
    state, shardings = create_state(model_cfg, tx, mesh, rules, config.seed, params=init_params)
  del init_params
  train_step, eval_step = make_lm_steps(model_cfg, tx, mesh, rules, shardings)
  _write_model_json(workdir, model_cfg, config)

  def evaluate(params):
    sums = {"nll_sum": 0.0, "target_tokens": 0.0}
    for b in data.eval_batches():
      out = eval_step(params, parallel.put_batch(b, mesh, rules))
      for k in sums:
        sums[k] += float(out[k])
    loss = sums["nll_sum"] / max(sums["target_tokens"], 1.0)
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}

  def show_samples(params, step):
    if not tc.num_samples:
      return {}
    shown, extra = data.samples(params, model_cfg, tc, seed=config.seed + step)
    for line in shown:
      writer.text(line)
    return extra

  flops_per_token = model_cfg.flops_per_token(config.data.max_len)
  peak_flops = metrics.peak_flops(tc.peak_tflops)
  step = int(state.step)
  stop = tc.stop_at if tc.stop_at else tc.steps
  progress = metrics.Progress(tc.steps, start=step)
  history = []
  if step == 0 or step >= tc.steps:
    ev = evaluate(state.params)
    ev.update(show_samples(state.params, step))
    history.append(writer.write(step, ev))
  pending, t_last, tokens_since, first_step = None, time.perf_counter(), 0, True
  while step < min(stop, tc.steps):
    batch = data.train_iter.next()
    tokens_since += int(batch["attention_mask"].sum()) * jax.process_count()
    state, step_metrics = train_step(state, parallel.put_batch(batch, mesh, rules))
    step += 1
    if first_step:  # keep compilation out of the first tokens/s figure
      jax.block_until_ready(step_metrics)
      t_last, tokens_since, first_step = time.perf_counter(), 0, False
    # Step N's metrics are read after step N+1 is dispatched, so logging never stalls the device.
    if pending is not None:
      _log_train(writer, *pending)
      pending = None
    if step % tc.log_every == 0 or step == tc.steps:
      # The clock is read when step N has finished, not when it was queued: one stall per log.
      jax.block_until_ready(step_metrics)
      dt = time.perf_counter() - t_last
      pending = (step, step_metrics, tokens_since / dt, progress.eta(step), flops_per_token,
                 peak_flops)
      t_last, tokens_since = time.perf_counter(), 0
    last = step == tc.steps or step == stop
    if step % tc.checkpoint_every == 0 or last:
      ckpt.save(step, state, {"data": data.train_iter.state(), "step": step}, force=True)
    if step % tc.eval_every == 0 or step == tc.steps:
      if pending is not None:
        _log_train(writer, *pending)
        pending = None
      ev = evaluate(state.params)
      ev.update(show_samples(state.params, step))
      history.append(writer.write(step, ev))
  if pending is not None:
    _log_train(writer, *pending)
  ckpt.close()
  writer.close()
  if step < tc.steps:
    writer.text(f"[{stage}] stopped at step {step} of {tc.steps} (train.stop_at); run the same "
                "command again to resume")
  return {"step": step, "history": history, "state": state,
          "compiled": {"train": train_step.jitted, "eval": eval_step.jitted}}


def _log_train(writer, step, step_metrics, tokens_per_s, eta, flops_per_token, peak_flops):
  vals = {k: np.asarray(v) for k, v in step_metrics.items()}
  vals["tokens_per_s"] = tokens_per_s
  # Model FLOPs utilisation counts the FLOPs the model needs (6N + attention per token), not
  # what remat recomputes; the peak is the device's dense bf16 figure or train.peak_tflops.
  vals["model_tflops"] = tokens_per_s * flops_per_token / 1e12
  if peak_flops:
    vals["mfu"] = tokens_per_s * flops_per_token / peak_flops
  writer.write(step, vals)
  writer.text(f"  progress {eta}")


def _write_model_json(workdir, model_cfg, config):
  if jax.process_index() != 0:
    return
  import dataclasses  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "model.json"), "w", encoding="utf-8") as f:
    json.dump({"model": dataclasses.asdict(model_cfg), "stage": config.stage,
               "tokenizer": config.data.tokenizer or config.init.hf_checkpoint}, f, indent=1)
