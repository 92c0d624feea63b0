"""The DPO stage: the policy learns from the reward model's comparison data directly, against
the frozen starting policy as the reference (Rafailov et al. 2023; IPO as a loss option).

`run(config, workdir)` reads comparisons exactly as the reward-model stage does (files, hub, or
the comparisons the pipeline's reward stage wrote: `configs/dpo.py` points at them), starts the
policy and the reference from `init.from_workdir` (the SFT model), and trains with the shared
loop (resume, checkpoints, metrics). Periodic evals read the validation slice (or, without
one, the first training comparisons: `rm_data.periodic_eval_set`); the held-out comparisons
are read once, after training. Each reports the implicit reward β·(log π − log π_ref) of each
response: how often the preferred one scores higher, the mean margin, and the mean log-ratios
(a KL-like drift). At the end, on the built-in task, the policy and the reference answer the
RL stage's held-out prompts: gold score, KL to the reference (summed k1, as the RL stage
reports it), length and EOS rate, in `eval_policy.json`. The reference's log-probs are computed
inside each step from its frozen params (one extra forward, no gradient).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from rlhf_jax import jit_steps, metrics, parallel
from rlhf_jax.data import comparisons as cmp
from rlhf_jax.data import lm_data
from rlhf_jax.dpo import steps as dpo_steps
from rlhf_jax.errors import ConfigError
from rlhf_jax.train import model_init, pipeline, rm_data
from rlhf_jax.train import policy_eval as policy_eval_lib
from rlhf_jax.train.loop import describe, make_optimizer, restore_or_create, stage_setup, train_loop
from rlhf_jax.train_state import param_shardings


def run(config, workdir: str) -> dict:
  if config.stage != "dpo":
    raise ConfigError(f"stage={config.stage!r}: this loop runs 'dpo'")
  model_init.require_source(
      config, "DPO starts from a policy: set init.from_workdir (an SFT workdir) or "
              "init.hf_checkpoint; it is also the frozen reference")
  dc = dpo_steps.DPOConfig.from_dict(config.dpo)
  pipeline.run_upstream(config)
  config = _resolve_source(config)
  tc = config.train
  mesh, rules, writer, ckpt, latest = stage_setup(config, workdir, "dpo")
  tokenizer = lm_data.load_tokenizer(config)
  model_cfg, ref_host = model_init.build(config, tokenizer, heads="lm")
  # Under LoRA the reference is the policy's own base (adapters off): None here, no copy.
  ref_params = (None if model_cfg.lora_rank else
                jax.device_put(ref_host, param_shardings(model_cfg, mesh, rules, "lm")[1]))
  data = rm_data.build(config, tokenizer, workdir)
  source = config.init.hf_checkpoint or config.init.from_workdir
  writer.text(describe("dpo", model_cfg, mesh, source, data.summary) +
              f"; {dc.loss} loss, beta {dc.beta}")
  tx = make_optimizer(config.optim, tc.steps, model_cfg)
  seq_len = config.data.max_len
  batches = cmp.ComparisonIterator(data.train, tc.batch_size, data.k, seq_len, tokenizer.pad_id,
                                   config.seed, jax.process_index(), jax.process_count(),
                                   response_mask=True)
  state, shardings = restore_or_create(
      stage="dpo", ckpt=ckpt, latest=latest, model_cfg=model_cfg, tx=tx, mesh=mesh,
      rules=rules, seed=config.seed, init_params=ref_host if latest is None else None,
      batches=batches, writer=writer)
  del ref_host
  model_init.write_model_json(workdir, model_cfg, config, heads="lm",
                              extra={"tokenizer": lm_data.tokenizer_spec(config)})
  run_train, run_eval = _compile(model_cfg, tx, dc, shardings, ref_params is not None, mesh,
                                 rules)

  def put(b):
    return parallel.put_batch(b, mesh, rules)

  periodic, prefix, what = rm_data.periodic_eval_set(data, tc)
  writer.text(f"[dpo] periodic evaluations read {what}; the held-out split is read once, "
              "after training")

  def implicit_rewards(params, comps):
    """Implicit-reward metrics of `comps`, in fixed-shape batches (one compile per K)."""
    k, logp, ref = max([data.k] + [c.k for c in comps]), [], []
    for n, mine in rm_data.eval_batches(comps, k, tc.batch_size, seq_len, tokenizer.pad_id,
                                        response_mask=True):
      out = run_eval(params, ref_params, put(mine))
      logp.append(parallel.to_host(out["logp"])[:n])
      ref.append(parallel.to_host(out["ref_logp"])[:n])
    return implicit_reward_metrics(np.concatenate(logp), np.concatenate(ref),
                                   cmp.rank_matrix(comps, k), dc.beta)

  def evaluate(params, step):
    del step
    return {f"{prefix}_{key}": v for key, v in implicit_rewards(params, periodic).items()}

  state, step, history = train_loop(
      stage="dpo", state=state, train_step=lambda st, b: run_train(st, ref_params, b),
      batches=batches, put=put, evaluate=evaluate, ckpt=ckpt, tc=tc, writer=writer,
      flops_per_token=3 * model_cfg.flops_per_token(seq_len),  # policy fwd+bwd, reference fwd
      peak_flops=metrics.peak_flops(tc.peak_tflops))
  if step >= tc.steps:
    held = data.load_eval().comps
    ev = implicit_rewards(state.params, held)
    history.append(writer.write(step, {f"eval_{key}": v for key, v in ev.items()}))
  policy_eval = None
  if step >= tc.steps and lm_data.tokenizer_spec(config) == "builtin" and config.eval_policy.prompts:
    policies = {"SFT (reference)": dpo_steps.reference_of(state.params, ref_params),
                "DPO": state.params}
    policy_eval = policy_eval_lib.evaluate_policies(config, model_cfg, tokenizer, mesh, rules,
                                                    policies)
    policy_eval_lib.write(workdir, policy_eval, "dpo", writer)
  writer.close()
  return {"step": step, "history": history, "state": state, "policy_eval": policy_eval}


def _compile(model_cfg, tx, dc, shardings, with_ref: bool, mesh, rules):
  """(run_train(state, ref_params, batch), run_eval(params, ref_params, batch)) on the mesh:
  the state donated, a NaN step kept out (`guard_nonfinite`); without `with_ref` (LoRA) the
  reference is the policy's own base and ref_params is None."""
  batch_sh = {k: parallel.batch_sharding(mesh, rules, n)
              for k, n in dpo_steps.BATCH_NDIMS.items()}
  rep = parallel.replicated(mesh)
  ref_sh = param_shardings(model_cfg, mesh, rules, "lm")[1] if with_ref else None
  train_jit = jax.jit(jit_steps.with_rules(jit_steps.guard_nonfinite(functools.partial(
      dpo_steps.train_step, model_cfg=model_cfg, tx=tx, dc=dc)), rules),
      in_shardings=(shardings, ref_sh, batch_sh), out_shardings=(shardings, rep),
      donate_argnums=0)
  eval_jit = jax.jit(jit_steps.with_rules(functools.partial(
      dpo_steps.eval_step, model_cfg=model_cfg), rules),
      in_shardings=(shardings.params, ref_sh, batch_sh), out_shardings=rep)
  return jit_steps.in_mesh(train_jit, mesh), jit_steps.in_mesh(eval_jit, mesh)


