"""The ILQL stage: offline RL of a policy from scored responses (Snell et al. 2022).

`run(config, workdir)` reads scored responses (the best-of-n stage's scored samples of the SFT
policy, a JSON-lines file of (prompt, response, reward), or comparisons whose ranks become
scores: `rlhf_jax.data.scored`), starts the policy from `init.from_workdir` (trunk and LM head)
with fresh Q, V and target Q heads, and trains all of it with the shared loop (resume,
checkpoints, metrics, the NaN guard): no sampling and no reward model during training. Each
eval reports the losses on the held-out responses. At the end, on the built-in task, the SFT
policy, the trained LM head alone (β = 0) and the ILQL policy (advantage-shaped decoding,
β = `ilql.beta`) answer the RL stage's held-out prompts: gold score, reward-model score, KL to
the SFT policy, length and EOS rate, in `eval_policy.json` (as DPO's, read by
`python -m rlhf_jax.compare`). The workdir's params are the policy's (trunk and LM head), so
later stages read it as an SFT workdir; the heads live beside them in the checkpoint.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from rlhf_jax import jit_steps, metrics, parallel, sampling
from rlhf_jax.data import lm_data
from rlhf_jax.data import scored as scored_lib
from rlhf_jax.errors import ConfigError
from rlhf_jax.ilql import decode, heads as heads_lib, state as ilql_state
from rlhf_jax.ilql import steps as ilql_steps
from rlhf_jax.ilql.config import ILQLConfig
from rlhf_jax.reward import model as rm_model
from rlhf_jax.train import model_init, pipeline, rm_data
from rlhf_jax.train import policy_eval as policy_eval_lib
from rlhf_jax.train.loop import describe, make_optimizer, stage_setup, train_loop
from rlhf_jax.train_state import param_shardings

SCORED_FORMAT = "scored"


def run(config, workdir: str) -> dict:
  if config.stage != "ilql":
    raise ConfigError(f"stage={config.stage!r}: this loop runs 'ilql'")
  model_init.require_source(
      config, "ILQL starts from a policy: set init.from_workdir (an SFT workdir) or "
              "init.hf_checkpoint")
  ic = ILQLConfig.from_dict(config.ilql)
  pipeline.run_upstream(config)
  config = _resolve_source(config)
  tc = config.train
  mesh, rules, writer, ckpt, latest = stage_setup(config, workdir, "ilql")
  tokenizer = lm_data.load_tokenizer(config)
  model_cfg, ref_host = model_init.build(config, tokenizer, heads="lm")
  if model_cfg.lora_rank:
    raise ConfigError("ILQL trains the trunk, the LM head and its Q/V heads: model.lora_rank "
                      "must be 0")
  width = heads_lib.head_width(model_cfg, ic.head_hidden)
  ref_params = jax.device_put(ref_host, param_shardings(model_cfg, mesh, rules, "lm")[1])
  p_width = config.data.max_prompt_len
  if p_width + ic.max_response_len > model_cfg.max_seq_len:
    raise ConfigError(f"data.max_prompt_len={p_width} + ilql.max_response_len="
                      f"{ic.max_response_len} exceeds the model's max_seq_len="
                      f"{model_cfg.max_seq_len}")
  train_items, eval_items, summary = load_data(config, tokenizer, p_width, ic.max_response_len)
  writer.text(describe("ilql", model_cfg, mesh, config.init.hf_checkpoint or
                       config.init.from_workdir, summary) +
              f"; heads of width {width}, tau {ic.tau}, gamma {ic.gamma}, cql {ic.cql_coef}, "
              f"lm {ic.lm_coef}, decoding beta {ic.beta}")
  tx = make_optimizer(config.optim, tc.steps)
  batches = scored_lib.ScoredIterator(train_items, tc.batch_size, p_width, ic.max_response_len,
                                      tokenizer.pad_id, config.seed, jax.process_index(),
                                      jax.process_count())
  state, shardings = _restore_or_create(ckpt, latest, model_cfg, width, tx, ref_params, mesh,
                                        rules, config.seed, batches, writer)
  model_init.write_model_json(workdir, model_cfg, config, heads="lm",
                              extra={"tokenizer": lm_data.tokenizer_spec(config)})
  run_train, run_eval = _compile(model_cfg, width, tx, ic, shardings, mesh, rules)
  latest_state = {"state": state}

  def train_step(st, b):
    st, met = run_train(st, b)
    latest_state["state"] = st  # the held-out losses read the heads of the newest state
    return st, met

  def evaluate(params, step):
    del params, step
    return held_out_losses(run_eval, latest_state["state"], eval_items, tc.batch_size, p_width,
                           ic.max_response_len, tokenizer.pad_id, mesh, rules)

  state, step, history = train_loop(
      stage="ilql", state=state, train_step=train_step, batches=batches,
      put=lambda b: parallel.put_batch(b, mesh, rules), evaluate=evaluate, ckpt=ckpt, tc=tc,
      writer=writer, flops_per_token=3 * model_cfg.flops_per_token(p_width + ic.max_response_len),
      peak_flops=metrics.peak_flops(tc.peak_tflops))
  policy_eval = None
  builtin = lm_data.tokenizer_spec(config) == "builtin"
  if step >= tc.steps and builtin and config.eval_policy.prompts:
    policy_eval = final_evaluation(config, model_cfg, width, ic, tokenizer, mesh, rules,
                                   ref_params, state)
    policy_eval_lib.write(workdir, policy_eval, "ilql", writer)
  writer.close()
  return {"step": step, "history": history, "state": state, "policy_eval": policy_eval}


def _restore_or_create(ckpt, latest, model_cfg, width, tx, ref_params, mesh, rules, seed,
                       batches, writer):
  if latest is not None:
    abstract, shardings = ilql_state.abstract_and_shardings(model_cfg, width, tx, mesh, rules)
    state, meta = ckpt.restore(abstract, shardings)
    batches.restore(meta["data"])
    writer.text(f"[ilql] resumed from {ckpt.directory} at step {latest}")
    return state, shardings
  return ilql_state.create(model_cfg, width, tx, ref_params, mesh, rules, seed)


def _compile(model_cfg, width, tx, ic, shardings, mesh, rules):
  """(run_train(state, batch), run_eval(params, heads, target, batch)) on the mesh: the state
  donated, a NaN step kept out (`guard_nonfinite`)."""
  batch_sh = {k: parallel.batch_sharding(mesh, rules, n)
              for k, n in ilql_steps.BATCH_NDIMS.items()}
  rep = parallel.replicated(mesh)
  train_jit = jax.jit(jit_steps.with_rules(jit_steps.guard_nonfinite(functools.partial(
      ilql_steps.train_step, model_cfg=model_cfg, width=width, tx=tx, ic=ic)), rules),
      in_shardings=(shardings, batch_sh), out_shardings=(shardings, rep), donate_argnums=0)
  eval_jit = jax.jit(jit_steps.with_rules(functools.partial(
      ilql_steps.eval_step, model_cfg=model_cfg, width=width, ic=ic), rules),
      in_shardings=(shardings.params, shardings.heads, shardings.target, batch_sh),
      out_shardings=rep)
  run_train, run_eval = jit_steps.in_mesh(train_jit, mesh), jit_steps.in_mesh(eval_jit, mesh)
  run_train.jitted, run_eval.jitted = train_jit, eval_jit
  return run_train, run_eval


def held_out_losses(run_eval, state, items, batch_size, p_width, n, pad_id, mesh, rules) -> dict:
  """eval_* means over every held-out response token, in fixed-shape batches."""
  sums = {}
  per = batch_size // jax.process_count()
  lo = jax.process_index() * per
  for s in range(0, len(items), batch_size):
    b = scored_lib.pad_scored(items[s:s + batch_size], p_width, n, pad_id, rows=batch_size)
    mine = {k: v[lo:lo + per] for k, v in b.items()}
    out = run_eval(state.params, state.heads, state.target,
                   parallel.put_batch(mine, mesh, rules))
    for k, v in out.items():
      sums[k] = sums.get(k, 0.0) + float(parallel.to_host(v))
  count = max(sums.pop("tokens", 0.0), 1.0)
  return {f"eval_{k}": v / count for k, v in sums.items()}


def load_data(config, tokenizer, p_width: int, n: int):
  """(train responses, held-out responses, one-line summary), fitted to the row layout."""
  d = config.data
  if d.format == SCORED_FORMAT:
    cfg = scored_lib.ScoredConfig(
        source=d.source, prompt_field=d.prompt_field, response_field=d.response_field,
        reward_field=d.reward_field, prompt_template=d.prompt_template or None,
        eval_split=d.eval_split or None, eval_fraction=d.eval_fraction,
        max_records=d.max_records or None)
    train, st_train = scored_lib.load_scored(cfg, tokenizer, "train")
    held, st_eval = scored_lib.load_scored(cfg, tokenizer, "eval")
  else:
    from rlhf_jax.data import comparisons as cmp  # pylint: disable=g-import-not-at-top
    ccfg = rm_data.comparison_config(config)  # "hh", "pairs" or "ranked"
    comps, cst = cmp.load_comparisons(ccfg, tokenizer, "train")
    comps_eval, _ = cmp.load_comparisons(ccfg, tokenizer, "eval")
    train, held = scored_lib.from_comparisons(comps), scored_lib.from_comparisons(comps_eval)
    st_train, st_eval = (scored_lib.ScoredStats(kept=len(train)),
                         scored_lib.ScoredStats(kept=len(held)))
    st_train.skipped_empty = cst.skipped_empty + cst.skipped_tie
  train = scored_lib.fit(train, p_width, n, st_train)
  held = scored_lib.fit(held, p_width, n, st_eval)
  if not train:
    raise ConfigError(f"data.source={d.source!r}: no training responses ({st_train})")
  if not held:
    raise ConfigError(f"data.source={d.source!r}: no held-out responses ({st_eval}); set "
                      "data.eval_split or data.eval_fraction > 0")
  rewards = np.array([x.reward for x in train])
  return train, held, (f"data {d.source} ({d.format}): train {st_train}; held out {st_eval}; "
                       f"reward mean {rewards.mean():.3f}, std {rewards.std():.3f}")


def final_evaluation(config, model_cfg, width, ic, tokenizer, mesh, rules, ref_params, state):
  """SFT, the LM head alone and the ILQL policy on the held-out prompts."""
  reward = None
  if "reward" in config and config.reward.models:
    models, rule = rm_model.load_reward_models(config.reward, config)
    rm_model.check_tokenizers(models, lm_data.tokenizer_spec(config))
    reward = (models, rule)
  e = config.eval_policy
  scfg = sampling.SamplingConfig(max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                                 top_k=ic.top_k)
  shaped = sampling.generator(model_cfg, scfg, tokenizer.eos_id, tokenizer.pad_id,
                              decode.ShapedLogits(model_cfg, width))
  policies = {"SFT (reference)": ref_params, "ILQL LM head": state.params}
  samplers = {}
  for beta in ic.betas():  # one compiled sampler: β is in its params
    name = f"ILQL (beta {beta:g})"
    policies[name] = decode.sampler_params(state.params, state.heads, state.target, beta)
    samplers[name] = shaped
  return policy_eval_lib.evaluate_policies(config, model_cfg, tokenizer, mesh, rules, policies,
                                           reward=reward, samplers=samplers)


def _resolve_source(config):
  """data.source="samples" -> the best-of-n stage's scored samples (run first if missing)."""
  if config.data.source != "samples":
    return config
  if "samples" not in config:
    raise ConfigError("data.source='samples' needs a `samples` section (a best-of-n config)")
  path = os.path.join(config.samples.workdir, "best_of_n_samples.jsonl")
  if not os.path.exists(path):
    from rlhf_jax import stages  # pylint: disable=g-import-not-at-top
    print(f"[ilql] scored samples: running best-of-n into {config.samples.workdir}", flush=True)
    stages.run(config.samples, config.samples.workdir)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.data.source, config.data.format = path, SCORED_FORMAT
  return config
