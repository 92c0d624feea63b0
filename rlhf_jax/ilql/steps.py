"""The ILQL state, train step and eval step: one forward of the trunk per batch, the LM head,
the Q and V heads and the target Q heads on the response positions, every loss of
`losses.py`, one optimizer update of trunk, LM head and heads, then the Polyak update of the
targets.

A batch row is a left-padded prompt (width P) followed by N response slots, as a rollout row:
"tokens" / "attention_mask" [B, P+N], "response_mask" [B, N], "reward" [B]. The state of
response token t is the hidden state at column P+t−1.
Objective: Σ_i TD(Q_i) + expectile(V) + cql_coef·Σ_i CQL(Q_i) + lm_coef·NLL(LM head); the TD
targets read V detached, the expectile reads the target Qs detached.
Not for: the stage (`rlhf_jax.train.ilql_stage`) or decoding (`decode.py`).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from rlhf_jax import losses as lm_losses
from rlhf_jax.ilql import heads as heads_lib
from rlhf_jax.ilql import losses
from rlhf_jax.ilql.config import ILQLConfig
from rlhf_jax.models import ModelConfig, forward, lm_logits

BATCH_NDIMS = {"tokens": 2, "attention_mask": 2, "response_mask": 2, "reward": 1}


@flax.struct.dataclass
class ILQLState:
  step: jax.Array  # int32 scalar
  params: Any  # the policy (trunk and LM head): what a later stage reads from the workdir
  heads: Any  # {"q1", "q2", "v"}
  target: Any  # {"q1", "q2"}: Polyak averages of the Q heads
  opt_state: Any  # over {"policy": params, "heads": heads}
  rng: jax.Array  # raw uint32[2]


def trainable(state: ILQLState) -> dict:
  return {"policy": state.params, "heads": state.heads}


def _outputs(trainable_, target, batch, model_cfg: ModelConfig, width: int):
  """Every per-token quantity of the response slots (float32 [B, N] unless noted)."""
  tokens = batch["tokens"]
  n = batch["response_mask"].shape[1]
  p = tokens.shape[1] - n
  hidden = forward(model_cfg, trainable_["policy"], tokens, batch["attention_mask"],
                   outputs=("hidden",))["hidden"][:, p - 1:-1]
  actions = tokens[:, p:]
  logits = lm_logits(model_cfg, trainable_["policy"], hidden)
  h = heads_lib.apply_heads(model_cfg, width, trainable_["heads"], hidden)
  tq = heads_lib.target_q(model_cfg, width, target, hidden)

  def taken(q):
    return jnp.take_along_axis(q, actions[..., None], axis=-1)[..., 0]

  return {"actions": actions, "logp": lm_losses.token_logprobs(logits, actions),
          "q1_all": h["q1"], "q2_all": h["q2"], "q1": taken(h["q1"]), "q2": taken(h["q2"]),
          "v": h["v"], "target_q": jax.lax.stop_gradient(taken(tq))}


def objective(trainable_, target, batch, model_cfg: ModelConfig, width: int, ic: ILQLConfig):
  """(loss, metrics) of one batch."""
  o = _outputs(trainable_, target, batch, model_cfg, width)
  m = batch["response_mask"]
  y = losses.td_targets(jax.lax.stop_gradient(o["v"]), batch["reward"], m, ic.gamma)
  q_loss = losses.td_loss(o["q1"], y, m) + losses.td_loss(o["q2"], y, m)
  v_loss = losses.expectile_loss(o["target_q"], o["v"], m, ic.tau)
  cql = (losses.cql_loss(o["q1_all"], o["actions"], m) +
         losses.cql_loss(o["q2_all"], o["actions"], m))
  nll = losses.masked_mean(-o["logp"], m)
  loss = q_loss + v_loss + ic.cql_coef * cql + ic.lm_coef * nll
  first = m[:, 0].astype(jnp.float32)
  met = {"q_loss": q_loss, "v_loss": v_loss, "cql_loss": cql, "lm_loss": nll,
         "q_mean": losses.masked_mean(o["q1"], m), "v_mean": losses.masked_mean(o["v"], m),
         "v_first": jnp.sum(o["v"][:, 0] * first) / jnp.maximum(jnp.sum(first), 1.0),
         "advantage_mean": losses.masked_mean(o["target_q"] - o["v"], m)}
  return loss, met


def train_step(state: ILQLState, batch, *, model_cfg: ModelConfig, width: int, tx,
               ic: ILQLConfig):
  (loss, met), grads = jax.value_and_grad(objective, has_aux=True)(
      trainable(state), state.target, batch, model_cfg, width, ic)
  updates, opt_state = tx.update(grads, state.opt_state, trainable(state))
  new = optax.apply_updates(trainable(state), updates)
  target = heads_lib.polyak(state.target, new["heads"], ic.polyak)
  met = dict(met, loss=loss, grad_norm=optax.global_norm(grads))
  return state.replace(step=state.step + 1, params=new["policy"], heads=new["heads"],
                       target=target, opt_state=opt_state), met


def eval_step(params, heads, target, batch, *, model_cfg: ModelConfig, width: int,
              ic: ILQLConfig):
  """{loss terms: summed over the batch's tokens, "tokens"}: the host averages over batches."""
  loss, met = objective({"policy": params, "heads": heads}, target, batch, model_cfg, width, ic)
  count = jnp.sum(batch["response_mask"].astype(jnp.float32))
  out = {k: met[k] * count for k in ("q_loss", "v_loss", "cql_loss", "lm_loss", "v_mean",
                                     "advantage_mean")}
  return dict(out, loss=loss * count, tokens=count)
