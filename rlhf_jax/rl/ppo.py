"""One RL update over a scored rollout: epochs × shuffled minibatches in ONE compiled function.

`update(policy, critic, rollout, rng, ptx)` runs `cfg.epochs` passes; each pass permutes the B
rollout rows and takes `cfg.minibatches` optimizer steps (a `lax.scan` inside a `lax.scan`), so
the host launches one program per iteration. Per minibatch:
  policy loss   PPO clipped surrogate (A2C: unclipped), − entropy_coef · entropy,
                + ptx_coef · next-token loss on an SFT batch (InstructGPT's PPO-ptx)
  value loss    clipped squared error to the GAE returns, on the separate critic (its own
                optimizer) or, with a shared value head, added to the policy loss × vf_coef;
                none without a critic (GRPO, RLOO)
  KL in loss    with rl.kl_penalty="loss" (GRPO): + β · k3(π, π_ref) per token, masked mean
On the first minibatch of the first epoch the policy is still the rollout policy, so its
log-probs of those rows are the "old" ones exactly: they are taken from that forward pass
(stop-gradient) rather than from the scoring pass, which makes the ratio exactly 1 there and
spares nothing of correctness elsewhere. Metrics are means over all minibatches, plus those of
the first and last minibatch for the ratio diagnostics.
A NaN or Inf in any minibatch's metrics or in the new weights leaves both states as they came in
and sets the metric `nonfinite` (see `rlhf_jax.nonfinite`).
Not for: sampling and scoring (`rlhf_jax.rl.rollout`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from rlhf_jax import nonfinite
from rlhf_jax.models import chunked_head
from rlhf_jax.rl import kl as kl_lib
from rlhf_jax.rl import losses as rl_losses
from rlhf_jax.rl.config import RLConfig
from rlhf_jax.rl.rollout import response_outputs
from rlhf_jax.rl.advantages import masked_mean

ROLLOUT_KEYS = ("tokens", "attention_mask", "response_mask", "logprobs", "ref_logprobs",
                "values", "advantages", "returns")


def _ptx_loss(params, model_cfg, heads, batch):
  total, count = chunked_head.forward_masked_nll(model_cfg, params, batch["tokens"],
                                                 batch["attention_mask"], batch["loss_mask"],
                                                 heads)
  return total / jnp.maximum(count, 1.0)


def _policy_objective(params, rows, first, ptx_batch, *, cfg: RLConfig, model_cfg, heads: str,
                      prompt_width: int, beta):
  """(loss, metrics) of one minibatch of rollout rows for the policy: the clipped (or A2C)
  policy loss, minus the entropy bonus, plus β·KL when rl.kl_penalty="loss", the value loss
  of a shared value head and the PPO-ptx language-model loss. `first`: the iteration's first
  minibatch, whose "old" log-probs (and values) are the current ones, so its ratio is exactly 1."""
  out = response_outputs(model_cfg, params, rows["tokens"], rows["attention_mask"], prompt_width,
                         cfg.temperature, heads, want_entropy=True)
  mask = rows["response_mask"]
  old = jnp.where(first, jax.lax.stop_gradient(out["logprobs"]), rows["logprobs"])
  pg, met = rl_losses.policy_loss(out["logprobs"], old, rows["advantages"], mask, cfg.policy_clip)
  ent = masked_mean(out["entropy"], mask)
  loss = pg - cfg.entropy_coef * ent
  met["entropy"] = ent
  if cfg.kl_penalty == "loss":
    kl_tok = kl_lib.masked_kl_per_token(out["logprobs"], rows["ref_logprobs"], mask, "k3")
    kl = masked_mean(kl_tok, mask)
    loss = loss + beta * kl
    met["kl_loss"] = kl
  if cfg.critic == "shared":
    old_v = jnp.where(first, jax.lax.stop_gradient(out["values"]), rows["values"])
    vl, vmet = rl_losses.value_loss(out["values"], old_v, rows["returns"], mask,
                                    cfg.value_clip_eps)
    loss = loss + cfg.vf_coef * vl
    met.update(vmet)
  if ptx_batch is not None:
    ptx_nll = _ptx_loss(params, model_cfg, heads, ptx_batch)
    loss = loss + cfg.ptx_coef * ptx_nll
    met["ptx_loss"] = ptx_nll
  met["loss"] = loss
  return loss, met


def update(policy, critic, rollout, rng, ptx=None, beta=0.0, *, cfg: RLConfig, model_cfg,
           critic_cfg, heads: str, tx_policy, tx_critic):
  """(policy, critic, metrics). rollout: the ROLLOUT_KEYS of `score_rollout`'s output; ptx:
  None or {"tokens", "attention_mask", "loss_mask"} each [epochs·minibatches, ptx_batch, T];
  beta: the KL coefficient, read when rl.kl_penalty="loss"."""
  b, n = rollout["response_mask"].shape
  p = rollout["tokens"].shape[1] - n
  e, m, mb = cfg.epochs, cfg.minibatches, cfg.minibatch_size

  policy_objective = functools.partial(_policy_objective, cfg=cfg, model_cfg=model_cfg,
                                       heads=heads, prompt_width=p, beta=beta)

  def critic_objective(params, rows, first):
    values = response_outputs(critic_cfg, params, rows["tokens"], rows["attention_mask"], p,
                              cfg.temperature, heads="score")["values"]
    old_v = jnp.where(first, jax.lax.stop_gradient(values), rows["values"])
    return rl_losses.value_loss(values, old_v, rows["returns"], rows["response_mask"],
                                cfg.value_clip_eps)

  def minibatch(carry, xs):
    policy, critic = carry
    idx, first, ptx_batch = xs
    rows = jax.tree.map(lambda x: x[idx], rollout)
    (_, met), grads = jax.value_and_grad(policy_objective, has_aux=True)(
        policy.params, rows, first, ptx_batch)
    updates, opt_state = tx_policy.update(grads, policy.opt_state, policy.params)
    met["policy_grad_norm"] = optax.global_norm(grads)
    policy = policy.replace(step=policy.step + 1, params=optax.apply_updates(policy.params,
                                                                             updates),
                            opt_state=opt_state)
    if cfg.critic == "separate":
      (_, vmet), vgrads = jax.value_and_grad(critic_objective, has_aux=True)(
          critic.params, rows, first)
      vupdates, vopt = tx_critic.update(vgrads, critic.opt_state, critic.params)
      vmet["critic_grad_norm"] = optax.global_norm(vgrads)
      met.update(vmet)
      critic = critic.replace(step=critic.step + 1,
                              params=optax.apply_updates(critic.params, vupdates),
                              opt_state=vopt)
    return (policy, critic), met

  perms = jax.vmap(lambda k: jax.random.permutation(k, b))(jax.random.split(rng, e))
  idx = perms[:, :m * mb].reshape(e * m, mb)
  first = jnp.arange(e * m) == 0
  (new_policy, new_critic), mets = jax.lax.scan(minibatch, (policy, critic), (idx, first, ptx))
  metrics = {k: jnp.mean(v) for k, v in mets.items()}
  for k in ("ratio_mean", "ratio_max", "clip_frac", "approx_kl"):
    metrics[f"first_{k}"] = mets[k][0]
    metrics[f"last_{k}"] = mets[k][-1]
  # A NaN/Inf anywhere in the iteration's losses, gradient norms or new weights: the policy and
  # critic stay as they were (the host then stops or skips, by train.on_nonfinite).
  ok = nonfinite.all_finite(mets, new_policy.params,
                            new_critic.params if cfg.critic == "separate" else ())
  metrics["nonfinite"] = 1.0 - ok.astype(jnp.float32)
  return (nonfinite.select(ok, new_policy, policy), nonfinite.select(ok, new_critic, critic),
          metrics)
