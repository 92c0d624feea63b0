"""Our figures: the stages' own compiled programs on random weights and synthetic token ids.

- `generate`: `rlhf_jax.sampling.generate` (the sampler every stage uses) on `batch` prompts of
  `prompt` random tokens, `new` tokens each (no EOS, so every row runs the full length):
  tokens/s, and the per-step decode latency from a second program that samples one token
  (prefill + 1 step): (t(new) − t(1)) / (new − 1);
- `train`: one optimizer step of the SFT loss (`lm_steps`) or the reward-model loss (`rm_steps`,
  K = 2 responses per element): tokens/s and model FLOPs utilisation against a peak measured by
  the caller;
- `rl_iteration`: one PPO iteration of `rl.compiled` (policy, separate critic, frozen reference,
  reward model, all at the shape): seconds split into generate / score / update.
Weights are fp32 master copies, as the stages hold them; compute is `dtype` (the command line's
`--dtype`, bf16 by default), in the setting as "dtype" so a record pairs only with a peer's at
the same compute dtype.
Not for: peers (`peers`), device limits (`hardware`), the command line (`__main__`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.bench import hardware
from rlhf_jax.bench.common import (jax_device, jax_live_memory_gib, jax_peak_memory_gib, record,
                                   time_calls, versions)
from rlhf_jax.models import PRESETS, ModelConfig

_VERSIONS = ("jax", "jaxlib", "flax", "optax")


def model_config(shape: str, seq_len: int, dtype: str = "", remat: str = "",
                 attention: str = "") -> ModelConfig:
  """The `shape` preset with max_seq_len = seq_len (and dtype / remat / attention when given)."""
  if shape not in PRESETS:
    raise SystemExit(f"--shape={shape!r}: unknown; choose one of {sorted(PRESETS)}")
  kw = {"max_seq_len": seq_len}
  if dtype:
    kw["dtype"] = dtype
  if remat:
    kw["remat"] = remat
  if attention:
    kw["attention"] = attention
  return dataclasses.replace(PRESETS[shape], **kw)


def _mesh_rules():
  return parallel.make_mesh({"data": -1}), parallel.DEFAULT_RULES


def _random_tokens(cfg: ModelConfig, shape, seed: int = 0) -> np.ndarray:
  # Ids 1 .. vocab-2: 0 is the pad id and vocab-1 the nominal EOS of the RL benchmark.
  return np.random.default_rng(seed).integers(1, cfg.vocab_size - 1, shape).astype(np.int32)


def _frozen_params(cfg: ModelConfig, mesh, rules, seed: int, heads: str = "lm"):
  """Random params born sharded, no optimizer state (a sampler's or a frozen model's)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train_state import _boxed_params_fn, param_shardings  # pylint: disable=g-import-not-at-top
  shardings = param_shardings(cfg, mesh, rules, heads)[1]
  boxed = _boxed_params_fn(cfg, heads)
  with nn.logical_axis_rules(rules):
    return jax.jit(lambda r: nn.meta.unbox(boxed(r)), out_shardings=shardings)(
        jax.random.PRNGKey(seed))


def bench_generate(shape: str, batch: int, prompt: int, new: int, repeats: int,
                   gb_per_s: float | None = None, attention: str = "",
                   dtype: str = "") -> dict:
  from rlhf_jax.sampling import SamplingConfig, generate  # pylint: disable=g-import-not-at-top
  cfg = model_config(shape, prompt + new, dtype, attention=attention)
  mesh, rules = _mesh_rules()
  params = _frozen_params(cfg, mesh, rules, 0)
  toks = parallel.put_batch({"t": _random_tokens(cfg, (batch, prompt))}, mesh, rules)["t"]
  mask = jnp.ones_like(toks, bool)

  def sampler(n):
    sc = SamplingConfig(max_new_tokens=n, temperature=1.0)
    def run():
      with jax.set_mesh(mesh):
        out = generate(params, toks, mask, jax.random.PRNGKey(1), model_cfg=cfg, cfg=sc,
                       eos_id=-1, pad_id=0)  # eos -1: never sampled, every row runs `n` steps
      return jax.block_until_ready(out)
    return run

  full = time_calls(sampler(new), repeats)
  one = time_calls(sampler(1), repeats)
  step_s = (full["median_s"] - one["median_s"]) / max(new - 1, 1)
  figures = {"tokens_per_s": batch * new / full["median_s"], "median_s": full["median_s"],
             "prefill_plus_one_s": one["median_s"], "step_ms": 1e3 * step_s,
             "compile_s": full["warmup_s"], "peak_memory_gib": jax_peak_memory_gib()}
  if gb_per_s:
    bound = hardware.decode_bound_tokens_per_s(cfg, batch, prompt, new, gb_per_s)
    figures.update(hbm_bound_tokens_per_s=bound,
                   fraction_of_hbm_bound=figures["tokens_per_s"] / bound,
                   decode_steps_per_s_bound=bound / batch)
  setting = {"shape": shape, "batch": batch, "prompt": prompt, "new": new,
             "params_M": round(cfg.num_params() / 1e6, 1), "dtype": cfg.dtype,
             "weights": cfg.param_dtype, "sampling": "temperature 1, full vocabulary",
             "attention": cfg.attention}
  return record("generate", "rlhf_jax", jax_device(), setting, figures, versions(*_VERSIONS))


