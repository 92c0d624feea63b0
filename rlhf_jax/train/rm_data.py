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
from typing import Any, Callable

import jax
import numpy as np

from rlhf_jax import parallel, sampling
from rlhf_jax.data import builtin_task as bt
from rlhf_jax.data import comparisons as cmp
from rlhf_jax.data import labelers as lab
from rlhf_jax.data.demonstrations import is_local, read_records
from rlhf_jax.errors import ConfigError, DataError


@dataclasses.dataclass
class HeldOut:
  """The held-out split, read once, after training."""
  comps: list  # [Comparison]
  summary: str
  gold: np.ndarray | None = None  # [N, K] gold scores (built-in task)
  labeler_ceiling: float | None = None


@dataclasses.dataclass
class RMData:
  train: list  # [Comparison]
  k: int  # responses per batch element
  summary: str
  load_eval: Callable[[], HeldOut]  # reads (or, built-in, samples) the held-out split
  valid: list | None = None  # a validation slice of the training data, when asked for
  settings: dict = dataclasses.field(default_factory=dict)  # how records become rows


# Without a validation slice, periodic evaluations read this many training comparisons.
PERIODIC_TRAIN_COMPARISONS = 512


def periodic_eval_set(data, tc):
  """(comparisons, metric prefix, what they are): the validation slice when there is one, else
  the first training comparisons (a measure of fit, not of generalisation, and named so);
  never the held-out split."""
  if data.valid:
    comps, prefix = data.valid, "valid"
    what = f"the validation slice ({{n}} comparisons)"
  else:
    comps, prefix = data.train[:PERIODIC_TRAIN_COMPARISONS], "train_slice"
    what = ("{n} training comparisons (no validation slice: data.valid_fraction=0; they "
            "measure fit, not generalisation)")
  if tc.eval_batches:
    comps = comps[:tc.eval_batches * tc.batch_size]
  return comps, prefix, what.format(n=len(comps))


def eval_batches(comps, k: int, batch_size: int, seq_len: int, pad_id: int, **pad_kw):
  """Yields (real comparisons in the batch, this process's rows of it): `comps` in fixed-shape
  batches of `batch_size` (the last one padded), what the reward and DPO stages' evaluations
  feed their compiled eval steps (one compile per K)."""
  per = batch_size // jax.process_count()
  lo = jax.process_index() * per
  for s in range(0, len(comps), batch_size):
    part = comps[s:s + batch_size]
    b = cmp.pad_comparisons(part, k, seq_len, pad_id, rows=batch_size, **pad_kw)
    yield len(part), {key: v[lo:lo + per] for key, v in b.items()}


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
  """The training (and validation) comparisons now; the held-out split only when `load_eval` is
  called, after training, so nothing before the end can read it."""
  d = config.data
  if d.source == "builtin":
    return _builtin(config, tokenizer, workdir)
  cfg = comparison_config(config)
  _check_held_out_source(cfg)
  train, st_train = cmp.load_comparisons(cfg, tokenizer, "train")
  if not train:
    raise DataError(f"data.source={d.source!r}: no usable training comparisons ({st_train})")
  valid = None
  if d.valid_fraction > 0:
    valid, st_valid = cmp.load_comparisons(cfg, tokenizer, "valid")
    if not valid:
      raise DataError(f"data.valid_fraction={d.valid_fraction}: no validation comparisons "
                      f"({st_valid})")
  k = max(c.k for c in train + (valid or []))

  def load_eval() -> HeldOut:
    evals, st_eval = cmp.load_comparisons(cfg, tokenizer, "eval")
    if not evals:
      raise DataError(f"data.source={d.source!r}: no held-out comparisons ({st_eval}); set "
                      "data.eval_split or data.eval_fraction > 0")
    where_ = cfg.eval_split or f"{cfg.eval_fraction:g} of the source by hash"
    return HeldOut(evals, f"held-out split ({where_}): {st_eval}")

  summary = (f"data {d.source} ({d.format}): train {st_train}; "
             + (f"validation {len(valid)} comparisons; " if valid else "")
             + f"K={k} responses per element; truncation policy {d.truncation!r}; the held-out "
             "split is read once, after training")
  settings = {key: getattr(cfg, key) for key in cmp.ROW_SETTINGS}
  return RMData(train, k, summary, load_eval, valid=valid, settings=settings)


def _check_held_out_source(cfg: cmp.ComparisonConfig) -> None:
  """Fails at the start (not after training) when there can be no held-out split."""
  if cfg.eval_split:
    if is_local(cfg.source) and is_local(cfg.eval_split) and not os.path.exists(cfg.eval_split):
      raise DataError(f"data.eval_split={cfg.eval_split!r} does not exist")
  elif cfg.eval_fraction <= 0:
    raise ConfigError("no held-out split: set data.eval_split (a separate test file) or "
                      "data.eval_fraction > 0")


