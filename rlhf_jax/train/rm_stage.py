"""The reward-model stage: learn a scalar reward from comparisons, evaluate it honestly, and
normalise it for PPO.

`run(config, workdir)` builds the mesh and tokenizer; starts the model from an SFT workdir (the
default, as InstructGPT did), a Hugging Face checkpoint, or scratch, with the LM head replaced by
a scalar head; reads or makes the comparisons (`rm_data`); trains with the ranking loss
(`rm_steps`) through the shared loop (resume, checkpoints, metrics); evaluates held-out accuracy
beside the length baselines, reward statistics, calibration, and on the built-in task agreement
with the gold preference beside the simulated labelers' ceiling; and at the end fits the
normalisation (mean 0, std 1 on SFT-policy samples) and writes `reward_norm.json` and
`eval_report.json` next to the checkpoints.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlhf_jax import metrics, parallel
from rlhf_jax.data import comparisons as cmp
from rlhf_jax.data import lm_data, train_tokenizer
from rlhf_jax.data.tokenizer import load_tokenizer
from rlhf_jax.errors import ConfigError
from rlhf_jax.reward import evaluate as rm_eval
from rlhf_jax.reward import model as rm_model
from rlhf_jax.train import model_init, rm_data
from rlhf_jax.train.loop import describe, make_optimizer, restore_or_create, stage_setup, train_loop
from rlhf_jax.train.rm_steps import RMLossConfig, make_rm_steps

def run(config, workdir: str) -> dict:
  if config.stage != "reward":
    raise ConfigError(f"stage={config.stage!r}: this loop runs 'reward'")
  tc = config.train
  mesh, rules, writer, ckpt, latest = stage_setup(config, workdir, "reward")
  lc = RMLossConfig(**dict(config.loss))
  heads = lc.heads  # "score", or "lm+score" with the language-modelling regulariser
  tokenizer, tokenizer_spec = _tokenizer(config, workdir)
  model_cfg, init_params = model_init.build(config, tokenizer, heads=heads,
                                            load_params=latest is None)
  data = rm_data.build(config, tokenizer, workdir)
  source = config.init.hf_checkpoint or config.init.from_workdir or "scratch"
  writer.text(describe("reward", model_cfg, mesh, source, data.summary))
  tx = make_optimizer(config.optim, config.train.steps, model_cfg)
  seq_len = config.data.max_len
  batches = cmp.ComparisonIterator(data.train, tc.batch_size, data.k, seq_len, tokenizer.pad_id,
                                   config.seed, jax.process_index(), jax.process_count())
  state, shardings = restore_or_create(
      stage="reward", ckpt=ckpt, latest=latest, model_cfg=model_cfg, tx=tx, mesh=mesh,
      rules=rules, seed=config.seed, init_params=init_params, batches=batches, writer=writer,
      heads=heads)
  del init_params
  train_step, eval_step = make_rm_steps(model_cfg, tx, mesh, rules, shardings, lc)
  model_init.write_model_json(workdir, model_cfg, config, heads=heads,
                              extra={"tokenizer": tokenizer_spec})

  def put(b):
    return parallel.put_batch(b, mesh, rules)

  def eval_rewards(params, comps):
    """float32[N, K] rewards of `comps`, in fixed-shape batches (one compile)."""
    bs, n = tc.batch_size, len(comps)
    out = []
    for s in range(0, n, bs):
      part = comps[s:s + bs]
      b = cmp.pad_comparisons(part, data.k, seq_len, tokenizer.pad_id, rows=bs)
      per = bs // jax.process_count()
      mine = {key: v[jax.process_index() * per:(jax.process_index() + 1) * per]
              for key, v in b.items()}
      out.append(np.asarray(eval_step(params, put(mine))["rewards"])[:len(part)])
    return np.concatenate(out)

  # With a validation slice, the periodic evals read it and the held-out split is read once, at
  # the end; otherwise the periodic evals read the held-out split.
  eval_comps = data.valid if data.valid else data.eval
  if tc.eval_batches:
    eval_comps = eval_comps[:tc.eval_batches * tc.batch_size]
  ranks = cmp.rank_matrix(eval_comps, data.k)
  lengths = cmp.response_lengths(eval_comps, data.k)
  gold = (None if data.gold_eval is None or data.valid else
          data.gold_eval[:len(eval_comps)])

  last_eval = {}  # the final report reuses the last eval's rewards when they cover data.eval

  def evaluate(params, step):
    rewards = eval_rewards(params, eval_comps)
    last_eval.update(step=step, rewards=rewards)
    ev = rm_eval.evaluate_rewards(rewards, ranks, lengths, gold)
    if data.labeler_ceiling is not None:
      ev["labeler_ceiling"] = data.labeler_ceiling
    prefix = "valid" if data.valid else "eval"
    return {f"{prefix}_{k}": v for k, v in ev.items() if not k.endswith("_table")}

  state, step, history = train_loop(
      stage="reward", state=state, train_step=train_step, batches=batches, put=put,
      evaluate=evaluate, ckpt=ckpt, tc=tc, writer=writer,
      flops_per_token=model_cfg.flops_per_token(seq_len, lm_head=lc.lm_coef > 0),
      peak_flops=metrics.peak_flops(tc.peak_tflops))

  report = None
  if step >= tc.steps:
    if eval_comps is data.eval and last_eval.get("step") == step:
      final_rewards = last_eval["rewards"]
    else:
      final_rewards = eval_rewards(state.params, data.eval)
    report = _finish(config, workdir, data, final_rewards, writer)
  writer.close()
  return {"step": step, "history": history, "state": state, "report": report,
          "compiled": {"train": train_step.jitted, "eval": eval_step.jitted}}


def _tokenizer(config, workdir):
  """(tokenizer, the spec a later stage loads it by); "bpe:N" trains one on the training split
  the first time and reads it from <workdir>/tokenizer after."""
  n = train_tokenizer.parse_spec(config.data.tokenizer)
  if n is None:
    return lm_data.load_tokenizer(config), lm_data.tokenizer_spec(config)
  if config.data.source == "builtin":
    raise ConfigError("data.tokenizer='bpe:N' trains on comparison files; the built-in task "
                      "has its own tokenizer ('builtin')")
  path = os.path.abspath(os.path.join(workdir, "tokenizer"))
  if not os.path.isdir(path) and jax.process_index() == 0:
    print(f"[reward] training a {n}-token byte-level BPE tokenizer on the training split ...",
          flush=True)
    train_tokenizer.train_bpe(cmp.record_texts(rm_data.comparison_config(config), "train"), n,
                              path)
  return load_tokenizer(path), path


def _finish(config, workdir, data, rewards, writer):
  """The held-out report from every eval comparison's rewards [N, K], then the normalisation."""
  all_ranks = cmp.rank_matrix(data.eval, data.k)
  ev = rm_eval.evaluate_rewards(rewards, all_ranks, cmp.response_lengths(data.eval, data.k),
                                data.gold_eval)
  if data.labeler_ceiling is not None:
    ev["labeler_ceiling"] = data.labeler_ceiling
  writer.text(rm_eval.format_report(ev))
  groups = sorted({c.group for c in data.eval})
  if len(groups) > 1:
    ev["by_group"] = {}
    for g in groups:
      sel = np.array([c.group == g for c in data.eval])
      sub = [c for c in data.eval if c.group == g]
      evg = rm_eval.evaluate_rewards(rewards[sel], all_ranks[sel],
                                     cmp.response_lengths(sub, data.k))
      ev["by_group"][g] = {k: v for k, v in evg.items() if not k.endswith("_table")}
      writer.text(f"  {g:<28} {evg['pairs']:5d} pairs  accuracy {evg['accuracy']:.4f}  longer "
                  f"wins {evg['longer_wins']:.4f}  shorter wins {evg['shorter_wins']:.4f}  "
                  f"margin over the better baseline {evg['accuracy'] - evg['length_baseline']:+.4f}"
                  f" (paired p {evg['paired_p_value']:.2g})")
  # Normalisation on SFT-policy samples: on the built-in task the eval responses are exactly
  # that; otherwise the held-out responses stand in for them (a later PPO run may refit).
  present = all_ranks >= 0
  norm = rm_model.fit_normalization(rewards[present])
  norm["samples"] = ("SFT-policy samples on held-out prompts" if config.data.source == "builtin"
                     else "held-out responses of the comparison data")
  if jax.process_index() == 0:
    rm_model.save_normalization(workdir, norm)
    with open(os.path.join(workdir, "eval_report.json"), "w", encoding="utf-8") as f:
      json.dump(ev, f, indent=1)
  writer.text(f"[reward] normalisation: gain {norm['gain']:.4f}, bias {norm['bias']:+.4f} "
              f"(raw mean {norm['raw_mean']:+.3f}, std {norm['raw_std']:.3f} over {norm['n']} "
              f"{norm['samples']}) -> {os.path.join(workdir, rm_model.NORM_FILE)}")
  return ev
