"""Best-of-n: sample n responses per prompt, keep the one the reward model scores highest.

The classic baseline of RLHF evaluations: it needs no training, and it shows how far the reward
model alone can lift the true objective at a given KL to the sampling policy. `run` samples
max(ns) responses for each held-out prompt from one policy (the SFT workdir by default), scores
them with the reward model(s) exactly as the RL stage does, and for each n in `best_of_n.ns`
keeps the best of the first n samples of every prompt. It reports the mean RM score, the mean
gold score on the built-in task and two KLs of best-of-n to the sampling policy:
  kl_upper_bound  log n − (n − 1)/n (Stiennon et al. 2020's formula). Beirami et al. 2024
                  ("Theoretical guarantees on the best-of-n alignment policy") show it is an upper
                  bound, reached only when no response has appreciable probability; it is loose
                  when samples repeat.
  kl_estimate     the plug-in estimate, per prompt the exact KL of best-of-n under the empirical
                  distribution of the prompt's max(ns) samples (`kl_of_best_of_n` on their
                  distinct responses and frequencies), averaged over prompts; see
                  docs/best_of_n.md for what it assumes and its bias.
It prints a table and writes `best_of_n.json` and `best_of_n.jsonl` (the best response of each
prompt at the largest n, as prompt/response records) and `best_of_n_samples.jsonl` (every
sample with its token ids and scores: the data of offline RL, `configs/ilql.py`). With `best_of_n.prompts="train"` it
samples the RL training prompts instead: the data of rejection-sampling fine-tuning, Llama 2's
"RS" step, which `configs/sft.py:rejection_sampling` fine-tunes the SFT policy on
(`configs/best_of_n.py:train` writes it where that preset reads it).
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

from rlhf_jax import parallel, sampling
from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError
from rlhf_jax.reward import model as rm_model
from rlhf_jax.rl.rollout import sequence_scores
from rlhf_jax.train import model_init, rl_data

RESULT_FILE = "best_of_n.json"
SAMPLES_FILE = "best_of_n.jsonl"
ALL_SAMPLES_FILE = "best_of_n_samples.jsonl"  # every sample with its scores: ILQL's data


def kl_upper_bound(n: int) -> float:
  """Nats: log n − (n − 1)/n, an upper bound on KL(best-of-n ‖ π) for any π (Beirami et al.
  2024); the KL itself when every response has vanishing probability."""
  return math.log(n) - (n - 1) / n


def best_of_n_probs(probs_K: np.ndarray, scores_K: np.ndarray, n: int) -> np.ndarray:
  """float64[K]: the best-of-n distribution over K distinct outcomes of probabilities probs_K and
  scores scores_K. The outcomes tied at a score s get P(max of n scores = s) = F(s)^n − F(<s)^n,
  shared in proportion to π (`pick` keeps the first sample among tied maxima, and each sample is
  any outcome of that score in proportion to π)."""
  p = np.asarray(probs_K, np.float64)
  s = np.asarray(scores_K, np.float64)
  at_most = np.array([p[s <= x].sum() for x in s])  # F(s_k)
  tied = np.array([p[s == x].sum() for x in s])  # π of the outcomes tied with k
  return (at_most ** n - (at_most - tied) ** n) * p / tied


def kl_of_best_of_n(probs_K, scores_K, n: int) -> float:
  """Nats: KL(best-of-n ‖ π) exactly, for π a distribution over K distinct outcomes."""
  p = np.asarray(probs_K, np.float64)
  q = best_of_n_probs(p, scores_K, n)
  live = q > 0
  return float(np.sum(q[live] * np.log(q[live] / p[live])))


def kl_estimate(keys_PxM, scores_PxM: np.ndarray, n: int) -> float:
  """Nats: the mean over prompts of `kl_of_best_of_n` under the empirical distribution of each
  prompt's M samples (keys_PxM: any hashable per sample, equal for equal responses)."""
  kls = []
  for keys, scores in zip(keys_PxM, scores_PxM):
    first = {}
    for k, sc in zip(keys, scores):
      first.setdefault(k, [sc, 0])[1] += 1
    sc = np.array([v[0] for v in first.values()])
    counts = np.array([v[1] for v in first.values()], np.float64)
    kls.append(kl_of_best_of_n(counts / counts.sum(), sc, n))
  return float(np.mean(kls))


