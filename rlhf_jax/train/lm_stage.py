"""The pretrain and SFT stages: one loop, two data sources.

`run(config, workdir)` builds the mesh, tokenizer, model and data; restores the latest
checkpoint in the workdir if there is one; trains with the jitted LM step; evaluates held-out
loss and prints samples; checkpoints; and writes `model.json` so later stages (reward model, RL)
can find the policy. Pretraining puts the loss on every token; SFT on response tokens only.
An SFT config with an `eval_policy` section (rejection-sampling fine-tuning) ends with the
policy beside its starting one on the built-in task's held-out RL prompts
(`rlhf_jax.train.policy_eval`, `eval_policy.json`).
"""

from __future__ import annotations

import math

from rlhf_jax import metrics, parallel
from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError
from rlhf_jax.train import model_init
from rlhf_jax.train import policy_eval as policy_eval_lib
from rlhf_jax.train.lm_steps import make_lm_steps
from rlhf_jax.train.loop import describe, make_optimizer, restore_or_create, stage_setup, train_loop


def run(config, workdir: str) -> dict:
  """Runs the stage named by `config.stage` ("pretrain" or "sft"); returns the final eval."""
  stage = config.stage
  if stage not in ("pretrain", "sft"):
    raise ConfigError(f"stage={stage!r}: the LM loop runs 'pretrain' or 'sft'")
  tc = config.train
  mesh, rules, writer, ckpt, latest = stage_setup(config, workdir, stage)
  tokenizer = lm_data.load_tokenizer(config)
  # A run that resumes reads its params from its own checkpoint, not from init.*.
  model_cfg, init_params = model_init.build(config, tokenizer, load_params=latest is None)
  data = lm_data.build(config, tokenizer, model_cfg)
  source = config.init.hf_checkpoint or config.init.from_workdir or "scratch"
  writer.text(describe(stage, model_cfg, mesh, source, data.describe()))
  tx = make_optimizer(config.optim, config.train.steps, model_cfg)
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
  policy_eval = None
  if ("eval_policy" in config and config.eval_policy.prompts and step >= config.train.steps
      and lm_data.tokenizer_spec(config) == "builtin" and config.init.from_workdir):
    # E.g. rejection-sampling fine-tuning: the result beside the policy it started from.
    _, start = model_init.load_workdir_params(config.init.from_workdir, config, "lm")
    policies = {"start (reference)": start, stage.upper(): state.params}
    policy_eval = policy_eval_lib.evaluate_policies(config, model_cfg, tokenizer, mesh,
                                                    rules, policies)
    policy_eval_lib.write(workdir, policy_eval, stage, writer)
  writer.close()
  return {"step": step, "history": history, "state": state, "policy_eval": policy_eval,
          "compiled": {"train": train_step.jitted, "eval": eval_step.jitted}}

