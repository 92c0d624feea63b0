"""The three compiled programs of an RL iteration, with explicit shardings on one mesh.

`compile_rl(...)` returns `RLFunctions`:
  generate(params, prompt [B, P], prompt_mask, rng) -> {"tokens", "mask", "logprobs"} [B, N]
  score(params, ref_params, critic_params, rm_params, beta, prompt, prompt_mask, response,
        response_mask, response_logprobs, fn_scores) -> the scored rollout
        (`rollout.score_rollout`); response_logprobs are generate's, for the sampler-vs-trainer
        log-prob check; fn_scores {name: [B]} the reward functions' scores ({} without any)
  update(policy, critic, rollout, rng, ptx) -> (policy, critic, metrics), donating the policy
        and critic states it replaces
  evaluate(params, ref_params, rm_params, prompt, prompt_mask, response, response_mask,
        fn_scores) ->
        only what a held-out evaluation reports (`rollout.evaluation_scores`): "rm_score",
        "kl_k1_seq", "has_eos" [B], equal to score's
Params and states come in with the shardings their rules give; batches are sharded over the
mesh's batch axes; metrics are replicated. Used by the RL stage and the benchmark alike.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from rlhf_jax import parallel, sampling
from rlhf_jax.jit_steps import in_mesh, with_rules
from rlhf_jax.models import lora
from rlhf_jax.rl import ppo
from rlhf_jax.rl.config import RLConfig
from rlhf_jax.rl.rollout import evaluation_scores, score_rollout
from rlhf_jax.workdir_model import param_shardings


@dataclasses.dataclass(frozen=True)
class RLFunctions:
  generate: Callable
  score: Callable
  update: Callable
  evaluate: Callable
  ptx_sharding: dict | None  # where PPO-ptx batches [E·M, rows, T] go
  jitted: dict  # the jax.jit objects, for compile counts and cost analyses


def compile_rl(*, model_cfg, critic_cfg, heads: str, reward_models, rule, cfg: RLConfig,
               eos_id: int, pad_id: int, mesh, rules, policy_shardings, critic_shardings,
               tx_policy, tx_critic, with_ptx: bool = False,
               function_names=()) -> RLFunctions:
  """policy_shardings: the policy TrainState's shardings; critic_shardings: the critic
  TrainState's, or None with a shared value head (the critic slot then holds a placeholder);
  function_names: the reward functions whose [B] scores score and evaluate take."""
  rep = parallel.replicated(mesh)
  bsh = lambda ndim: parallel.batch_sharding(mesh, rules, ndim)  # noqa: E731
  # The reference is a plain LM: the SFT params, or under LoRA the policy's base.
  ref_sh = param_shardings(lora.base_config(model_cfg), mesh, rules, "lm")[1]
  rm_sh = [param_shardings(rm.model_cfg, mesh, rules, "score")[1] for rm in reward_models]
  cri_sh = critic_shardings if critic_shardings is not None else rep
  cri_params_sh = critic_shardings.params if critic_shardings is not None else rep
  scfg = sampling.SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                 top_k=cfg.top_k, top_p=cfg.top_p)

  def _generate(params, prompt, prompt_mask, rng):
    return sampling.generate(params, prompt, prompt_mask, rng, model_cfg=model_cfg, cfg=scfg,
                             eos_id=eos_id, pad_id=pad_id)

  def _score(params, ref, critic, rms, beta, prompt, prompt_mask, resp, resp_mask, resp_logp,
             fn_scores):
    tokens = jnp.concatenate([prompt, resp], axis=1)
    mask = jnp.concatenate([prompt_mask, resp_mask], axis=1)
    return score_rollout(params, ref, critic, rms, beta, tokens, mask, resp_mask,
                         model_cfg=model_cfg, critic_cfg=critic_cfg, heads=heads,
                         reward_models=reward_models, rule=rule, cfg=cfg, eos_id=eos_id,
                         sample_logprobs_BxN=resp_logp, fn_scores=fn_scores)

  def _evaluate(params, ref, rms, prompt, prompt_mask, resp, resp_mask, fn_scores):
    tokens = jnp.concatenate([prompt, resp], axis=1)
    mask = jnp.concatenate([prompt_mask, resp_mask], axis=1)
    return evaluation_scores(params, ref, rms, tokens, mask, resp_mask, model_cfg=model_cfg,
                             heads=heads, reward_models=reward_models, rule=rule, cfg=cfg,
                             eos_id=eos_id, fn_scores=fn_scores)

  fn_sh = {name: bsh(1) for name in function_names}

  gen_jit = jax.jit(with_rules(_generate, rules),
                    in_shardings=(policy_shardings.params, bsh(2), bsh(2), rep),
                    out_shardings={"tokens": bsh(2), "mask": bsh(2), "logprobs": bsh(2)})
  score_jit = jax.jit(with_rules(_score, rules), in_shardings=(
      policy_shardings.params, ref_sh, cri_params_sh, rm_sh, rep, bsh(2), bsh(2), bsh(2),
      bsh(2), bsh(2), fn_sh))
  eval_jit = jax.jit(with_rules(_evaluate, rules), in_shardings=(
      policy_shardings.params, ref_sh, rm_sh, bsh(2), bsh(2), bsh(2), bsh(2), fn_sh))
  ptx_sh = None
  if with_ptx:
    spec = PartitionSpec(None, dict(rules).get("batch"), None)
    ptx_sh = {k: NamedSharding(mesh, spec) for k in ("tokens", "loss_mask", "attention_mask")}
  update_fn = functools.partial(ppo.update, cfg=cfg, model_cfg=model_cfg, critic_cfg=critic_cfg,
                                heads=heads, tx_policy=tx_policy, tx_critic=tx_critic)
  update_jit = jax.jit(with_rules(update_fn, rules),
                       in_shardings=(policy_shardings, cri_sh,
                                     {k: bsh(2) for k in ppo.ROLLOUT_KEYS}, rep, ptx_sh, rep),
                       out_shardings=(policy_shardings, cri_sh, rep), donate_argnums=(0, 1))
  return RLFunctions(in_mesh(gen_jit, mesh), in_mesh(score_jit, mesh),
                     in_mesh(update_jit, mesh), in_mesh(eval_jit, mesh), ptx_sh,
                     {"generate": gen_jit, "score": score_jit, "update": update_jit,
                      "evaluate": eval_jit})
