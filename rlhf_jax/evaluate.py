"""Policies side by side on an RL config's held-out prompts: the reward model's score, the KL to
the first policy, length, EOS rate and a few answers, for any task (the built-in task adds its
gold score).

  python -m rlhf_jax.evaluate --config=configs/ppo.py:smollm2 \\
      --policies=sft=runs/pipeline_smollm2/sft,dpo=runs/dpo_smollm2,ppo=runs/ppo_smollm2 \\
      [--best_of_n=runs/best_of_n_smollm2] [--prompts=32] [--show=3] [--set=KEY=VALUE ...] \\
      [--out=runs/evaluate.json]

Each policy is `name=path`: a stage's workdir (LoRA adapters merged) or a Hugging Face
checkpoint directory. The first is the reference of the KL. The config says everything else,
as its RL stage would use it: the held-out prompts (`data`, cut or skipped by
`data.max_prompt_len`), the reward models (`reward`), and the sampling (`rl.max_new_tokens`,
`rl.temperature`); every policy is sampled with the same fixed key. `--best_of_n` adds the rows
of a best-of-n stage's `best_of_n.json` (its RM score and plug-in KL estimate to its sampling
policy), which must have scored the same number of held-out prompts.
Not for: the built-in task's method table (`rlhf_jax.compare`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import ml_collections as mc

from rlhf_jax import config_base, parallel, workdir_model
from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError, UserError
from rlhf_jax.reward import model as rm_model
from rlhf_jax.train import policy_eval, rl_data


def parse_policies(text: str) -> dict:
  """{name: path} from "name=path,name=path" (order kept: the first is the reference)."""
  out = {}
  for item in (x.strip() for x in text.split(",") if x.strip()):
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
      raise ConfigError(f"--policies: {item!r} is not name=path")
    if name in out:
      raise ConfigError(f"--policies: the name {name!r} is given twice")
    out[name] = path
  if not out:
    raise ConfigError("--policies: give at least one name=path")
  return out


def load_policy(path: str, config, tokenizer_spec: str):
  """(ModelConfig without adapters, params on the config's mesh) of a workdir or checkpoint."""
  if os.path.isfile(os.path.join(path, "model.json")):
    stored = workdir_model.read_model_json(path).get("tokenizer")
    if stored not in (None, tokenizer_spec):
      raise ConfigError(f"{path} reads text with tokenizer {stored!r}, the config with "
                        f"{tokenizer_spec!r}: the policies must share one")
    return workdir_model.load_workdir_params(path, config, heads="lm")
  if os.path.isfile(os.path.join(path, "config.json")):
    from rlhf_jax.models import hf  # pylint: disable=g-import-not-at-top
    runtime = {k: v for k, v in dict(config.model).items()
               if k in workdir_model.RUNTIME_FIELDS and v is not None}
    model_cfg, params = hf.load_checkpoint(path, **runtime)
    mesh = parallel.make_mesh(dict(config.mesh))
    rules = parallel.rules_from_config(config.sharding_rules)
    from rlhf_jax.train_state import param_shardings  # pylint: disable=g-import-not-at-top
    return model_cfg, jax.device_put(params, param_shardings(model_cfg, mesh, rules, "lm")[1])
  raise ConfigError(f"--policies: {path} is neither a stage's workdir (model.json) nor a "
                    "Hugging Face checkpoint (config.json)")


def best_of_n_rows(workdir: str, prompts: int) -> dict:
  """{"best-of-n": {"rm_score", "kl", "kl_upper_bound", ...}} from a best-of-n stage's result."""
  from rlhf_jax.train.best_of_n_stage import RESULT_FILE  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, RESULT_FILE)
  if not os.path.isfile(path):
    raise ConfigError(f"--best_of_n: {path} does not exist (run the best_of_n stage first)")
  with open(path, encoding="utf-8") as f:
    res = json.load(f)
  rows = {}
  for n, r in res.items():
    if "rm_score" not in r or r.get("prompts") != prompts:
      raise ConfigError(f"--best_of_n: {path} scored {r.get('prompts')} prompts, this "
                        f"evaluation {prompts}: set --prompts (or best_of_n.num_prompts) equal")
    if n != "1":
      rows[f"best-of-{n}"] = {"rm_score": r["rm_score"], "kl": r["kl_estimate"],
                              "kl_upper_bound": r["kl_upper_bound"], "prompts": r["prompts"]}
  return rows


