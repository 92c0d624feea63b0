"""Every alignment method on the built-in task, one table: gold score and KL to the SFT policy,
and held-out pass@1 where a function checks the answers (the checkable task).

  python -m rlhf_jax.compare                      # runs what is not finished, then the table
  python -m rlhf_jax.compare --only=ppo,grpo --set=rl.iterations=60

Runs `configs/{ppo,a2c,grpo,rloo,dpo,best_of_n,ilql}.py` and rejection-sampling fine-tuning
(`best_of_n.py:train`, then `sft.py:rejection_sampling`) in turn through `rlhf_jax.stages.run`
(each skips or resumes what its workdir already holds, and the first runs the shared pipeline:
pretraining, SFT, reward model), then reads what each wrote (`summary.json`, `eval_policy.json`,
`best_of_n.json`) and prints one table on the same 256 held-out prompts at temperature 1: the
mean gold score, the KL to the SFT policy in nats per response, and the samples each method
drew. `grpo_checkable` (`configs/grpo.py:checkable`: its own SFT, then GRPO with the checking
function alone, no reward model) adds two rows on the checkable prompts, its SFT policy and
GRPO, with their pass@1 (the gold score does not exist there). Writes it to
`runs/compare.json` as well.
Not for: anything but the built-in task (the gold score exists only there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# Each method: the configs it runs, in order ("file[:preset]" under configs/).
PLAN = {
    "ppo": ("ppo",), "a2c": ("a2c",), "grpo": ("grpo",), "rloo": ("rloo",), "dpo": ("dpo",),
    "best_of_n": ("best_of_n",),
    # Llama 2's rejection sampling: best of 16 on training prompts, then SFT on those answers.
    "rejection_sampling": ("best_of_n:train", "sft:rejection_sampling"),
    # ILQL: offline, from the SFT policy's scored samples (its config runs best_of_n:ilql).
    "ilql": ("ilql",),
    # Rewards you can check: the checkable prompts, a reward function and no reward model.
    "grpo_checkable": ("grpo:checkable",),
}
METHODS = tuple(PLAN)


def _load(path: str) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def build_configs(repo: str, only, overrides) -> dict:
  """{method: [config, ...]} in run order. `pipeline.*` and `seed` overrides apply to every
  config that has the key; `<method>.<key>` ones to the method's last config."""
  from rlhf_jax import config_base  # pylint: disable=g-import-not-at-top
  configs = {}
  for m in only:
    configs[m] = []
    for i, spec in enumerate(PLAN[m]):
      name, _, preset = spec.partition(":")
      c = config_base.from_file(os.path.join(repo, "configs", f"{name}.py") +
                                (f":{preset}" if preset else ""))
      shared = {k: v for k, v in overrides.items()
                if k.startswith(("pipeline.", "seed")) and k.split(".")[0] in c}
      own = {k[len(m) + 1:]: v for k, v in overrides.items()
             if k.startswith(m + ".") and i == len(PLAN[m]) - 1}
      configs[m].append(config_base.apply_overrides(c, {**shared, **own}))
  return configs


def run_all(repo: str, only, overrides) -> dict:
  from rlhf_jax import stages  # pylint: disable=g-import-not-at-top
  configs = build_configs(repo, only, overrides)
  for m, cs in configs.items():
    for c in cs:
      print(f"\n===== {m}: {c.stage} in {c.workdir}", flush=True)
      stages.run(c, c.workdir)
  return configs


def collect(configs_by_method: dict) -> list[dict]:
  """Rows of the table, from the files each method wrote ({method: [config, ...]})."""
  configs = {m: cs[-1] for m, cs in configs_by_method.items()}
  rows = []
  if "ppo" in configs:
    sft = _load(os.path.join(configs["ppo"].workdir, "eval_sft.json"))
    rows.append({"method": "SFT (reference)", "gold": sft["eval_gold"], "kl": 0.0,
                 "samples": "0 (the starting policy)"})
  if "best_of_n" in configs:
    res = _load(os.path.join(configs["best_of_n"].workdir, "best_of_n.json"))
    for n, r in res.items():
      if n != "1":
        bound = r.get("kl_upper_bound", r.get("kl"))  # "kl": the bound, in older files
        est = r.get("kl_estimate")
        rows.append({"method": f"best-of-{n}", "gold": r["gold"],
                     "kl": bound if est is None else est,
                     "samples": f"{n} per prompt at inference (KL: " + (
                         "upper bound)" if est is None else
                         f"plug-in estimate; upper bound {bound:.2f})")})
  for m in ("ppo", "a2c", "grpo", "rloo"):
    if m in configs:
      s = _load(os.path.join(configs[m].workdir, "summary.json"))
      rl = configs[m].rl
      per = (f"{rl.rollout_batch // rl.group_size} prompts x {rl.group_size}"
             if rl.group_size > 1 else f"{rl.rollout_batch} prompts")
      rows.append({"method": m.upper(), "gold": s["final"]["eval_gold"],
                   "kl": s["final"]["eval_kl"],
                   "samples": f"{s['samples']:,} ({s['iteration']} iterations x {per})"})
  if "grpo_checkable" in configs:
    rows += _checkable_rows(configs["grpo_checkable"])
  if "dpo" in configs:
    c = configs["dpo"]
    pe = _load(os.path.join(c.workdir, "eval_policy.json"))["DPO"]
    rows.append({"method": f"DPO ({c.dpo.loss}, beta {c.dpo.beta})", "gold": pe["gold"],
                 "kl": pe["kl"],
                 "samples": f"0 new; {c.train.steps} steps x {c.train.batch_size} of the RM's "
                            "ranked SFT samples"})
  if "ilql" in configs:
    rows += ilql_rows(configs["ilql"])
  if "rejection_sampling" in configs:
    from rlhf_jax.train.best_of_n_stage import parse_ns  # pylint: disable=g-import-not-at-top
    data_cfg, c = configs_by_method["rejection_sampling"][0], configs["rejection_sampling"]
    pe = _load(os.path.join(c.workdir, "eval_policy.json"))["SFT"]
    b = data_cfg.best_of_n
    prompts = b.num_prompts or data_cfg.data.builtin_train
    rows.append({"method": "rejection sampling (RS-FT)", "gold": pe["gold"], "kl": pe["kl"],
                 "samples": f"{prompts * parse_ns(b.ns)[-1]:,} ({prompts:,} train "
                            f"prompts x {b.ns}, best kept); {c.train.steps} SFT steps"})
  return rows


