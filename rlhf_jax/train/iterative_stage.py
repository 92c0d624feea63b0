"""Iterated online RLHF (Anthropic, Bai et al. 2022): rounds of fresh comparisons of the current
policy, a reward model retrained on every comparison so far, and RL that continues the policy.

`run(config, workdir)` first runs the pipeline's stages (pretraining, SFT, the round-0 reward
model on SFT samples) unless finished, then for round r = 0 … rounds−1:
  1. (r ≥ 1) the current policy answers `iterative.prompts_per_round` new prompts K times and
     the simulated labelers rank the answers: `comparisons/{train,eval}/round_<r>.jsonl`
     (round 0's are the pipeline reward stage's own files, copied in);
  2. (r ≥ 1) a reward model is trained from the SFT model on every training comparison of
     rounds 0 … r (`rm_<r>`), held out on round r's: the samples of the policy it will judge;
  3. RL continues in `rl/` for `iterative.rl_iterations` more iterations against the newest
     reward model, always with the SFT policy as the KL reference (a resumed RL run: policy,
     critic, optimizer and β carry over);
  4. the round's policy answers the held-out prompts (`samples/round_<r>.jsonl`).
At the end each pair of policies (SFT and every round) is compared on every held-out prompt by
the gold score, and a Bradley–Terry fit gives each an Elo rating with its standard error:
`elo.json` and a table. With `iterative.labelers="human"`, step 1 puts the samples into a
feedback site as tasks and stops; rerunning the command after labelling reads the site's export
(the documented record schema) and continues (`human_round.py`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil

from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError
from rlhf_jax.reward import elo
from rlhf_jax.train import human_round, pipeline, rm_data

ELO_FILE = "elo.json"


def _copy(config, **updates):
  """A resolved, unlocked copy of `config` with dotted-key updates."""
  from rlhf_jax import config_base  # pylint: disable=g-import-not-at-top
  c = config.copy_and_resolve_references()
  with c.unlocked():
    config_base.apply_overrides(c, updates)
  return c


def _held_out_samples(config, policy_workdir: str, out_dir: str) -> list[dict]:
  """The policy's answers to the RL stage's held-out prompts, with their gold scores."""
  import rlhf_jax  # pylint: disable=g-import-not-at-top
  from rlhf_jax import config_base, stages  # pylint: disable=g-import-not-at-top
  path = os.path.join(out_dir, "samples.jsonl")
  if not os.path.exists(path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(rlhf_jax.__file__)))
    c = config_base.from_file(os.path.join(repo, "configs", "sample.py"))
    c.seed = config.seed
    c.init.from_workdir = policy_workdir
    c.data.builtin_eval = config.data.builtin_eval
    c.data.max_prompt_len = config.data.max_prompt_len
    c.sampling.update(max_new_tokens=config.rl.max_new_tokens, temperature=config.rl.temperature,
                      batch_size=config.iterative.sample_batch, show=0)
    stages.run(c, out_dir)
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def gold_tournament(samples: dict[str, list[dict]]):
  """(systems_a, systems_b, outcomes): every pair of systems on every prompt, won by the
  higher gold score (equal scores tie)."""
  names = list(samples)
  n = min(len(v) for v in samples.values())
  sa, sb, ys = [], [], []
  for a, b in itertools.combinations(names, 2):
    for i in range(n):
      if samples[a][i]["prompt"] != samples[b][i]["prompt"]:
        raise ConfigError(f"{a} and {b} answered different prompts at position {i}")
      ga, gb = samples[a][i]["gold"], samples[b][i]["gold"]
      sa.append(a)
      sb.append(b)
      ys.append(1.0 if ga > gb else 0.0 if ga < gb else 0.5)
  return sa, sb, ys


def run(config, workdir: str) -> dict:
  from rlhf_jax import stages  # pylint: disable=g-import-not-at-top
  if config.stage != "iterative":
    raise ConfigError(f"stage={config.stage!r}: this loop runs 'iterative'")
  it = config.iterative
  if it.rounds < 1 or it.rl_iterations < 1 or it.prompts_per_round < 1:
    raise ConfigError("iterative.rounds, rl_iterations and prompts_per_round must be >= 1")
  if it.labelers not in ("simulated", "human"):
    raise ConfigError(f"iterative.labelers={it.labelers!r} must be 'simulated' or 'human'")
  if config.data.source != "builtin":
    raise ConfigError("iterative RLHF here labels with the built-in task's simulated labelers "
                      "(data.source='builtin'); real labelers would read exported samples")
  pipeline.run_upstream(config)
  sft_dir, rm0_dir = config.pipeline.sft.workdir, config.pipeline.reward.workdir
  comp = {s: os.path.join(workdir, "comparisons", s) for s in ("train", "eval")}
  for s, d in comp.items():
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, "round_0.jsonl")
    if not os.path.exists(dst):
      shutil.copy(os.path.join(rm0_dir, f"comparisons_{s}.jsonl"), dst)
  rl_dir = os.path.join(workdir, "rl")
  samples = {"SFT": _held_out_samples(config, sft_dir, os.path.join(workdir, "samples", "sft"))}
  tokenizer = lm_data.load_tokenizer(config)
  rm_dir = rm0_dir
  for r in range(it.rounds):
    if r:
      labels = _copy(config.pipeline.reward, seed=config.seed + 1000 * r,
                     **{"data.policy_workdir": rl_dir})
      for s, n in (("train", it.prompts_per_round), ("eval", it.eval_prompts_per_round)):
        path = os.path.join(comp[s], f"round_{r}.jsonl")
        if not os.path.exists(path):
          print(f"[iterative] round {r}: the current policy answers {n} new {s} prompts "
                f"{labels.data.num_responses} times; {it.labelers} labelers rank them", flush=True)
          if it.labelers == "human":
            human_round.collect(it.feedback_home, f"{os.path.basename(workdir)}-round{r}-{s}",
                                path, lambda: human_round.task_records(
                                    *rm_data.sample_prompts(labels, tokenizer, s, n), tokenizer,
                                    rl_dir))
          else:
            rm_data.sample_and_label(labels, tokenizer, s, n, path)
      rm_dir = os.path.join(workdir, f"rm_{r}")
      rm_cfg = _copy(config.pipeline.reward, **{
          "data.source": comp["train"], "data.format": "ranked",
          "data.eval_split": os.path.join(comp["eval"], f"round_{r}.jsonl"),
          "data.truncation": "error", "train.steps": it.rm_steps, "workdir": rm_dir})
      print(f"[iterative] round {r}: reward model on every comparison of rounds 0-{r}",
            flush=True)
      if not pipeline.finished(rm_cfg):
        stages.run(rm_cfg, rm_dir)
    rl_cfg = _copy(config, stage=config.rl.algorithm, workdir=rl_dir, **{
        "pipeline.run_upstream": False, "rl.iterations": (r + 1) * it.rl_iterations,
        "reward.models": rm_dir, "train.keep_checkpoints": it.rounds + 1})
    print(f"[iterative] round {r}: {config.rl.algorithm} to iteration {(r + 1) * it.rl_iterations} "
          f"against {rm_dir}", flush=True)
    # Each round continues the same RL run against that round's reward model.
    stages.run(rl_cfg, rl_dir, allow_config_change=("reward.models",))
    samples[f"round {r}"] = _held_out_samples(
        config, rl_dir, os.path.join(workdir, "samples", f"round_{r}"))
  ratings = elo.fit_bradley_terry(*gold_tournament(samples))
  table = elo.format_table(ratings)
  print("[iterative] Elo from gold-score comparisons on the held-out prompts:\n" + table,
        flush=True)
  result = {"ratings": [r.__dict__ for r in ratings],
            "mean_gold": {k: sum(x["gold"] for x in v) / len(v) for k, v in samples.items()}}
  with open(os.path.join(workdir, ELO_FILE), "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  return result
