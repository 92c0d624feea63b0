"""The reward-model stage: learn a scalar reward from comparisons, evaluate it honestly, and
normalise it for PPO.

`run(config, workdir)` builds the mesh and tokenizer; starts the model from an SFT workdir (the
default, as InstructGPT did), a Hugging Face checkpoint, or scratch, with the LM head replaced by
a scalar head; reads or makes the training comparisons (`rm_data`); trains with the ranking loss
(`rm_steps`) through the shared loop (resume, checkpoints, metrics), evaluating periodically on
the validation slice, or without one on training comparisons (said so in the log and in the
metric names: `valid_*` or `train_slice_*`). Only after the last step does it read the held-out
split, once: accuracy beside the length baselines on the full texts, the accuracy where the
shorter response won, reward statistics, calibration, and on the built-in task agreement with
the gold preference beside the simulated labelers' ceiling (`rlhf_jax.reward.report`, the code
path `python -m rlhf_jax.reward.score` uses too). It fits the normalisation (mean 0, std 1) on
the responses of training comparisons (on the built-in task: SFT-policy samples), and writes
`reward_norm.json`, `eval_report.json` and `eval_rewards.jsonl` (per-record rewards) next to the
checkpoints.
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
from rlhf_jax.reward import model as rm_model
from rlhf_jax.reward import report as rm_report
from rlhf_jax.train import model_init, rm_data
from rlhf_jax.train.loop import describe, make_optimizer, restore_or_create, stage_setup, train_loop
from rlhf_jax.train.rm_steps import RMLossConfig, make_rm_steps

def run(config, workdir: str) -> dict:
  if config.stage != "reward":
    raise ConfigError(f"stage={config.stage!r}: this loop runs 'reward'")
  tc = config.train
  norm_n = tc.get("norm_comparisons", NORM_COMPARISONS)
  if norm_n < 1:
    raise ConfigError(f"train.norm_comparisons={norm_n} must be >= 1 (the reward "
                      "normalisation is fitted on that many training comparisons' responses)")
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
                              extra={"tokenizer": tokenizer_spec, "data": data.settings})

  def put(b):
    return parallel.put_batch(b, mesh, rules)

  def eval_rewards(params, comps, k=data.k):
    """float32[N, K] rewards of `comps`, in fixed-shape batches (one compile per K)."""
    return np.concatenate([
        np.asarray(eval_step(params, put(mine))["rewards"])[:n]
        for n, mine in rm_data.eval_batches(comps, k, tc.batch_size, seq_len, tokenizer.pad_id)])

  eval_comps, prefix, what = rm_data.periodic_eval_set(data, tc)
  writer.text(f"[reward] periodic evaluations read {what}; the held-out split is read once, "
              "after training")

  def evaluate(params, step):
    ev = rm_report.comparison_metrics(eval_rewards(params, eval_comps), eval_comps, data.k)
    # Numbers only; a subset with no pairs (nan, e.g. no pair where the shorter won) is left out.
    return {f"{prefix}_{k}": v for k, v in ev.items()
            if isinstance(v, (int, float)) and np.isfinite(v)}

  state, step, history = train_loop(
      stage="reward", state=state, train_step=train_step, batches=batches, put=put,
      evaluate=evaluate, ckpt=ckpt, tc=tc, writer=writer,
      flops_per_token=model_cfg.flops_per_token(seq_len, lm_head=lc.lm_coef > 0),
      peak_flops=metrics.peak_flops(tc.peak_tflops))

  report = None
  if step >= tc.steps:
    held = data.load_eval()
    writer.text(f"[reward] {held.summary}")
    k = max([data.k] + [c.k for c in held.comps])
    norm_comps = data.train[:norm_n]
    report = _finish(config, workdir, held, k, eval_rewards(state.params, held.comps, k),
                     norm_comps, eval_rewards(state.params, norm_comps), data.k, writer)
  writer.close()
  return {"step": step, "history": history, "state": state, "report": report,
          "compiled": {"train": train_step.jitted, "eval": eval_step.jitted}}


# Normalisation: the responses of this many training comparisons (the first, in file order),
# unless train.norm_comparisons says otherwise.
NORM_COMPARISONS = 2048
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


def _finish(config, workdir, held, k, rewards, norm_comps, norm_rewards, norm_k, writer):
  """The held-out report from every held-out comparison's rewards [N, K], the per-record
  rewards, and the normalisation, fitted on the responses of training comparisons."""
  ev, text = rm_report.comparison_report(rewards, held.comps, k, held.gold,
                                         held.labeler_ceiling)
  writer.text(text)
  present = cmp.rank_matrix(norm_comps, norm_k) >= 0
  norm = rm_model.fit_normalization(norm_rewards[present])
  norm["samples"] = (f"responses of the first {len(norm_comps)} training comparisons"
                     + (" (SFT-policy samples on training prompts)"
                        if config.data.source == "builtin" else ""))
  if jax.process_index() == 0:
    rm_model.save_normalization(workdir, norm)
    with open(os.path.join(workdir, "eval_report.json"), "w", encoding="utf-8") as f:
      json.dump(ev, f, indent=1)
    rm_report.write_rewards(os.path.join(workdir, EVAL_REWARDS),
                            rm_report.reward_records(held.comps, rewards, norm))
  writer.text(f"[reward] normalisation: gain {norm['gain']:.4f}, bias {norm['bias']:+.4f} "
              f"(raw mean {norm['raw_mean']:+.3f}, std {norm['raw_std']:.3f} over {norm['n']} "
              f"{norm['samples']}) -> {os.path.join(workdir, rm_model.NORM_FILE)}; per-record "
              f"held-out rewards -> {os.path.join(workdir, EVAL_REWARDS)}")
  return ev


EVAL_REWARDS = "eval_rewards.jsonl"
