"""Policies side by side on the built-in task's held-out RL prompts: gold score, KL to the first
one (the reference), length and EOS rate, sampled and scored exactly as the RL stage evaluates.

Used by the stages that end with a policy but have no rollouts of their own: DPO, and SFT when
its config has an `eval_policy` section (rejection-sampling fine-tuning). Results go to
`eval_policy.json` in the stage's workdir, which `python -m rlhf_jax.compare` reads.
Not for: the RL stage's own per-iteration evaluation (`train/rl_stage.py`).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import parallel, sampling
from rlhf_jax.data import builtin_task
from rlhf_jax.rl.rollout import response_outputs
from rlhf_jax.train import rl_data

POLICY_EVAL_FILE = "eval_policy.json"


def evaluate_policies(config, model_cfg, tokenizer, mesh, rules, policies: dict) -> dict:
  """{name: {"gold", "gold_std", "kl", "length", "eos_rate", "prompts"}} of each policy on the
  built-in task's held-out RL prompts; the KL is to the first policy (the reference), summed k1
  over the response at the sampling temperature, as the RL stage reports it."""
  e = config.eval_policy
  prompts = rl_data.builtin_prompts(e.prompts, "eval", config.seed)
  ref = next(iter(policies.values()))
  scfg = sampling.SamplingConfig(max_new_tokens=e.max_new_tokens, temperature=e.temperature)

  def logps(params, tokens, mask, width):
    return response_outputs(model_cfg, params, tokens, mask, width, e.temperature)["logprobs"]

  logps_jit = jax.jit(logps, static_argnums=3)
  out = {}
  with jax.set_mesh(mesh):
    for name, params in policies.items():
      gold, kl, length, eos = [], [], [], []
      for s in range(0, len(prompts), e.batch_size):
        part = prompts[s:s + e.batch_size]
        padded = part + [part[-1]] * (e.batch_size - len(part))
        tok, mask = sampling.left_pad(padded, tokenizer.pad_id, e.max_prompt_len)
        dev = parallel.put_batch({"t": tok, "m": mask}, mesh, rules)
        gen = sampling.generate(params, dev["t"], dev["m"],
                                jax.random.PRNGKey(config.seed + 2024 + s), model_cfg=model_cfg,
                                cfg=scfg, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
        full_t = jnp.concatenate([dev["t"], gen["tokens"]], axis=1)
        full_m = jnp.concatenate([dev["m"], gen["mask"]], axis=1)
        rp = parallel.to_host(logps_jit(ref, full_t, full_m, tok.shape[1]))
        lp = rp if params is ref else parallel.to_host(
            logps_jit(params, full_t, full_m, tok.shape[1]))
        resp, rmask = parallel.to_host(gen["tokens"]), parallel.to_host(gen["mask"])
        n = len(part)
        g = builtin_task.gold_scores(np.where(mask, tok, tokenizer.pad_id),
                                     np.where(rmask, resp, tokenizer.pad_id))
        gold.append(np.asarray(g)[:n])
        kl.append(np.where(rmask, lp - rp, 0.0).sum(axis=1)[:n])
        length.append(rmask.sum(axis=1)[:n])
        eos.append(np.any(rmask & (resp == tokenizer.eos_id), axis=1)[:n])
      g = np.concatenate(gold)
      out[name] = {"gold": float(g.mean()), "gold_std": float(g.std()),
                   "kl": float(np.concatenate(kl).mean()),
                   "length": float(np.concatenate(length).mean()),
                   "eos_rate": float(np.concatenate(eos).mean()), "prompts": len(g)}
  return out


def format_policy_table(res: dict, stage: str) -> list[str]:
  names = list(res)
  lines = [f"[{stage}] held-out prompts ({res[names[0]]['prompts']}):",
           f"  {'':<30}" + "".join(f"{n:>20}" for n in names)]
  for label, key in (("gold score (mean)", "gold"), ("gold score (std)", "gold_std"),
                     ("KL to the reference (nats)", "kl"), ("response length", "length"),
                     ("EOS rate", "eos_rate")):
    lines.append(f"  {label:<30}" + "".join(f"{res[n][key]:>20.3f}" for n in names))
  return lines


def write(workdir: str, res: dict, stage: str, writer) -> None:
  """Prints the table and writes `eval_policy.json` (process 0)."""
  for line in format_policy_table(res, stage):
    writer.text(line)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, POLICY_EVAL_FILE), "w", encoding="utf-8") as f:
      json.dump(res, f, indent=1)
