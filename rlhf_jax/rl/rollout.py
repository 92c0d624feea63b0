"""Scoring a batch of sampled responses: every pass over model weights after sampling, jitted.

A rollout row is a left-padded prompt (width P) followed by the response slots (N):
tokens [B, P+N], attention mask [B, P+N], response mask [B, N] (the response up to and including
EOS). The token in slot t (column P+t) is predicted by the hidden state at column P+t−1, so every
per-token quantity of the response (log-probs, entropy, values) reads columns P−1 … P+N−2.

`score_rollout` computes, in one compiled function:
  logprobs     of the sampled tokens under the rollout policy (teacher-forced, at the sampling
               temperature: the "old" log-probs of PPO's ratio),
  ref_logprobs under the frozen reference (same temperature),
  values       from the critic (a separate score model, or the policy's own value head; zeros
               without a critic),
  score        the reward models' normalised scores and the reward functions' host-computed
               scores (`fn_scores`, name -> [B]) combined by the rule, or rl.missing_eos_score
               for responses that never emitted EOS,
the sampler-vs-trainer check, when given the sampler's own log-probs of the response:
  logprob_diff_mean / logprob_diff_max   mean and max over response tokens of
               |sampler log-prob − teacher-forced "old" log-prob| (`logprob_gap`): both are the
               same policy, so anything above rounding means PPO's ratio is not against the
               distribution that sampled (a bf16 sampler drifting from the fp32 trainer, say),
and from them the per-token rewards and the advantages: GAE (whitened) and returns with a
critic; with GRPO / RLOO the group-relative advantage of each response's reward (the RM score,
minus β·KL when rl.kl_penalty="reward"), on every token of the response.
`evaluation_scores` computes only what a held-out evaluation reports (RM score, k1 KL, EOS).
Not for: sampling (`rlhf_jax.sampling`) or the update (`rlhf_jax.rl.ppo`).
"""

from __future__ import annotations

import jax.numpy as jnp

from rlhf_jax.models import chunked_head, forward
from rlhf_jax.reward import combine
from rlhf_jax.reward.model import raw_rewards
from rlhf_jax.rl import advantages as adv_lib
from rlhf_jax.rl import group_advantages as group_lib
from rlhf_jax.rl import kl as kl_lib
from rlhf_jax.rl.config import GROUP_ALGORITHMS, RLConfig


def response_outputs(model_cfg, params, tokens_BxL, mask_BxL, prompt_width: int,
                     temperature: float, heads: str = "lm", want_entropy: bool = False):
  """dict: "logprobs" [B, N] of the response tokens at `temperature`, "entropy" [B, N] if asked,
  "values" [B, N] when the model has a score head. The LM head runs on the N response columns
  only (a 150K-token vocabulary over the whole row would dwarf the rest)."""
  has_lm, has_score = "lm" in heads.split("+"), "score" in heads.split("+")
  outs = ("hidden",) + (("scores",) if has_score else ())
  out = forward(model_cfg, params, tokens_BxL, mask_BxL, outputs=outs, heads=heads)
  p = prompt_width
  res = {}
  if has_lm:
    if want_entropy:
      res["logprobs"], res["entropy"] = chunked_head.logprobs_and_entropy(
          model_cfg, params, out["hidden"][:, p - 1:-1], tokens_BxL[:, p:], temperature)
    else:  # the same values, without a [B, N, V] log-softmax array (or logits, when chunked)
      res["logprobs"] = chunked_head.token_logprobs(model_cfg, params, out["hidden"][:, p - 1:-1],
                                                    tokens_BxL[:, p:], temperature)
  if has_score:
    res["values"] = out["scores"][:, p - 1:-1]
  return res


def logprob_gap(sample_logp_BxN, scored_logp_BxN, resp_mask_BxN):
  """(mean, max) over response tokens of |sampler log-prob − scored log-prob|; 0 without any."""
  m = resp_mask_BxN.astype(bool)
  gap = jnp.where(m, jnp.abs(sample_logp_BxN - scored_logp_BxN), 0.0)
  return jnp.sum(gap) / jnp.maximum(jnp.sum(m), 1), jnp.max(gap)


def sequence_scores(reward_models, rule, rm_params, tokens_BxL, mask_BxL, fn_scores=None):
  """(float32[B] combined score, {name: [B]}) of whole rows: each reward model's normalised
  score and each reward function's score (`fn_scores`, name -> [B], computed on the host)."""
  each = {rm.name: rm.gain * raw_rewards(p, rm.model_cfg, tokens_BxL, mask_BxL) + rm.bias
          for rm, p in zip(reward_models, rm_params)}
  each.update({name: s.astype(jnp.float32) for name, s in (fn_scores or {}).items()})
  return combine.combine_rewards(each, rule), each


def _policy_and_reference(params, ref_params, tokens_BxL, mask_BxL, resp_mask_BxN, *, model_cfg,
                          heads: str, cfg: RLConfig):
  """(the policy's `response_outputs`, its response log-probs [B, N], the reference's [B, N]),
  the log-probs 0 outside the response."""
  p = tokens_BxL.shape[1] - resp_mask_BxN.shape[1]
  pol = response_outputs(model_cfg, params, tokens_BxL, mask_BxL, p, cfg.temperature, heads)
  ref = response_outputs(model_cfg, ref_params, tokens_BxL, mask_BxL, p, cfg.temperature)
  logp = jnp.where(resp_mask_BxN, pol["logprobs"], 0.0)
  ref_logp = jnp.where(resp_mask_BxN, ref["logprobs"], 0.0)
  return pol, logp, ref_logp


