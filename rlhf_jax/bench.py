"""Speed measurements with random weights and synthetic tokens: one RL iteration for now.

  python -m rlhf_jax.bench ppo --shape=qwen05b --batch=64 --prompt=128 --new=128 --out=ppo.jsonl

`ppo` times one PPO iteration of the RL stage's own compiled programs (`rl.compiled`): policy,
separate critic, frozen reference and reward model all at the `--shape` preset (random weights,
bf16 compute, fp32 master weights), `--batch` prompts of `--prompt` random tokens, `--new`
sampled tokens (random weights never emit EOS, so every row runs the full length), `--epochs`
× `--minibatches`. The first iteration (compilation) is excluded; the figure is the median of
`--repeats` iterations, with `block_until_ready` before every clock read. One JSON record per
measurement goes to `--out` (device, software versions, setting, figures, peak memory).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np


def _versions() -> dict:
  import flax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  return {"jax": jax.__version__, "jaxlib": jax.lib.__version__ if hasattr(jax, "lib") else "",
          "flax": flax.__version__, "optax": optax.__version__,
          "python": platform.python_version()}


def _peak_memory_gib() -> float | None:
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    return None
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**30


def bench_ppo(args) -> list[dict]:
  from rlhf_jax import parallel  # pylint: disable=g-import-not-at-top
  from rlhf_jax.models import PRESETS  # pylint: disable=g-import-not-at-top
  from rlhf_jax.reward import combine  # pylint: disable=g-import-not-at-top
  from rlhf_jax.reward.model import RewardModel  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl import ppo  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl.compiled import compile_rl  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl.config import RLConfig  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train.state import (OptimConfig, TrainState, create_state,  # pylint: disable=g-import-not-at-top
                                    param_shardings)

  cfg_model = dataclasses.replace(PRESETS[args.shape], dtype=args.dtype, remat=args.remat,
                                  max_seq_len=args.prompt + args.new)
  mesh = parallel.make_mesh({"data": -1})
  rules = parallel.DEFAULT_RULES
  rl = RLConfig(rollout_batch=args.batch, max_new_tokens=args.new, epochs=args.epochs,
                minibatches=args.minibatches)
  tx = OptimConfig(learning_rate=1e-6, warmup_steps=0).make()
  t0 = time.perf_counter()
  policy, pol_sh = create_state(cfg_model, tx, mesh, rules, 0)
  critic, cri_sh = create_state(cfg_model, tx, mesh, rules, 1, heads="score")

  def frozen(seed, heads):
    sh = param_shardings(cfg_model, mesh, rules, heads)[1]
    st, _ = create_state(cfg_model, tx, mesh, rules, seed, heads=heads)
    return jax.device_put(st.params, sh)

  ref = frozen(2, "lm")
  rm_params = frozen(3, "score")
  rm = RewardModel("rm", "", cfg_model, rm_params, 1.0, 0.0, "")
  eos = cfg_model.vocab_size - 1  # random weights practically never sample it
  fns = compile_rl(model_cfg=cfg_model, critic_cfg=cfg_model, heads="lm", reward_models=[rm],
                   rule=combine.CombineRule(), cfg=rl, eos_id=eos, pad_id=0, mesh=mesh,
                   rules=rules, policy_shardings=pol_sh, critic_shardings=cri_sh,
                   tx_policy=tx, tx_critic=tx)
  setup_s = time.perf_counter() - t0
  rng = np.random.default_rng(0)
  prompt = rng.integers(1, cfg_model.vocab_size - 1, (args.batch, args.prompt)).astype(np.int32)
  batch = parallel.put_batch({"t": prompt, "m": np.ones_like(prompt, bool)}, mesh, rules)
  beta = jnp.float32(0.05)
  times = []
  for i in range(args.repeats + 1):
    key = jax.random.PRNGKey(i)
    t0 = time.perf_counter()
    gen = fns.generate(policy.params, batch["t"], batch["m"], key)
    jax.block_until_ready(gen)
    t1 = time.perf_counter()
    ro = fns.score(policy.params, ref, critic.params, [rm_params], beta, batch["t"], batch["m"],
                   gen["tokens"], gen["mask"])
    jax.block_until_ready(ro)
    t2 = time.perf_counter()
    pol = TrainState(step=jnp.zeros((), jnp.int32), params=policy.params,
                     opt_state=policy.opt_state, rng=jnp.zeros((2,), jnp.uint32))
    pol, critic, met = fns.update(pol, critic, {k: ro[k] for k in ppo.ROLLOUT_KEYS}, key, None)
    jax.block_until_ready(met)
    t3 = time.perf_counter()
    policy = policy.replace(params=pol.params, opt_state=pol.opt_state)
    rec = {"generate_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2,
           "iteration_s": t3 - t0, "sampled_tokens": int(np.asarray(gen["mask"]).sum())}
    print(f"  iteration {i}{' (compile, excluded)' if i == 0 else ''}: " +
          " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in rec.items()), flush=True)
    if i:
      times.append(rec)
  med = {k: statistics.median(r[k] for r in times) for k in times[0]}
  gen_tok_s = args.batch * args.new / med["generate_s"]
  return [{
      "what": "ppo_iteration", "device": jax.devices()[0].device_kind,
      "devices": jax.device_count(), "versions": _versions(),
      "setting": {"shape": args.shape, "params_M": cfg_model.num_params() / 1e6,
                  "batch": args.batch, "prompt": args.prompt, "new": args.new,
                  "epochs": args.epochs, "minibatches": args.minibatches,
                  "dtype": args.dtype, "remat": args.remat,
                  "models": "policy + critic + reference + reward model, same shape"},
      "median": med, "repeats": args.repeats, "generate_tokens_per_s": gen_tok_s,
      "setup_s": setup_s, "peak_memory_gib": _peak_memory_gib()}]


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m rlhf_jax.bench", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("what", choices=["ppo"])
  parser.add_argument("--shape", default="qwen05b")
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--prompt", type=int, default=128)
  parser.add_argument("--new", type=int, default=128)
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--minibatches", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", default="bfloat16")
  parser.add_argument("--remat", default="dots_no_batch")
  parser.add_argument("--out", default="")
  args = parser.parse_args(argv)
  records = bench_ppo(args)
  for r in records:
    line = json.dumps(r)
    print(line, flush=True)
    if args.out:
      with open(args.out, "a", encoding="utf-8") as f:
        f.write(line + "\n")
  r = records[0]["median"]
  print(f"\n{'ppo iteration':<16}{'total s':>10}{'generate':>10}{'score':>10}{'update':>10}")
  print(f"{args.shape + ' b' + str(args.batch):<16}{r['iteration_s']:>10.3f}"
        f"{r['generate_s']:>10.3f}{r['score_s']:>10.3f}{r['update_s']:>10.3f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
