"""Policies side by side on held-out prompts: KL to the first one (the reference), length and
EOS rate, the gold score on the built-in task and the reward model's score where one is given,
sampled and scored exactly as the RL stage evaluates.

Used by the stages that end with a policy but have no rollouts of their own: DPO, and SFT when
its config has an `eval_policy` section (rejection-sampling fine-tuning). Results go to
`eval_policy.json` in the stage's workdir, which `python -m rlhf_jax.compare` reads. The
`python -m rlhf_jax.evaluate` command puts any workdirs' policies side by side with it.
Not for: the RL stage's own per-iteration evaluation (`train/rl_stage.py`).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlhf_jax import parallel, sampling
from rlhf_jax.data import builtin_task
from rlhf_jax.rl.rollout import response_outputs, sequence_scores
from rlhf_jax.train import rl_data

POLICY_EVAL_FILE = "eval_policy.json"


def evaluate_policies(config, model_cfg, tokenizer, mesh, rules, policies: dict, *,
                      prompts=None, gold_fn=None, reward=None, keep: int = 0,
                      samplers=None) -> dict:
  """{name: {"kl", "length", "eos_rate", "prompts", ...}} of each policy on held-out prompts,
  sampled with `config.eval_policy`'s settings and the RL stage's evaluation keys, so a policy
  gets the answers the RL stage's held-out evaluation would give it. The KL is to the first
  policy (the reference): summed k1 over the response at the sampling temperature, as the RL
  stage reports it.

  prompts: token-id lists; by default the built-in task's held-out RL prompts with its gold
  score. gold_fn(prompt_BxP, response_BxN) -> [B] adds "gold" and "gold_std". reward:
  (reward_models, rule) adds "rm_score" and "rm_score_std", the combined normalised score the
  RL stage reports. keep: the first `keep` responses of each policy come back as text under
  "answers". samplers: {name: generate_fn} for policies sampled by their own generate
  function (`sampling.generator` with a logits hook: ILQL's shaped decoding); their params are
  what that function reads, and their log-probs in the KL are the sampler's own (at the
  sampling temperature, before any top-k filter), not a teacher-forced pass of a plain LM."""
  e = config.eval_policy
  if prompts is None:
    prompts = rl_data.builtin_prompts(e.prompts, "eval", config.seed)
    gold_fn = builtin_task.gold_scores
  eval_key = jax.random.PRNGKey(config.seed + 2024)  # the RL stage's
  ref = next(iter(policies.values()))
  scfg = sampling.SamplingConfig(max_new_tokens=e.max_new_tokens, temperature=e.temperature)
  logps = jax.jit(lambda params, tokens, mask, width: response_outputs(
      model_cfg, params, tokens, mask, width, e.temperature)["logprobs"], static_argnums=3)
  rm_score = None
  if reward is not None:
    models, rule = reward
    rm_params = [m.params for m in models]
    score = jax.jit(lambda ps, t, m: sequence_scores(models, rule, ps, t, m)[0])
    rm_score = lambda t, m: parallel.to_host(score(rm_params, t, m))  # noqa: E731
  pad = tokenizer.pad_id
  generate_fn = sampling.generator(model_cfg, scfg, tokenizer.eos_id, pad)

  samplers = samplers or {}

  def columns(smp: sampling.Samples, params, own_sampler: bool):
    """One batch of one policy: {column: [n]} of its n real rows."""
    full_t, full_m = smp.rows_on_mesh()
    width = smp.prompt_BxP.shape[1]
    rp = parallel.to_host(logps(ref, full_t, full_m, width))
    if own_sampler:
      lp = smp.logprobs_BxN
    else:
      lp = rp if params is ref else parallel.to_host(logps(params, full_t, full_m, width))
    resp, rmask = smp.tokens_BxN, smp.mask_BxN
    col = {"kl": np.where(rmask, lp - rp, 0.0).sum(axis=1), "length": rmask.sum(axis=1),
           "eos": np.any(rmask & (resp == tokenizer.eos_id), axis=1)}
    if gold_fn is not None:
      col["gold"] = np.asarray(gold_fn(np.where(smp.prompt_mask_BxP, smp.prompt_BxP, pad),
                                       np.where(rmask, resp, pad)))
    if rm_score is not None:
      col["rm_score"] = rm_score(full_t, full_m)
    return {k: v[:smp.rows] for k, v in col.items()}

  out = {}
  with jax.set_mesh(mesh):
    for name, params in policies.items():
      cols, responses = [], []
      for smp in sampling.sample_chunks(samplers.get(name, generate_fn), params, prompts,
                                        lambda start: jax.random.fold_in(eval_key, start),
                                        batch_size=e.batch_size, pad_id=pad,
                                        width=e.max_prompt_len, mesh=mesh, rules=rules):
        cols.append(columns(smp, params, name in samplers))
        wanted = min(max(keep - len(responses), 0), smp.rows)
        responses += [smp.response_ids(i) for i in range(wanted)]
      answers = [tokenizer.decode(r) for r in responses]
      out[name] = _summarise({k: np.concatenate([c[k] for c in cols]) for k in cols[0]}, answers)
  return out


def _summarise(cols: dict, answers: list) -> dict:
  res = {"kl": float(cols["kl"].mean()), "length": float(cols["length"].mean()),
         "eos_rate": float(cols["eos"].mean()), "prompts": len(cols["kl"])}
  for key in ("gold", "rm_score"):
    if key in cols:
      res[key], res[f"{key}_std"] = float(cols[key].mean()), float(cols[key].std())
  if answers:
    res["answers"] = answers
  return res


_ROWS = (("gold score (mean)", "gold"), ("gold score (std)", "gold_std"),
         ("RM score, normalised (mean)", "rm_score"), ("RM score, normalised (std)", "rm_score_std"),
         ("KL to the reference (nats)", "kl"), ("response length", "length"),
         ("EOS rate", "eos_rate"))


def format_policy_table(res: dict, stage: str) -> list[str]:
  names = list(res)
  first = res[names[0]]
  lines = [f"[{stage}] held-out prompts ({first['prompts']}):",
           f"  {'':<30}" + "".join(f"{n:>20}" for n in names)]
  for label, key in _ROWS:
    if key in first:
      lines.append(f"  {label:<30}" + "".join(f"{res[n][key]:>20.3f}" for n in names))
  return lines


def write(workdir: str, res: dict, stage: str, writer) -> None:
  """Prints the table and writes `eval_policy.json` (process 0)."""
  for line in format_policy_table(res, stage):
    writer.text(line)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, POLICY_EVAL_FILE), "w", encoding="utf-8") as f:
      json.dump(res, f, indent=1)
