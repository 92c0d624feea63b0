"""The data of the reward-model stage, built from its config.

From a file or hub source, comparisons come through `rlhf_jax.data.comparisons`. On the built-in
task they are made here, as InstructGPT made them: the SFT policy (`data.policy_workdir`, by
default `init.from_workdir`) samples K responses to each prompt, one of several simulated
labelers (`rlhf_jax.data.labelers`) ranks them, and the comparisons are written to the workdir
as JSON lines in the documented record schema (`comparisons_train.jsonl`,
`comparisons_eval.jsonl`). A resumed or repeated run reads those files back, so the data never
changes under a run; the files are also what a user inspects or hands to a real labeler.
Not for: the losses or the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from rlhf_jax import parallel, sampling
from rlhf_jax.data import builtin_task as bt
from rlhf_jax.data import comparisons as cmp
from rlhf_jax.data import labelers as lab
from rlhf_jax.data.demonstrations import read_records
from rlhf_jax.errors import ConfigError, DataError


@dataclasses.dataclass
class RMData:
  train: list  # [Comparison]
  eval: list
  k: int  # responses per batch element
  summary: str
  gold_eval: np.ndarray | None = None  # [N, K] gold scores (built-in task)
  labeler_ceiling: float | None = None
  valid: list | None = None  # a validation slice of the training data, when asked for


def comparison_config(config) -> cmp.ComparisonConfig:
  d = config.data
  return cmp.ComparisonConfig(
      source=d.source, format=d.format, chosen_field=d.chosen_field,
      rejected_field=d.rejected_field, prompt_field=d.prompt_field,
      responses_field=d.responses_field, ranking_field=d.ranking_field,
      scores_field=d.scores_field, margin_field=d.margin_field,
      prompt_template=d.prompt_template or None, max_len=d.max_len, truncation=d.truncation,
      train_split=d.train_split, eval_split=d.eval_split or None,
      eval_fraction=d.eval_fraction, valid_fraction=d.valid_fraction,
      max_records=d.max_records or None)


def build(config, tokenizer, workdir: str) -> RMData:
  d = config.data
  if d.source == "builtin":
    return _builtin(config, tokenizer, workdir)
  cfg = comparison_config(config)
  train, st_train = cmp.load_comparisons(cfg, tokenizer, "train")
  evals, st_eval = cmp.load_comparisons(cfg, tokenizer, "eval")
  if not train:
    raise DataError(f"data.source={d.source!r}: no usable training comparisons ({st_train})")
  if not evals:
    raise DataError(f"data.source={d.source!r}: no held-out comparisons ({st_eval}); set "
                    "data.eval_split or data.eval_fraction > 0")
  valid = None
  if d.valid_fraction > 0:
    valid, st_valid = cmp.load_comparisons(cfg, tokenizer, "valid")
    if not valid:
      raise DataError(f"data.valid_fraction={d.valid_fraction}: no validation comparisons "
                      f"({st_valid})")
  k = max(c.k for c in train + evals + (valid or []))
  summary = (f"data {d.source} ({d.format}): train {st_train}; eval {st_eval}; "
             + (f"validation {len(valid)} comparisons; " if valid else "")
             + f"K={k} responses per element; truncation policy {d.truncation!r}")
  return RMData(train, evals, k, summary, valid=valid)


# ---- the built-in task -------------------------------------------------------------------------
def _builtin(config, tokenizer, workdir: str) -> RMData:
  d = config.data
  if d.num_responses < 2:
    raise ConfigError(f"data.num_responses={d.num_responses} must be at least 2")
  cfg = dataclasses.replace(comparison_config(config), format="ranked", truncation="error")
  out, stats = {}, {}
  for split, n in (("train", d.builtin_train), ("eval", d.builtin_eval)):
    path = os.path.join(workdir, f"comparisons_{split}.jsonl")
    if not os.path.exists(path):
      sample_and_label(config, tokenizer, split, n, path)
    out[split], stats[split] = cmp.comparisons_from_records(read_records(path), tokenizer, cfg)
  k = d.num_responses
  evals = out["eval"]
  gold = np.full((len(evals), k), np.nan)
  prompts, responses, where = [], [], []
  for n, c in enumerate(evals):
    for j in range(c.k):
      prompts.append(c.prompt_ids(j))
      responses.append(c.response_ids(j))
      where.append((n, j))
  scores = bt.gold_scores(prompts, responses)
  for (n, j), s in zip(where, scores):
    gold[n, j] = s
  # The labelers' ceiling on exactly the held-out pairs: how often a default labeler sides with
  # the higher gold score (ties in gold excluded).
  pairs = [(evals[n].prompt_ids(), evals[n].response_ids(i), evals[n].response_ids(j))
           for n, c in enumerate(evals) for i in range(c.k) for j in range(i + 1, c.k)
           if gold[n, i] != gold[n, j]]
  ceiling = lab.gold_agreement(lab.Labeler(), pairs) if pairs else None
  summary = (f"built-in comparisons: {len(out['train'])} train / {len(evals)} eval prompts, "
             f"K={k} SFT samples each ranked by {d.num_labelers} simulated labelers "
             f"(train: {stats['train']}; eval: {stats['eval']})")
  return RMData(out["train"], evals, k, summary, gold, ceiling)


def _policy(config):
  """(ModelConfig, params) of the policy whose samples are compared."""
  from rlhf_jax.train import model_init  # pylint: disable=g-import-not-at-top
  workdir = config.data.policy_workdir or config.init.from_workdir
  if not workdir:
    raise ConfigError("the built-in comparisons are samples of an SFT policy: set "
                      "data.policy_workdir (or init.from_workdir) to an SFT workdir")
  if not os.path.exists(os.path.join(workdir, "model.json")):
    raise DataError(f"no SFT policy in {workdir!r}: run `python -m rlhf_jax.main "
                    f"--config=configs/sft.py --workdir={workdir}` first")
  return model_init.load_workdir_params(workdir, config, heads="lm")


def sample_responses(params, model_cfg, prompts: list[list[int]], k: int, max_new: int,
                     temperature: float, seed: int, tokenizer, chunk: int = 512):
  """k sampled responses per prompt (token lists ending at EOS when one was emitted)."""
  rows = [p for p in prompts for _ in range(k)]
  out: list[list[int]] = []
  width = max(len(p) for p in prompts)
  scfg = sampling.SamplingConfig(max_new_tokens=max_new, temperature=temperature)
  for start in range(0, len(rows), chunk):
    part = rows[start:start + chunk]
    part = part + [part[-1]] * (chunk - len(part)) if len(rows) > chunk else part
    tokens, mask = sampling.left_pad(part, tokenizer.pad_id, width)
    res = sampling.generate(params, tokens, mask, jax.random.PRNGKey(seed + start),
                            model_cfg=model_cfg, cfg=scfg, eos_id=tokenizer.eos_id,
                            pad_id=tokenizer.pad_id)
    toks, m = parallel.to_host(res["tokens"]), parallel.to_host(res["mask"])
    out.extend(toks[r][m[r]].tolist() for r in range(min(len(part), len(rows) - start)))
  return [out[i * k:(i + 1) * k] for i in range(len(prompts))]


def sample_prompts(config, tokenizer, split: str, n: int):
  """(prompts, prompt ids, responses): `data.num_responses` samples of the policy for each of n
  built-in prompts of `split` (what labelers, simulated or human, then rank)."""
  d = config.data
  model_cfg, params = _policy(config)
  prompts = bt.prompts(n, split, config.seed + 505)
  ids = [p.ids for p in prompts]
  max_new = d.max_len - max(len(x) for x in ids)
  if max_new < 4:
    raise ConfigError(f"data.max_len={d.max_len} leaves no room for responses after the "
                      "built-in prompts")
  print(f"[reward] sampling {d.num_responses} responses to {n} {split} prompts from the policy "
        f"in {d.policy_workdir or config.init.from_workdir} for labelling ...", flush=True)
  seed = config.seed + (0 if split == "train" else 10_000_000)
  responses = sample_responses(params, model_cfg, ids, d.num_responses, max_new,
                               d.sample_temperature, seed, tokenizer)
  return prompts, ids, responses


def sample_and_label(config, tokenizer, split: str, n: int, path: str) -> None:
  """Writes `path`: `data.num_responses` samples of the policy for each of n built-in prompts of
  `split`, ranked by the simulated labelers (the reward stage's data; iterated RLHF's rounds)."""
  d = config.data
  prompts, ids, responses = sample_prompts(config, tokenizer, split, n)
  labelers = lab.default_labelers(d.num_labelers, config.seed)
  rng = np.random.default_rng([config.seed, 99, split == "eval"])
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for p, pid, resp in zip(prompts, ids, responses):
      who = labelers[int(rng.integers(len(labelers)))]
      order = who.rank(pid, resp, rng)
      rec: dict[str, Any] = {
          "prompt": p.text, "responses": [tokenizer.decode(r) for r in resp], "ranking": order,
          "labeler": who.name, "prompt_ids": pid, "response_ids": resp}
      f.write(json.dumps(rec) + "\n")
  os.replace(tmp, path)  # a crash mid-write never leaves a half file that looks complete