# ---- the built-in task -------------------------------------------------------------------------
def _builtin(config, tokenizer, workdir: str) -> RMData:
  d = config.data
  if d.num_responses < 2:
    raise ConfigError(f"data.num_responses={d.num_responses} must be at least 2")
  cfg = dataclasses.replace(comparison_config(config), format="ranked", truncation="error")

  def read(split, n):
    path = os.path.join(workdir, f"comparisons_{split}.jsonl")
    settings = _sampling_settings(config, n)
    if not os.path.exists(path):
      sample_and_label(config, tokenizer, split, n, path)
      if jax.process_index() == 0:
        with open(_settings_path(path), "w", encoding="utf-8") as f:
          json.dump(settings, f, indent=1)
    else:
      _check_settings(path, settings)
    return cmp.comparisons_from_records(read_records(path), tokenizer, cfg)

  train, st_train = read("train", d.builtin_train)
  summary = (f"built-in comparisons: {len(train)} train prompts, K={d.num_responses} SFT samples "
             f"each ranked by {d.num_labelers} simulated labelers (train: {st_train}); the "
             f"{d.builtin_eval} held-out prompts are sampled and read once, after training")
  settings = {key: getattr(cfg, key) for key in cmp.ROW_SETTINGS}
  return RMData(train, d.num_responses, summary,
                lambda: _builtin_held_out(read("eval", d.builtin_eval), d.num_responses,
                                          d.num_labelers),
                settings=settings)


def _builtin_held_out(read_out, k: int, num_labelers: int) -> HeldOut:
  """The held-out SFT samples with their gold scores and the labelers' ceiling on them."""
  evals, st_eval = read_out
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
  summary = (f"built-in held-out comparisons: {len(evals)} prompts, K={k} SFT samples each "
             f"ranked by one of {num_labelers} simulated labelers ({st_eval})")
  return HeldOut(evals, summary, gold, ceiling)


def _sampling_settings(config, n: int) -> dict:
  """What decides a built-in comparison file's contents (saved beside it, checked on reuse)."""
  d = config.data
  return {"prompts": n, "seed": config.seed, "num_responses": d.num_responses,
          "num_labelers": d.num_labelers, "max_len": d.max_len,
          "sample_temperature": d.sample_temperature,
          "policy_workdir": os.path.abspath(d.policy_workdir or config.init.from_workdir)}


def _settings_path(path: str) -> str:
  return path[:-len(".jsonl")] + ".settings.json"


def _check_settings(path: str, now: dict) -> None:
  """ConfigError when the reused comparison file `path` was made with other settings."""
  if not os.path.exists(_settings_path(path)):
    return  # written before settings were recorded: nothing to compare with
  with open(_settings_path(path), encoding="utf-8") as f:
    then = json.load(f)
  diff = [f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(then) | set(now))
          if then.get(k) != now.get(k)]
  if diff:
    raise ConfigError(f"{path} was made with other settings than this run's "
                      f"({'; '.join(diff)}); delete it (and its .settings.json) to sample new "
                      "comparisons, or use another workdir")


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
                     temperature: float, seed: int, tokenizer, mesh, rules, chunk: int = 512):
  """k sampled responses per prompt (token lists ending at EOS when one was emitted), on the mesh.

  The k·len(prompts) prompt-major rows go in chunks of `chunk` rows (all of them at once when
  fewer), each rounded up to divide over the mesh's batch axes; chunk `start` (its first row) is
  sampled with key PRNGKey(seed + start)."""
  rows = [p for p in prompts for _ in range(k)]
  div = parallel.batch_divisor(mesh, rules)
  batch = -(-min(chunk, len(rows)) // div) * div
  scfg = sampling.SamplingConfig(max_new_tokens=max_new, temperature=temperature)
  out: list[list[int]] = []
  for smp in sampling.sample_chunks(sampling.generator(model_cfg, scfg, tokenizer.eos_id,
                                                       tokenizer.pad_id), params, rows,
                                    lambda start: jax.random.PRNGKey(seed + start),
                                    batch_size=batch, pad_id=tokenizer.pad_id,
                                    width=max(len(p) for p in prompts), mesh=mesh, rules=rules):
    out.extend(smp.response_ids(r) for r in range(smp.rows))
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
                               d.sample_temperature, seed, tokenizer,
                               parallel.make_mesh(dict(config.mesh)),
                               parallel.rules_from_config(config.sharding_rules))
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
