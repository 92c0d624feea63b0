"""The pretrain and SFT stages: one loop, two data sources.

`run(config, workdir)` builds the mesh, tokenizer, model and data; restores the latest
checkpoint in the workdir if there is one; trains with the jitted LM step; evaluates held-out
loss and prints samples; checkpoints; and writes `model.json` so later stages (reward model, RL)
can find the policy. Pretraining puts the loss on every token; SFT on response tokens only.
"""

from __future__ import annotations

import math
import os


from rlhf_jax import checkpoint, metrics, parallel
from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError
from rlhf_jax.train import model_init
from rlhf_jax.train.lm_steps import make_lm_steps
from rlhf_jax.train.loop import describe, make_optimizer, restore_or_create, train_loop


def run(config, workdir: str) -> dict:
  """Runs the stage named by `config.stage` ("pretrain" or "sft"); returns the final eval."""
  stage = config.stage
  if stage not in ("pretrain", "sft"):
    raise ConfigError(f"stage={stage!r}: the LM loop runs 'pretrain' or 'sft'")
  tc = config.train
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  parallel.check_batch_size(tc.batch_size, mesh, rules)
  writer = metrics.MetricWriter(workdir, prefix=stage)

  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints)
  latest = ckpt.latest_step()
  tokenizer = lm_data.load_tokenizer(config)
  # A run that resumes reads its params from its own checkpoint, not from init.*.
  model_cfg, init_params = model_init.build(config, tokenizer, load_params=latest is None)
  data = lm_data.build(config, tokenizer, model_cfg)
  source = config.init.hf_checkpoint or config.init.from_workdir or "scratch"
  writer.text(describe(stage, model_cfg, mesh, source, data.describe()))
  tx = make_optimizer(config.optim, config.train.steps)
  state, shardings = restore_or_create(
      stage=stage, ckpt=ckpt, latest=latest, model_cfg=model_cfg, tx=tx, mesh=mesh, rules=rules,
      seed=config.seed, init_params=init_params, batches=data.train_iter, writer=writer)
  del init_params
  train_step, eval_step = make_lm_steps(model_cfg, tx, mesh, rules, shardings)
  model_init.write_model_json(workdir, model_cfg, config)

  def evaluate(params, step):
    sums = {"nll_sum": 0.0, "target_tokens": 0.0}
    for b in data.eval_batches():
      out = eval_step(params, parallel.put_batch(b, mesh, rules))
      for k in sums:
        sums[k] += float(out[k])
    loss = sums["nll_sum"] / max(sums["target_tokens"], 1.0)
    ev = {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0))}
    if tc.num_samples:
      shown, extra = data.samples(params, model_cfg, tc, seed=config.seed + step)
      for line in shown:
        writer.text(line)
      ev.update(extra)
    return ev

  state, step, history = train_loop(
      stage=stage, state=state, train_step=train_step, batches=data.train_iter,
      put=lambda b: parallel.put_batch(b, mesh, rules), evaluate=evaluate, ckpt=ckpt, tc=tc,
      writer=writer, flops_per_token=model_cfg.flops_per_token(config.data.max_len),
      peak_flops=metrics.peak_flops(tc.peak_tflops))
  writer.close()
  return {"step": step, "history": history, "state": state,
          "compiled": {"train": train_step.jitted, "eval": eval_step.jitted}}