def ilql_rows(c) -> list[dict]:
  """The ILQL policy's rows, one per decoding β (`ilql.beta`, then `ilql.eval_betas`): the shaped
  decoding's gold score and KL from `eval_policy.json`."""
  res = _load(os.path.join(c.workdir, "eval_policy.json"))
  if c.data.source == "samples":
    from rlhf_jax.train.best_of_n_stage import parse_ns  # pylint: disable=g-import-not-at-top
    b = c.samples.best_of_n
    prompts, n = b.num_prompts or c.samples.data.builtin_train, parse_ns(b.ns)[-1]
    data = f"{prompts * n:,} scored SFT samples ({prompts:,} train prompts x {n}), offline"
  else:
    data = f"0 new; {os.path.basename(str(c.data.source))}, offline"
  return [{"method": name, "gold": pe["gold"], "kl": pe["kl"],
           "samples": f"{data}; {c.train.steps} steps x {c.train.batch_size}"}
          for name, pe in res.items() if name.startswith("ILQL (beta")]


def _checkable_rows(c) -> list[dict]:
  """The checkable task's SFT and GRPO rows: pass@1 (and KL), no gold score."""
  s = _load(os.path.join(c.workdir, "summary.json"))
  n = int(s["final"].get("eval_pass_n", 0))
  return [{"method": "SFT, checkable prompts", "gold": None, "kl": 0.0,
           "pass@1": s["sft"].get("eval_pass@1"), "samples": "0 (the starting policy)"},
          {"method": "GRPO, check function only", "gold": None, "kl": s["final"]["eval_kl"],
           "pass@1": s["final"].get("eval_pass@1"),
           "samples": f"{s['samples']:,} ({s['iteration']} iterations x "
                      f"{c.rl.rollout_batch // c.rl.group_size} prompts x {c.rl.group_size}); "
                      f"pass@1 of {n} samples per held-out prompt"}]


def format_table(rows: list[dict]) -> str:
  def num(v, fmt):
    return format(v, fmt) if v is not None else "-"

  lines = [f"{'method':<28}{'gold':>8}{'KL (nats)':>11}{'pass@1':>8}  samples drawn by the method",
           "-" * 108]
  for r in rows:
    lines.append(f"{r['method']:<28}{num(r['gold'], '8.3f'):>8}{r['kl']:>11.2f}"
                 f"{num(r.get('pass@1'), '8.3f'):>8}  {r['samples']}")
  return "\n".join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m rlhf_jax.compare", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--only", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override: pipeline.* and seed apply to every method, "
                      "<method>.<key> to one (e.g. grpo.rl.iterations=60)")
  p.add_argument("--out", default="runs/compare.json")
  args = p.parse_args(argv)
  only = [m.strip() for m in args.only.split(",") if m.strip()]
  bad = [m for m in only if m not in METHODS]
  if bad:
    p.error(f"--only: {bad} not in {METHODS}")
  overrides = {}
  for kv in args.set:
    if "=" not in kv:
      p.error(f"--set {kv!r}: expected KEY=VALUE")
    k, v = kv.split("=", 1)
    overrides[k.strip()] = json.loads(v) if _is_json(v) else v  # numbers, booleans; else text
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  configs = run_all(repo, only, overrides)
  rows = collect(configs)
  table = format_table(rows)
  print("\n" + table)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(rows, f, indent=1)
  return 0


def _is_json(v: str) -> bool:
  try:
    json.loads(v)
    return True
  except ValueError:
    return False


if __name__ == "__main__":
  sys.exit(main())