def parse_ns(text) -> list[int]:
  try:
    ns = sorted({int(x) for x in str(text).split(",") if x.strip()})
  except ValueError:
    raise ConfigError(f"best_of_n.ns={text!r}: expected integers separated by commas") from None
  if not ns or ns[0] < 1:
    raise ConfigError(f"best_of_n.ns={text!r}: expected positive integers")
  return ns


def pick(rm_scores_PxN: np.ndarray, n: int) -> np.ndarray:
  """int[P]: for each prompt, the index of the highest-scored of its first n samples."""
  return np.argmax(rm_scores_PxN[:, :n], axis=1)


def sample_and_score(params, model_cfg, tokenizer, prompts: list[list[int]], n_max: int, scfg,
                     width: int, prompts_per_call: int, seed: int, models, rule, gold_fn, mesh,
                     rules):
  """(RM scores [P, n_max], gold scores [P, n_max] or None, response token tuples [P][n_max],
  response texts [P·n_max]): n_max samples of each prompt, prompt-major rows. Chunks of
  `prompts_per_call` prompts, the one starting at prompt s sampled with key PRNGKey(seed + s)."""
  pad = tokenizer.pad_id
  rm_params = [m.params for m in models]
  score = jax.jit(lambda ps, t, m: sequence_scores(models, rule, ps, t, m)[0])
  rows = [p for p in prompts for _ in range(n_max)]  # prompt-major: row = prompt·n + k
  rm_all, gold_all, keys = [], [], []
  with jax.set_mesh(mesh):
    for smp in sampling.sample_chunks(
        sampling.generator(model_cfg, scfg, tokenizer.eos_id, pad), params, rows,
        lambda start: jax.random.PRNGKey(seed + start // n_max),
        batch_size=prompts_per_call * n_max, pad_id=pad, width=width, mesh=mesh, rules=rules):
      rm = parallel.to_host(score(rm_params, *smp.rows_on_mesh()))
      rm_all.append(rm[:smp.rows].reshape(-1, n_max))
      if gold_fn is not None:
        g = gold_fn(np.where(smp.prompt_mask_BxP, smp.prompt_BxP, pad),
                    np.where(smp.mask_BxN, smp.tokens_BxN, pad))
        gold_all.append(np.asarray(g)[:smp.rows].reshape(-1, n_max))
      keys += [tuple(smp.response_ids(i)) for i in range(smp.rows)]
  texts = [tokenizer.decode(list(x)) for x in keys]
  keys_pn = [keys[i:i + n_max] for i in range(0, len(keys), n_max)]
  return (np.concatenate(rm_all), np.concatenate(gold_all) if gold_all else None, keys_pn,
          texts)


def best_of_n_results(rm_pn: np.ndarray, gold_pn, keys_pn, ns: list[int]) -> dict:
  """{str(n): KL bound and estimate, mean RM (and gold) score of the best of the first n}."""
  results = {}
  for n in ns:
    idx = pick(rm_pn, n)
    rows_ = np.arange(len(idx))
    r = {"n": n, "kl_upper_bound": kl_upper_bound(n),
         "kl_estimate": kl_estimate(keys_pn, rm_pn, n),
         "rm_score": float(rm_pn[rows_, idx].mean()), "prompts": int(len(idx))}
    if gold_pn is not None:
      g = gold_pn[rows_, idx]
      r.update(gold=float(g.mean()), gold_std=float(g.std()))
    results[str(n)] = r
  return results


def run(config, workdir: str) -> dict:
  if config.stage != "best_of_n":
    raise ConfigError(f"stage={config.stage!r}: this loop runs 'best_of_n'")
  model_init.require_source(
      config, "best_of_n: set init.from_workdir (the policy to sample) or init.hf_checkpoint")
  b = config.best_of_n
  ns = parse_ns(b.ns)
  n_max = ns[-1]
  tokenizer = lm_data.load_tokenizer(config)
  model_cfg, params = model_init.build(config, tokenizer, heads="lm")
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  models, rule = rm_model.load_reward_models(config.reward, config)
  rm_model.check_tokenizers(models, lm_data.tokenizer_spec(config))
  data = rl_data.build(config, tokenizer)
  if b.prompts not in ("eval", "train"):
    raise ConfigError(f"best_of_n.prompts={b.prompts!r} must be 'eval' (held-out: the "
                      "evaluation) or 'train' (rejection-sampling fine-tuning data)")
  split = "held-out" if b.prompts == "eval" else "training"
  prompts = (data.eval_prompts if b.prompts == "eval" else
             data.train_prompts)[:b.num_prompts or None]
  rows = b.prompts_per_call * n_max
  if rows % parallel.batch_divisor(mesh, rules):
    raise ConfigError(f"best_of_n.prompts_per_call={b.prompts_per_call} x {n_max} samples does "
                      f"not divide over the mesh's batch axes ({dict(mesh.shape)})")
  width = config.data.max_prompt_len
  if width + b.max_new_tokens > model_cfg.max_seq_len:
    raise ConfigError(f"data.max_prompt_len={width} + best_of_n.max_new_tokens="
                      f"{b.max_new_tokens} exceeds the model's max_seq_len="
                      f"{model_cfg.max_seq_len}")
  scfg = sampling.SamplingConfig(max_new_tokens=b.max_new_tokens, temperature=b.temperature)
  rm_pn, gold_pn, keys_pn, texts = sample_and_score(
      params, model_cfg, tokenizer, prompts, n_max, scfg, width, b.prompts_per_call,
      config.seed, models, rule, data.gold_fn, mesh, rules)
  results = best_of_n_results(rm_pn, gold_pn, keys_pn, ns)
  best = pick(rm_pn, n_max)
  lines = [f"[best_of_n] {len(prompts)} {split} prompts, {n_max} samples each at temperature "
           f"{b.temperature}, from {config.init.from_workdir or config.init.hf_checkpoint}:",
           f"  {'n':>4} {'KL bound':>10} {'KL est.':>10} {'RM score':>10}" + (
               f" {'gold':>8}" if gold_pn is not None else ""),
           "  (KL in nats: the upper bound log n − (n−1)/n, and the plug-in estimate over each "
           f"prompt's {n_max} samples)"]
  for r in results.values():
    lines.append(f"  {r['n']:>4} {r['kl_upper_bound']:>10.3f} {r['kl_estimate']:>10.3f} "
                 f"{r['rm_score']:>10.3f}" +
                 (f" {r['gold']:>8.3f}" if "gold" in r else ""))
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, RESULT_FILE), "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)
    with open(os.path.join(workdir, SAMPLES_FILE), "w", encoding="utf-8") as f:
      for i, p in enumerate(prompts):
        f.write(json.dumps({"prompt": tokenizer.decode(p),
                            "response": texts[i * n_max + int(best[i])],
                            "rm_score": float(rm_pn[i, best[i]])}) + "\n")
    write_all_samples(os.path.join(workdir, ALL_SAMPLES_FILE), tokenizer, prompts, keys_pn,
                      texts, rm_pn, gold_pn)
    for line in lines:
      print(line, flush=True)
  return {"results": results}


def write_all_samples(path: str, tokenizer, prompts, keys_pn, texts, rm_pn, gold_pn) -> None:
  """One JSON line per sample, prompt-major: prompt and response as text and as token ids
  (read back exactly by `rlhf_jax.data.scored`), the RM score and, on the built-in task, the
  gold score."""
  n = rm_pn.shape[1]
  with open(path, "w", encoding="utf-8") as f:
    for i, p in enumerate(prompts):
      text = tokenizer.decode(p)
      for k in range(n):
        rec = {"prompt": text, "response": texts[i * n + k], "prompt_ids": [int(t) for t in p],
               "response_ids": list(keys_pn[i][k]), "rm_score": float(rm_pn[i, k])}
        if gold_pn is not None:
          rec["gold"] = float(gold_pn[i, k])
        f.write(json.dumps(rec) + "\n")
