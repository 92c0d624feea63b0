"""What an RL run reports: each iteration's rollout figures, the held-out evaluation, and the
SFT-vs-RL table of the end.

`rollout_stats` reads the scored rollout of an iteration; `evaluate` samples the held-out
prompts with the rollouts' settings and a fixed key and scores only what it reports (RM score,
KL, length, EOS rate, gold: `RLFunctions.evaluate`); `final_report` writes `summary.json`, the
table and `rl_curves.png`.
Not for: sampling or updating the policy (`rl_stage.py`).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlhf_jax import parallel, sampling
from rlhf_jax.errors import DataError, NonFiniteError
from rlhf_jax.reward import pass_at_k
from rlhf_jax.reward.function_runner import function_stats

SUMMARY_FILE = "summary.json"
PLOT_FILE = "rl_curves.png"
SFT_EVAL_FILE = "eval_sft.json"  # the iteration-0 evaluation, read back by the final report


def rollout_stats(cfg, ro: dict, gold, rmask_BxN: np.ndarray) -> tuple[dict, np.ndarray]:
  """(an iteration's rollout metrics, the KL [B] the controller reads): RM score, score, KL
  (per sequence and per token), length, EOS rate, the sampler-vs-trainer log-prob gap, gold."""
  h = {k: parallel.to_host(ro[k]) for k in ("rm_score", "score", "kl_seq", "kl_k1_seq",
                                            "has_eos")}
  lengths = rmask_BxN.sum(axis=1)
  out = {"rm_score": h["rm_score"].mean(), "score": h["score"].mean(),
         "kl": h["kl_k1_seq"].mean(),
         "kl_per_token": h["kl_k1_seq"].sum() / max(lengths.sum(), 1),
         "length": lengths.mean(), "eos_rate": h["has_eos"].mean()}
  if cfg.kl_estimator != "k1":
    out[f"kl_{cfg.kl_estimator}"] = h["kl_seq"].mean()
  for k in ("logprob_diff_mean", "logprob_diff_max"):  # sampler vs teacher-forced policy
    out[k] = float(parallel.to_host(ro[k]))
  if gold is not None:
    out["gold"] = float(np.mean(gold))
    out["gold_std"] = float(np.std(gold))
  return out, h["kl_seq"]


def _eval_columns(run, st, smp: sampling.Samples, metas: list[dict], what: str) -> dict:
  """{column: [n]} of one held-out batch's n real rows: RM score (combined with the reward
  functions'), KL, EOS, length, gold, and each reward function's score ("fn_<name>")."""
  dev = smp.on_mesh
  fn_dev, fn_host = run.function_scores(smp, metas, what)
  ev = run.fns.evaluate(st.params, run.reference(st), run.rm_params, dev["prompt"],
                        dev["prompt_mask"], dev["tokens"], dev["mask"], fn_dev)
  col = {k: parallel.to_host(ev[k]) for k in ("rm_score", "kl_k1_seq", "has_eos")}
  col["length"] = smp.mask_BxN.sum(axis=1)
  col.update({f"fn_{name}": v for name, v in fn_host.items()})
  gold = run.gold(smp)
  if gold is not None:
    col["gold"] = np.asarray(gold)
  return {k: v[:smp.rows] for k, v in col.items()}


def _chunk_meta(metas: list[dict], start: int, batch: int) -> list[dict]:
  """The metadata of a sampled chunk's `batch` rows from `start`, the filler rows repeating
  the last real one (as `sampling.sample_chunks` repeats its prompt)."""
  part = metas[start:start + batch]
  return part + [part[-1]] * (batch - len(part))


def _show(run, smp: sampling.Samples, col: dict) -> list[str]:
  """The first train.num_samples held-out answers as console lines."""
  tok = run.tokenizer
  lines = []
  for i in range(min(run.config.train.num_samples, smp.rows)):
    prompt = run.data.eval_prompts[smp.start + i]
    g = f" gold {col['gold'][i]:+.2f}" if "gold" in col else ""
    lines.append(f"  sample {i}: {tok.decode(prompt)!r} -> {tok.decode(smp.response_ids(i))!r}"
                 f"  [RM {col['rm_score'][i]:+.2f}{g}]")
  return lines


def evaluate(run, st) -> dict:
  """Held-out prompts, same sampling settings as the rollouts, a fixed sampling key: the mean
  (and std) RM score, KL to the reference, length, EOS rate and gold score; each reward
  function's mean and firing rate; and pass@k (`evaluate_pass`) when reward.pass_n > 0."""
  eval_key = jax.random.PRNGKey(run.config.seed + 2024)
  cols, shown = [], []
  metas = run.data.eval_meta or [{} for _ in run.data.eval_prompts]
  b = run.cfg.rollout_batch
  for smp in sampling.sample_chunks(run.fns.generate, st.params, run.data.eval_prompts,
                                    lambda s: jax.random.fold_in(eval_key, s),
                                    batch_size=b, pad_id=run.tokenizer.pad_id,
                                    width=run.config.data.max_prompt_len, mesh=run.mesh,
                                    rules=run.rules):
    cols.append(_eval_columns(run, st, smp, _chunk_meta(metas, smp.start, b),
                              f"held-out prompts from {smp.start}"))
    if smp.start == 0:
      shown = _show(run, smp, cols[-1])
  cat = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
  ev = {"eval_rm_score": cat["rm_score"].mean(), "eval_rm_score_std": cat["rm_score"].std(),
        "eval_kl": cat["kl_k1_seq"].mean(), "eval_length": cat["length"].mean(),
        "eval_eos_rate": cat["has_eos"].mean(), "eval_prompts": len(cat["length"])}
  if "gold" in cat:
    ev.update(eval_gold=cat["gold"].mean(), eval_gold_std=cat["gold"].std())
  ev.update(function_stats({k[3:]: v for k, v in cat.items() if k.startswith("fn_")}, "eval_"))
  ev.update(evaluate_pass(run, st))
  for line in shown:
    run.writer.text(line)
  return {k: float(v) for k, v in ev.items()}


def evaluate_pass(run, st) -> dict:
  """{"eval_pass@k": ...} for each k of reward.pass_k: reward.pass_n samples of each of the first
  reward.pass_prompts held-out prompts (all when 0), right when the check function
  (reward.check, default the first reward function) scores them above 0; {} when pass_n is 0."""
  r = run.config.reward
  if not r.get("pass_n", 0):
    return {}
  n = int(r.pass_n)
  ks = pass_at_k.parse_ks(r.pass_k, n)
  count = r.pass_prompts or len(run.data.eval_prompts)
  prompts = [p for p in run.data.eval_prompts[:count] for _ in range(n)]
  metas = [m for m in (run.data.eval_meta or [{}] * count)[:count] for _ in range(n)]
  check = run.checker
  key = jax.random.PRNGKey(run.config.seed + 4049)
  b, right = run.cfg.rollout_batch, []
  for smp in sampling.sample_chunks(run.fns.generate, st.params, prompts,
                                    lambda s: jax.random.fold_in(key, s), batch_size=b,
                                    pad_id=run.tokenizer.pad_id,
                                    width=run.config.data.max_prompt_len, mesh=run.mesh,
                                    rules=run.rules):
    _, host = run.function_scores(smp, _chunk_meta(metas, smp.start, b),
                                  f"pass@k samples from {smp.start}", scorer=check)
    right.append(next(iter(host.values()))[:smp.rows] > 0)
  table = np.concatenate(right).reshape(-1, n)
  out = {f"eval_pass@{k}": v for k, v in pass_at_k.mean_pass_at_k(table, ks).items()}
  out["eval_pass_n"] = n
  return out


def evaluate_start(run, st) -> None:
  """Iteration 0: the starting (SFT) policy's evaluation, logged and kept for the final table."""
  run.writer.text(f"[{run.stage}] held-out evaluation of the starting (SFT) policy:")
  sft_eval = run.writer.write(0, evaluate(run, st))
  if jax.process_index() == 0:
    with open(os.path.join(run.workdir, SFT_EVAL_FILE), "w", encoding="utf-8") as f:
      json.dump(sft_eval, f, indent=1)


def _read_sft_eval(sft_path: str) -> dict:
  if not os.path.exists(sft_path):
    raise DataError(f"{sft_path} is missing: the iteration-0 evaluation of the SFT policy")
  with open(sft_path, encoding="utf-8") as f:
    return json.load(f)


def _table(stage: str, sft: dict, final: dict, it: int, cfg) -> list[str]:
  """The SFT-vs-RL lines of the held-out evaluations."""
  rows = [("gold score (mean)", "eval_gold"), ("gold score (std)", "eval_gold_std"),
          ("reward (RM, functions combined)", "eval_rm_score"),
          ("KL to the reference (nats/seq)", "eval_kl"),
          ("response length (tokens)", "eval_length"), ("EOS rate", "eval_eos_rate")]
  name = stage.upper()
  lines = [f"[{stage}] held-out prompts ({int(final.get('eval_prompts', 0))}), sampled at "
           f"temperature {cfg.temperature}:",
           f"  {'':<32}{'SFT (reference)':>18}{name + f' (iteration {it})':>26}"]
  rows += [(f"pass@{k[len('eval_pass@'):]} ({cfg_n(sft)} samples/prompt)", k)
           for k in sorted((k for k in final if k.startswith("eval_pass@")), key=_k_order)]
  rows += [(f"{k[len('eval_fn_'):-len('_rate')]}: firing rate" if k.endswith("_rate")
            else f"{k[len('eval_fn_'):]}: mean", k)
           for k in sorted(final) if k.startswith("eval_fn_")]
  for label, key in rows:
    if key in sft and key in final:
      lines.append(f"  {label:<32}{sft[key]:>18.3f}{final[key]:>26.3f}")
  return lines


def cfg_n(ev: dict) -> str:
  """The pass@k sample count an evaluation recorded ("?" for one without)."""
  return str(int(ev["eval_pass_n"])) if "eval_pass_n" in ev else "?"


def _k_order(key: str) -> int:
  return int(key.rsplit("@", 1)[1])


def final_report(stage, workdir, sft_path, final, it, cfg, writer) -> dict:
  """The summary (SFT and final evaluations, the gold gain in SFT standard deviations), printed
  as a table and written to summary.json with the curves' plot."""
  sft = _read_sft_eval(sft_path)
  bad = sorted(k for d in (sft, final) for k, v in d.items() if not np.isfinite(v))
  if bad:
    raise NonFiniteError(f"[{stage}] the held-out evaluation holds NaN/Inf ({', '.join(bad)}): "
                         "no SFT-vs-RL table or gain is reported from it")
  lines = _table(stage, sft, final, it, cfg)
  summary = {"sft": sft, "final": final, "iteration": it, "samples": it * cfg.rollout_batch}
  if "eval_gold" in sft:
    gain = (final["eval_gold"] - sft["eval_gold"]) / max(sft["eval_gold_std"], 1e-9)
    summary["gold_gain_in_sft_std"] = gain
    lines.append(f"  gold score gain: {gain:+.2f} standard deviations of the SFT policy's gold "
                 f"scores; KL {final['eval_kl']:.2f} nats (controller target "
                 f"{cfg.kl_target if cfg.adaptive_kl else 'none, fixed β'})")
  for line in lines:
    writer.text(line)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, SUMMARY_FILE), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)
    from rlhf_jax import plots  # pylint: disable=g-import-not-at-top
    path = plots.rl_curves(os.path.join(workdir, "metrics.jsonl"), stage,
                           os.path.join(workdir, PLOT_FILE))
    if path:
      writer.text(f"[{stage}] plot: {path}")
  return summary