def bench_train(shape: str, loss: str, batch: int, seq: int, repeats: int, remat: str,
                peak_tflops: float | None = None, attention: str = "", dtype: str = "") -> dict:
  """One optimizer step (AdamW) of the SFT ("sft") or reward-model ("rm") loss."""
  from rlhf_jax.train_state import OptimConfig, create_state  # pylint: disable=g-import-not-at-top
  cfg = model_config(shape, seq, dtype, remat=remat, attention=attention)
  mesh, rules = _mesh_rules()
  tx = OptimConfig(learning_rate=1e-5, warmup_steps=0).make()
  if loss == "sft":
    from rlhf_jax.train.lm_steps import make_lm_steps  # pylint: disable=g-import-not-at-top
    state, sh = create_state(cfg, tx, mesh, rules, 0)
    step, _ = make_lm_steps(cfg, tx, mesh, rules, sh)
    toks = _random_tokens(cfg, (batch, seq))
    host = {"tokens": toks, "loss_mask": np.ones_like(toks, bool),
            "attention_mask": np.ones_like(toks, bool)}
    tokens_per_step, lm_head = batch * seq, True
  elif loss == "rm":
    from rlhf_jax.train.rm_steps import RMLossConfig, make_rm_steps  # pylint: disable=g-import-not-at-top
    state, sh = create_state(cfg, tx, mesh, rules, 0, heads="score")
    step, _ = make_rm_steps(cfg, tx, mesh, rules, sh, RMLossConfig())
    toks = _random_tokens(cfg, (batch, 2, seq))
    host = {"tokens": toks, "attention_mask": np.ones_like(toks, bool),
            "ranks": np.tile(np.array([[0, 1]], np.int32), (batch, 1)),
            "margin": np.zeros((batch,), np.float32)}
    tokens_per_step, lm_head = batch * 2 * seq, False
  else:
    raise SystemExit(f"--loss={loss!r}: choose sft or rm")
  data = parallel.put_batch(host, mesh, rules)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], data)
    jax.block_until_ready(metrics)

  t = time_calls(run, repeats)
  tok_s = tokens_per_step / t["median_s"]
  flops = cfg.flops_per_token(seq, lm_head=lm_head) * tok_s
  figures = {"tokens_per_s": tok_s, "step_s": t["median_s"], "model_tflops": flops / 1e12,
             "compile_s": t["warmup_s"], "peak_memory_gib": jax_peak_memory_gib()}
  if peak_tflops:
    figures["mfu"] = flops / 1e12 / peak_tflops
  setting = {"shape": shape, "loss": loss, "batch": batch, "seq": seq,
             "params_M": round(cfg.num_params() / 1e6, 1), "dtype": cfg.dtype,
             "weights": cfg.param_dtype, "remat": cfg.remat, "attention": cfg.attention,
             "optimizer": "AdamW",
             "flops_per_token": cfg.flops_per_token(seq, lm_head=lm_head)}
  return record("train", "rlhf_jax", jax_device(), setting, figures, versions(*_VERSIONS))