def evaluate(config, policies: dict, num_prompts: int, show: int) -> dict:
  tokenizer = lm_data.load_tokenizer(config)
  spec = lm_data.tokenizer_spec(config)
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  loaded, model_cfg = {}, None
  for name, path in policies.items():
    cfg, params = load_policy(path, config, spec)
    if model_cfg is not None and cfg != model_cfg:
      raise ConfigError(f"--policies: {path} is not the same architecture as "
                        f"{next(iter(policies.values()))}")
    model_cfg, loaded[name] = cfg, params
  models, rule = rm_model.load_reward_models(config.reward, config)
  rm_model.check_tokenizers(models, spec)
  data = rl_data.build(config, tokenizer)
  prompts = data.eval_prompts[:num_prompts or None]
  if not prompts:
    raise ConfigError("the config's data has no held-out prompts")
  rl = config.rl
  config.eval_policy = mc.ConfigDict({
      "prompts": len(prompts), "max_prompt_len": config.data.max_prompt_len,
      "max_new_tokens": rl.max_new_tokens, "temperature": rl.temperature,
      "batch_size": min(rl.rollout_batch, len(prompts))})
  if config.eval_policy.batch_size % parallel.batch_divisor(mesh, rules):
    raise ConfigError(f"{config.eval_policy.batch_size} prompts a batch do not divide over the "
                      f"mesh's batch axes ({dict(mesh.shape)})")
  res = policy_eval.evaluate_policies(config, model_cfg, tokenizer, mesh, rules, loaded,
                                      prompts=prompts, gold_fn=data.gold_fn,
                                      reward=(models, rule), keep=show)
  return {"results": res, "prompts": [tokenizer.decode(p) for p in prompts[:show]],
          "num_prompts": len(prompts), "policies": policies, "summary": data.summary}


def format_report(report: dict, extra_rows: dict) -> list[str]:
  res = report["results"]
  lines = policy_eval.format_policy_table(res, "evaluate")
  for name, r in extra_rows.items():
    lines.append(f"  {name}: RM score {r['rm_score']:.3f}, KL estimate {r['kl']:.3f} nats "
                 f"(bound {r['kl_upper_bound']:.3f}) to its sampling policy")
  for i, prompt in enumerate(report["prompts"]):
    lines.append(f"\n--- held-out prompt {i}: {prompt!r}")
    for name, r in res.items():
      lines.append(f"  [{name}] {r['answers'][i]!r}")
  return lines


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m rlhf_jax.evaluate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="an RL config file[:preset]")
  p.add_argument("--policies", required=True, help="name=path,... (the first is the reference)")
  p.add_argument("--best_of_n", default="", help="a best_of_n stage's workdir: its rows too")
  p.add_argument("--prompts", type=int, default=32, help="held-out prompts (0 = all)")
  p.add_argument("--show", type=int, default=3, help="answers printed per policy")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override, e.g. rl.max_new_tokens=128")
  p.add_argument("--out", default="", help="JSON file for the results")
  args = p.parse_args(argv)
  try:
    config = config_base.from_file(args.config)
    overrides = {}
    for kv in args.set:
      k, sep, v = kv.partition("=")
      if not sep:
        raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
      try:
        overrides[k.strip()] = json.loads(v)
      except ValueError:
        overrides[k.strip()] = v
    config = config_base.apply_overrides(config, overrides)
    report = evaluate(config, parse_policies(args.policies), args.prompts, args.show)
    extra = best_of_n_rows(args.best_of_n, report["num_prompts"]) if args.best_of_n else {}
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  report["best_of_n"] = extra
  for line in format_report(report, extra):
    print(line, flush=True)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