def _has_eos(tokens_BxL, resp_mask_BxN, eos_id: int):
  """bool[B]: the response emitted EOS."""
  resp_tokens = tokens_BxL[:, tokens_BxL.shape[1] - resp_mask_BxN.shape[1]:]
  return jnp.any(resp_mask_BxN & (resp_tokens == eos_id), axis=1)


def _k1_per_sequence(logp_BxN, ref_logp_BxN, resp_mask_BxN):
  """float32[B]: the summed k1 KL (log π − log π_ref) over each response: what is reported."""
  return jnp.sum(jnp.where(resp_mask_BxN, logp_BxN - ref_logp_BxN, 0.0), axis=1)


def evaluation_scores(params, ref_params, rm_params, tokens_BxL, mask_BxL, resp_mask_BxN, *,
                      model_cfg, heads: str, reward_models, rule, cfg: RLConfig, eos_id: int,
                      fn_scores=None):
  """What a held-out evaluation reports of sampled rows, computed as `score_rollout` computes
  it (so the figures are the same) and nothing else (no critic, rewards or advantages):
  "rm_score" [B] (combined, normalised), "kl_k1_seq" [B], "has_eos" [B]."""
  resp_mask = resp_mask_BxN.astype(bool)
  _, logp, ref_logp = _policy_and_reference(params, ref_params, tokens_BxL, mask_BxL, resp_mask,
                                            model_cfg=model_cfg, heads=heads, cfg=cfg)
  rm_score, _ = sequence_scores(reward_models, rule, rm_params, tokens_BxL, mask_BxL, fn_scores)
  return {"rm_score": rm_score, "kl_k1_seq": _k1_per_sequence(logp, ref_logp, resp_mask),
          "has_eos": _has_eos(tokens_BxL, resp_mask, eos_id)}


def score_rollout(params, ref_params, critic_params, rm_params, beta, tokens_BxL, mask_BxL,
                  resp_mask_BxN, *, model_cfg, critic_cfg, heads: str, reward_models, rule,
                  cfg: RLConfig, eos_id: int, sample_logprobs_BxN=None, fn_scores=None):
  """The scored rollout: a dict of [B, N] / [B] arrays (see the module doc) plus the rewards,
  "advantages" and "returns" the update reads, and the KL of each row; with the sampler's
  log-probs, the scalars "logprob_diff_mean" and "logprob_diff_max"."""
  n = resp_mask_BxN.shape[1]
  p = tokens_BxL.shape[1] - n
  resp_mask = resp_mask_BxN.astype(bool)
  pol, logp, ref_logp = _policy_and_reference(params, ref_params, tokens_BxL, mask_BxL, resp_mask,
                                              model_cfg=model_cfg, heads=heads, cfg=cfg)
  if cfg.critic == "shared":
    values = pol["values"]
  elif cfg.critic == "none":
    values = jnp.zeros_like(pol["logprobs"])
  else:
    values = response_outputs(critic_cfg, critic_params, tokens_BxL, mask_BxL, p,
                              cfg.temperature, heads="score")["values"]
  values = jnp.where(resp_mask, values, 0.0)

  rm_score, each = sequence_scores(reward_models, rule, rm_params, tokens_BxL, mask_BxL,
                                   fn_scores)
  score = rm_score * cfg.reward_scale
  if cfg.reward_clip:
    score = jnp.clip(score, -cfg.reward_clip, cfg.reward_clip)
  has_eos = _has_eos(tokens_BxL, resp_mask, eos_id)
  if cfg.missing_eos == "penalty":
    score = jnp.where(has_eos, score, cfg.missing_eos_score)

  kl_tok = kl_lib.masked_kl_per_token(logp, ref_logp, resp_mask, cfg.kl_estimator)
  beta_reward = beta if cfg.kl_penalty == "reward" else jnp.zeros_like(beta)
  rewards = adv_lib.token_rewards(score, kl_tok, resp_mask, beta_reward)
  if cfg.algorithm in GROUP_ALGORITHMS:
    seq = jnp.sum(rewards, axis=1).reshape(-1, cfg.group_size)  # [P, G], prompt-major rows
    a = (group_lib.grpo_advantages(seq, cfg.group_scale) if cfg.algorithm == "grpo"
         else group_lib.rloo_advantages(seq))
    advantages = group_lib.per_token(a.reshape(-1), resp_mask)
    returns = advantages  # no critic reads them
  else:
    advantages, returns = adv_lib.gae(rewards, values, resp_mask, cfg.gamma, cfg.lam)
  if cfg.whiten_advantages:
    advantages = adv_lib.whiten(advantages, resp_mask)
  out = {
      "tokens": tokens_BxL, "attention_mask": mask_BxL, "response_mask": resp_mask,
      "logprobs": logp, "ref_logprobs": ref_logp, "values": values, "rewards": rewards,
      "advantages": advantages, "returns": returns, "score": score, "rm_score": rm_score,
      "has_eos": has_eos, "kl_seq": jnp.sum(kl_tok, axis=1),
      "kl_k1_seq": _k1_per_sequence(logp, ref_logp, resp_mask),
  }
  out.update({f"rm_{name}": s for name, s in each.items()} if len(each) > 1 else {})
  if sample_logprobs_BxN is not None:
    out["logprob_diff_mean"], out["logprob_diff_max"] = logprob_gap(sample_logprobs_BxN, logp,
                                                                    resp_mask)
  return out