def bench_rl_iteration(shape: str, batch: int, prompt: int, new: int, epochs: int,
                       minibatches: int, repeats: int, remat: str, lora_rank: int = 0,
                       attention: str = "", dtype: str = "", algorithm: str = "ppo",
                       group_size: int = 8) -> dict:
  """One RL iteration: generate, score (old / reference log-probs, values, RM, advantages),
  update. `algorithm` "ppo" trains a separate critic (GAE); "grpo" has none, its advantages
  are each response's reward against its group of `group_size` (TRL's GRPO step, the peer).

  With `lora_rank` > 0 the policy (and critic) train LoRA adapters on every projection and the
  reference is the policy's base (adapters off): no reference copy, no base moments."""
  from rlhf_jax.models import lora  # pylint: disable=g-import-not-at-top
  from rlhf_jax.reward import combine  # pylint: disable=g-import-not-at-top
  from rlhf_jax.reward.model import RewardModel  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl import ppo  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl.compiled import compile_rl  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl.config import RLConfig  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train_state import OptimConfig, TrainState, create_state  # pylint: disable=g-import-not-at-top
  cfg = model_config(shape, prompt + new, dtype, remat=remat,
                     attention=attention).replace(lora_rank=lora_rank)
  mesh, rules = _mesh_rules()
  group = algorithm != "ppo"
  rl = RLConfig(algorithm=algorithm, rollout_batch=batch, max_new_tokens=new, epochs=epochs,
                minibatches=minibatches, **(dict(critic="none", group_size=group_size)
                                            if group else {}))
  tx = OptimConfig(learning_rate=1e-6, warmup_steps=0).make(lora.trainable if lora_rank else None)
  policy, pol_sh = create_state(cfg, tx, mesh, rules, 0)
  critic, cri_sh = (jnp.zeros((), jnp.float32), None) if group else create_state(
      cfg, tx, mesh, rules, 1, heads="score")
  ref = None if lora_rank else _frozen_params(cfg, mesh, rules, 2)
  rm_params = _frozen_params(cfg, mesh, rules, 3, heads="score")
  rm = RewardModel("rm", "", cfg, rm_params, 1.0, 0.0, "")
  fns = compile_rl(model_cfg=cfg, critic_cfg=None if group else cfg, heads="lm",
                   reward_models=[rm],
                   rule=combine.CombineRule(), cfg=rl, eos_id=cfg.vocab_size - 1, pad_id=0,
                   mesh=mesh, rules=rules, policy_shardings=pol_sh, critic_shardings=cri_sh,
                   tx_policy=tx, tx_critic=tx)
  data = parallel.put_batch({"t": _random_tokens(cfg, (batch, prompt))}, mesh, rules)
  toks = data["t"]
  mask = jnp.ones_like(toks, bool)
  beta = jnp.float32(0.05)
  times, sampled = [], []
  for i in range(repeats + 1):
    key = jax.random.PRNGKey(i)
    t0 = time.perf_counter()
    gen = jax.block_until_ready(fns.generate(policy.params, toks, mask, key))
    t1 = time.perf_counter()
    ref_now = lora.base_params(policy.params) if lora_rank else ref
    critic_params = critic if group else critic.params
    ro = jax.block_until_ready(fns.score(policy.params, ref_now, critic_params, [rm_params], beta,
                                         toks, mask, gen["tokens"], gen["mask"],
                                         gen["logprobs"], {}))
    t2 = time.perf_counter()
    pol = TrainState(step=jnp.zeros((), jnp.int32), params=policy.params,
                     opt_state=policy.opt_state, rng=jnp.zeros((2,), jnp.uint32))
    pol, critic, met = fns.update(pol, critic, {k: ro[k] for k in ppo.ROLLOUT_KEYS}, key, None,
                                  beta)
    jax.block_until_ready(met)
    t3 = time.perf_counter()
    policy = policy.replace(params=pol.params, opt_state=pol.opt_state)
    if i:  # iteration 0 compiles the three programs
      times.append({"generate_s": t1 - t0, "score_s": t2 - t1, "update_s": t3 - t2,
                    "iteration_s": t3 - t0})
      sampled.append(int(np.asarray(gen["mask"]).sum()))
    else:
      compile_s = t3 - t0
  med = {k: statistics.median(r[k] for r in times) for k in times[0]}
  figures = dict(med, compile_iteration_s=compile_s,
                 generate_tokens_per_s=batch * new / med["generate_s"],
                 peak_memory_gib=jax_peak_memory_gib(), live_memory_gib=jax_live_memory_gib())
  setting = dict(_rl_setting(cfg, shape, rl, prompt), sampled_tokens_measured=min(sampled))
  return record("rl_iteration", "rlhf_jax", jax_device(), setting, figures, versions(*_VERSIONS))


def _rl_setting(cfg: ModelConfig, shape: str, rl, prompt: int) -> dict:
  """The RL iteration's setting (its key fields: batch, dtype, new, prompt, sampled_tokens,
  shape; LoRA in the key too, so no peer record pairs with a LoRA one)."""
  group = rl.algorithm != "ppo"
  setting = {"shape": shape, "algorithm": rl.algorithm, "batch": rl.rollout_batch,
             "prompt": prompt, "new": rl.max_new_tokens,
             "sampled_tokens": rl.rollout_batch * rl.max_new_tokens, "dtype": cfg.dtype,
             "epochs": rl.epochs, "minibatches": rl.minibatches, "remat": cfg.remat,
             "attention": cfg.attention, "params_M": round(cfg.num_params() / 1e6, 1),
             "models": ("policy" + ("" if group else " + critic") +
                        " + reference + reward model, same shape" if not cfg.lora_rank
                        else "LoRA policy (and critic), reference = policy base, reward model")}
  if group:
    setting["num_generations"] = rl.group_size
  if cfg.lora_rank:
    setting.update(lora_rank=cfg.lora_rank,
                   adapter_params_M=round(cfg.num_lora_params() / 1e6, 2))
  return setting
