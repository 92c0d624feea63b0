"""Every compiled program of a stage, built from abstract inputs at the config's real shapes and
lowered and compiled on the local backend with the config's mesh; nothing is allocated.

`stage_plan(config)` returns a `memory.StagePlan`: for pretrain/SFT the LM train step, for the
reward model its train step, for DPO its train step, for the RL stages (PPO, A2C, GRPO, RLOO)
generate, score and update, each with our byte count and XLA's analysis. The model comes from the
config's source when it exists on disk (an HF checkpoint's config.json, a workdir's model.json),
else from `model.preset` and the `model.*` fields; an RL stage's reward model and critic take the
policy's shape unless the reward workdir exists.
Not for: the arithmetic of the counts (`memory.py`) or the command line (`__main__.py`).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from rlhf_jax import parallel
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import ModelConfig, lora
from rlhf_jax.plan import memory
from rlhf_jax.plan.memory import ProgramPlan, StagePlan


def model_of(config, heads: str = "lm", **replace) -> ModelConfig:
  """The stage's model config, read from its source if that exists, else from `model.*`; then
  `replace`d (the planner's 1- and 2-layer variants)."""
  from rlhf_jax.train import model_init  # pylint: disable=g-import-not-at-top
  init = config.init
  if (init.hf_checkpoint and os.path.isdir(init.hf_checkpoint)) or (
      init.from_workdir and os.path.exists(os.path.join(init.from_workdir, "model.json"))):
    from rlhf_jax.data import lm_data  # pylint: disable=g-import-not-at-top
    cfg = model_init.build(config, lm_data.load_tokenizer(config), heads, load_params=False)[0]
  else:
    cfg = ModelConfig.from_dict({k: v for k, v in dict(config.model).items() if v is not None})
  if cfg.attention == "cudnn" and jax.default_backend() != "gpu":
    # cuDNN's kernel compiles only on a GPU; XLA's holds the [B, N, T, S] scores cuDNN never
    # writes, so the plan errs on the safe side.
    replace = {"attention": "xla", **replace}
  return cfg.replace(**replace) if replace else cfg


def _abstract(shape, dtype, sharding):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _with_shardings(abstract, shardings):
  return jax.tree.map(lambda a, s: _abstract(a.shape, a.dtype, s), abstract, shardings)


def _batch(mesh, rules, shapes: dict):
  """{key: ShapeDtypeStruct} sharded over the batch axes; shapes: key -> (shape, dtype)."""
  return {k: _abstract(s, d, parallel.batch_sharding(mesh, rules, len(s)))
          for k, (s, d) in shapes.items()}


def _compile(mesh, jitted, *args):
  """The compiled program, lowered with `mesh` as the current mesh, as the stages call it
  (`jit_steps.in_mesh`): without it the models' logical sharding constraints are dropped, and on
  a mesh of several devices every device would hold the whole batch's activations."""
  with jax.set_mesh(mesh):
    return jitted.lower(*args).compile()


def _train_program(name, mesh, jitted_train, abstract, shardings, batch, cfg, tokens_per_device,
                   seq_len, lm_head=True):
  plan = ProgramPlan(name, {
      "params": memory.tree_bytes_per_device(abstract.params, shardings.params),
      "optimizer": memory.tree_bytes_per_device(abstract.opt_state, shardings.opt_state),
      "activations": memory.activation_bytes(cfg, tokens_per_device, seq_len)})
  if lm_head:
    plan.ours["logits"] = memory.logits_bytes(cfg, tokens_per_device // seq_len, seq_len)
  plan.xla = memory.xla_figures(_compile(mesh, jitted_train,
                                         _with_shardings(abstract, shardings), batch))
  return plan


def supervised_plan(config, mesh, rules, replace) -> StagePlan:
  """pretrain / sft / reward / dpo: the train step."""
  from rlhf_jax.train import loop  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train_state import state_shardings  # pylint: disable=g-import-not-at-top
  stage, tc = config.stage, config.train
  heads = "lm"
  if stage == "reward":
    from rlhf_jax.train.rm_steps import RMLossConfig  # pylint: disable=g-import-not-at-top
    lc = RMLossConfig(**dict(config.loss))
    heads = lc.heads
  cfg = lora.configure(model_of(config, heads, **replace), config.model)
  tx = loop.make_optimizer(config.optim, tc.steps, cfg)
  abstract, shardings, _ = state_shardings(cfg, tx, mesh, rules, heads)
  b, t = tc.batch_size, config.data.max_len
  div = parallel.batch_divisor(mesh, rules)
  if stage in ("pretrain", "sft"):
    from rlhf_jax.train.lm_steps import make_lm_steps  # pylint: disable=g-import-not-at-top
    train, _ = make_lm_steps(cfg, tx, mesh, rules, shardings)
    batch = _batch(mesh, rules, {"tokens": ((b, t), jnp.int32), "loss_mask": ((b, t), bool),
                                 "attention_mask": ((b, t), bool)})
    return StagePlan(stage, [_train_program("train_step", mesh, train.jitted, abstract, shardings,
                                            batch, cfg, b * t // div, t)],
                     _resident(abstract, shardings))
  k = config.data.num_responses if config.data.source == "builtin" else 2
  shapes = {"tokens": ((b, k, t), jnp.int32), "attention_mask": ((b, k, t), bool),
            "ranks": ((b, k), jnp.int32), "margin": ((b,), jnp.float32)}
  if stage == "reward":
    from rlhf_jax.train.rm_steps import make_rm_steps  # pylint: disable=g-import-not-at-top
    train, _ = make_rm_steps(cfg, tx, mesh, rules, shardings, lc)
    return StagePlan(stage, [_train_program(
        "train_step", mesh, train.jitted, abstract, shardings, _batch(mesh, rules, shapes), cfg,
        b * k * t // div, t, lm_head=lc.lm_coef > 0)], _resident(abstract, shardings))
  if stage == "dpo":
    return _dpo_plan(config, cfg, tx, abstract, shardings, shapes, mesh, rules, b * k * t // div)
  raise ConfigError(f"stage={stage!r}: the planner covers pretrain, sft, reward, dpo and the RL "
                    "stages")


def _dpo_plan(config, cfg, tx, abstract, shardings, shapes, mesh, rules, tokens_per_device):
  from rlhf_jax.dpo import steps as dpo_steps  # pylint: disable=g-import-not-at-top
  from rlhf_jax import jit_steps  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train_state import param_shardings  # pylint: disable=g-import-not-at-top
  dc = dpo_steps.DPOConfig.from_dict(config.dpo)
  shapes = dict(shapes, response_mask=shapes["attention_mask"])
  batch = _batch(mesh, rules, shapes)
  ref_abs, ref_sh = (None, None) if cfg.lora_rank else param_shardings(cfg, mesh, rules, "lm")
  batch_sh = {k: v.sharding for k, v in batch.items()}
  train = jax.jit(jit_steps.with_rules(jit_steps.guard_nonfinite(functools.partial(
      dpo_steps.train_step, model_cfg=cfg, tx=tx, dc=dc)), rules),
      in_shardings=(shardings, ref_sh, batch_sh),
      out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
  ref = None if ref_abs is None else _with_shardings(ref_abs, ref_sh)
  plan = ProgramPlan("train_step", {
      "params": memory.tree_bytes_per_device(abstract.params, shardings.params),
      "optimizer": memory.tree_bytes_per_device(abstract.opt_state, shardings.opt_state),
      "reference": 0 if ref_abs is None else memory.tree_bytes_per_device(ref_abs, ref_sh),
      "activations": memory.activation_bytes(cfg, tokens_per_device, config.data.max_len),
      "logits": memory.logits_bytes(cfg, tokens_per_device // config.data.max_len,
                                    config.data.max_len)})
  plan.xla = memory.xla_figures(_compile(mesh, train, _with_shardings(abstract, shardings), ref,
                                         batch))
  resident = _resident(abstract, shardings)
  resident["reference"] = plan.ours["reference"]
  return StagePlan(config.stage, [plan], resident)


def _resident(abstract, shardings) -> dict:
  return {"params": memory.tree_bytes_per_device(abstract.params, shardings.params),
          "optimizer": memory.tree_bytes_per_device(abstract.opt_state, shardings.opt_state)}


def rl_plan(config, mesh, rules, replace) -> StagePlan:
  """generate, score and update of one RL iteration."""
  from rlhf_jax.reward.combine import CombineRule  # pylint: disable=g-import-not-at-top
  from rlhf_jax.reward.model import RewardModel  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl import ppo  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl.compiled import compile_rl  # pylint: disable=g-import-not-at-top
  from rlhf_jax.rl.config import RLConfig  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import loop, rl_state  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train_state import param_shardings  # pylint: disable=g-import-not-at-top
  cfg = RLConfig.from_dict(config.rl)
  heads = "lm+score" if cfg.critic == "shared" else "lm"
  pol = lora.configure(model_of(config, "lm", **replace), config.model)
  base = lora.base_config(pol)
  critic = lora.configure(base, config.model) if cfg.critic == "separate" else None
  steps = cfg.iterations * cfg.epochs * cfg.minibatches
  tx_p = loop.make_optimizer(config.optim, steps, pol)
  tx_c = loop.make_optimizer(config.critic_optim, steps, critic)
  abstract, shardings, pol_sh, cri_sh = rl_state.abstract_and_shardings(
      pol, heads, tx_p, critic, tx_c, mesh, rules)
  rm = RewardModel("reward", "", base, None, 1.0, 0.0, "")
  fns = compile_rl(model_cfg=pol, critic_cfg=critic, heads=heads, reward_models=[rm],
                   rule=CombineRule(), cfg=cfg, eos_id=1, pad_id=0, mesh=mesh, rules=rules,
                   policy_shardings=pol_sh, critic_shardings=cri_sh, tx_policy=tx_p,
                   tx_critic=tx_c)
  b, p, n = cfg.rollout_batch, config.data.max_prompt_len, cfg.max_new_tokens
  div = parallel.batch_divisor(mesh, rules)
  rep = parallel.replicated(mesh)
  prompt = _batch(mesh, rules, {"t": ((b, p), jnp.int32), "m": ((b, p), bool)})
  resp = _batch(mesh, rules, {"t": ((b, n), jnp.int32), "m": ((b, n), bool),
                              "lp": ((b, n), jnp.float32)})
  ref_abs, ref_sh = param_shardings(base, mesh, rules, "lm")
  rm_abs, rm_sh = param_shardings(base, mesh, rules, "score")
  pol_params = _with_shardings(abstract.params, shardings.params)
  critic_params = (_with_shardings(abstract.critic.params, shardings.critic.params)
                   if critic is not None else _abstract((), jnp.float32, rep))
  key = _abstract((2,), jnp.uint32, rep)
  beta = _abstract((), jnp.float32, rep)
  resident = _resident(abstract, shardings)
  resident["reference"] = 0 if pol.lora_rank else memory.tree_bytes_per_device(ref_abs, ref_sh)
  resident["reward_model"] = memory.tree_bytes_per_device(rm_abs, rm_sh)
  if critic is not None:
    resident["critic"] = memory.tree_bytes_per_device(abstract.critic.params,
                                                      shardings.critic.params)
    resident["critic_optimizer"] = memory.tree_bytes_per_device(abstract.critic.opt_state,
                                                                shardings.critic.opt_state)
  gen = ProgramPlan("generate", {"kv_cache": memory.kv_cache_bytes(pol, b // div, p + n)})
  gen.xla = memory.xla_figures(_compile(mesh, fns.jitted["generate"], pol_params, prompt["t"],
                                        prompt["m"], key))
  score = ProgramPlan("score", {"logits": memory.logits_bytes(pol, b // div, n, backward=False)})
  ref = None if pol.lora_rank else _with_shardings(ref_abs, ref_sh)
  score.xla = memory.xla_figures(_compile(
      mesh, fns.jitted["score"], pol_params, ref, critic_params, [_with_shardings(rm_abs, rm_sh)],
      beta, prompt["t"], prompt["m"], resp["t"], resp["m"], resp["lp"], {}))
  rows = _batch(mesh, rules, {k: ((b, p + n) if k in ("tokens", "attention_mask") else (b, n),
                                  jnp.int32 if k == "tokens" else
                                  (bool if k.endswith("mask") else jnp.float32))
                              for k in ppo.ROLLOUT_KEYS})
  policy_state = _with_shardings(abstract_policy(abstract), pol_sh)
  critic_state = (_with_shardings(abstract.critic, shardings.critic) if critic is not None
                  else _abstract((), jnp.float32, rep))
  upd = ProgramPlan("update", {
      "activations": memory.activation_bytes(pol, cfg.minibatch_size // div * (p + n), p + n) * (
          2 if critic is not None else 1),  # the critic's layers too
      "logits": memory.logits_bytes(pol, cfg.minibatch_size // div, n)})
  upd.xla = memory.xla_figures(_compile(mesh, fns.jitted["update"], policy_state, critic_state,
                                        rows, key, None, beta))
  return StagePlan(config.stage, [gen, score, upd], resident)


def abstract_policy(abstract):
  """The policy TrainState the update takes, from the abstract RL state."""
  from rlhf_jax.train_state import TrainState  # pylint: disable=g-import-not-at-top
  return TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract.params,
                    opt_state=abstract.opt_state, rng=jax.ShapeDtypeStruct((2,), jnp.uint32))


def _plan(config, replace) -> StagePlan:
  from rlhf_jax.rl.config import ALGORITHMS  # pylint: disable=g-import-not-at-top
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  if config.stage in ALGORITHMS:
    return rl_plan(config, mesh, rules, replace)
  return supervised_plan(config, mesh, rules, replace)


def stage_plan(config, exact_flops: bool = True) -> StagePlan:
  """The stage's programs. XLA's cost analysis counts a loop body once, so with scanned layers
  it would see one layer: with `exact_flops` the FLOPs come from the same programs built with 1
  and 2 unrolled layers, extrapolated to L (f1 + (L − 1)·(f2 − f1)); memory is always the real
  program's."""
  plan = _plan(config, {})
  layers = model_of(config).num_layers
  if exact_flops and model_of(config).scan_layers and layers > 1:
    one = _plan(config, {"num_layers": 1, "scan_layers": False})
    two = _plan(config, {"num_layers": 2, "scan_layers": False})
    for p, a, b in zip(plan.programs, one.programs, two.programs):
      p.xla["flops"] = a.xla["flops"] + (layers - 1) * (b.xla["flops"] - a.xla["flops"])
      p.xla["bytes_accessed"] = a.xla["bytes_accessed"] + (layers - 1) * (
          b.xla["bytes_accessed"] - a.xla["bytes_accessed"])
  return plan