def _resolve_source(config):
  """data.source="pipeline" -> the comparison files the pipeline's reward stage wrote."""
  if config.data.source != "pipeline":
    return config
  if "pipeline" not in config:
    raise ConfigError("data.source='pipeline' needs a `pipeline` section with a reward stage")
  rw = config.pipeline.reward.workdir
  files = [os.path.join(rw, f"comparisons_{s}.jsonl") for s in ("train", "eval")]
  for f in files:
    if not os.path.exists(f):
      raise ConfigError(f"data.source='pipeline': {f} is missing; the pipeline's reward stage "
                        "writes it (run it, or set data.source to your comparisons)")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.source, config.data.eval_split = files
  return config


def implicit_reward_metrics(logp_NxK, ref_NxK, ranks_NxK, beta: float) -> dict:
  """Host metrics over every ordered pair: accuracy and margin of the implicit rewards, and
  the mean log-ratio of the preferred and the other responses."""
  r = beta * (logp_NxK - ref_NxK)
  rk = ranks_NxK
  present = rk >= 0
  better = (rk[:, :, None] < rk[:, None, :]) & present[:, :, None] & present[:, None, :]
  n, i, j = np.nonzero(better)
  if not len(n):
    return {"pairs": 0}
  ratio = logp_NxK - ref_NxK
  return {"pairs": int(len(n)), "reward_accuracy": float(np.mean(r[n, i] > r[n, j])),
          "reward_margin": float(np.mean(r[n, i] - r[n, j])),
          "logratio_chosen": float(np.mean(ratio[n, i])),
          "logratio_rejected": float(np.mean(ratio[n, j]))}
