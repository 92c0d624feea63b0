"""The compiled steps of the reward-model stage: one optimizer step and one eval batch.

A batch holds B prompts with K responses each (`rlhf_jax.data.comparisons.pad_comparisons`):
tokens and attention_mask [B, K, T], ranks [B, K] (-1: empty slot), margin [B]. The B·K rows go
through the trunk in ONE forward pass; the reward of a response is the scalar head at its last
real token; the loss is `rlhf_jax.reward.losses.ranking_loss` over every ordered pair.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from rlhf_jax import losses
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import ModelConfig, forward
from rlhf_jax.reward.losses import ranking_loss, row_rewards
from rlhf_jax.jit_steps import compile_steps
from rlhf_jax.train_state import TrainState

BATCH_NDIMS = {"tokens": 3, "attention_mask": 3, "ranks": 2, "margin": 1}


@dataclasses.dataclass(frozen=True)
class RMLossConfig:
  margin: float = 0.0  # added to every pair's margin (and to a record's own margin)
  per_prompt: bool = True  # average a prompt's pairs, then prompts (InstructGPT); else all pairs
  center_coef: float = 0.0  # coef · mean(r²) keeps rewards centred
  # coef · next-token loss on every real token of every row (the model keeps an LM head): a
  # language-modelling regulariser for small comparison sets; it sees no preference label.
  lm_coef: float = 0.0

  def __post_init__(self):
    if self.center_coef < 0:
      raise ConfigError(f"loss.center_coef={self.center_coef} must be >= 0")
    if self.lm_coef < 0:
      raise ConfigError(f"loss.lm_coef={self.lm_coef} must be >= 0")

  @property
  def heads(self) -> str:
    return "lm+score" if self.lm_coef > 0 else "score"


def _rows_forward(params, model_cfg, tokens_BxKxT, mask_BxKxT, outputs, heads):
  b, k, t = tokens_BxKxT.shape
  tokens, mask = tokens_BxKxT.reshape(b * k, t), mask_BxKxT.reshape(b * k, t)
  out = forward(model_cfg, params, tokens, mask, outputs=outputs, heads=heads)
  return out, tokens, mask


def response_rewards(params, model_cfg: ModelConfig, tokens_BxKxT, mask_BxKxT,
                     heads: str = "score"):
  """float32[B, K]: the reward of every response, from one forward over the B·K rows."""
  b, k, _ = tokens_BxKxT.shape
  out, _, mask = _rows_forward(params, model_cfg, tokens_BxKxT, mask_BxKxT, ("scores",), heads)
  return row_rewards(out["scores"], mask, model_cfg).reshape(b, k)


def rm_loss(params, model_cfg: ModelConfig, batch, lc: RMLossConfig):
  b, k, _ = batch["tokens"].shape
  outputs = ("scores", "logits") if lc.lm_coef > 0 else ("scores",)
  out, tokens, mask = _rows_forward(params, model_cfg, batch["tokens"], batch["attention_mask"],
                                    outputs, lc.heads)
  rewards = row_rewards(out["scores"], mask, model_cfg).reshape(b, k)
  margin = (lc.margin + batch["margin"])[:, None, None]
  loss, metrics = ranking_loss(rewards, batch["ranks"], margin, lc.per_prompt, lc.center_coef)
  if lc.lm_coef > 0:
    total, count = losses.masked_nll(out["logits"], tokens, mask)
    lm = total / jnp.maximum(count, 1.0)
    loss = loss + lc.lm_coef * lm
    metrics = dict(metrics, lm_loss=lm)
  return loss, metrics


def train_step(state: TrainState, batch, *, model_cfg: ModelConfig, tx, lc: RMLossConfig):
  (loss, metrics), grads = jax.value_and_grad(rm_loss, has_aux=True)(state.params, model_cfg,
                                                                     batch, lc)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch, *, model_cfg: ModelConfig, heads: str = "score"):
  """{"rewards": [B, K]}: the host computes every evaluation metric from them."""
  return {"rewards": response_rewards(params, model_cfg, batch["tokens"],
                                      batch["attention_mask"], heads)}


def make_rm_steps(model_cfg: ModelConfig, tx, mesh, rules, shardings: TrainState,
                  lc: RMLossConfig):
  """(train_step(state, batch) -> (state, metrics), eval_step(params, batch) -> rewards)."""
  return compile_steps(
      lambda state, batch: train_step(state, batch, model_cfg=model_cfg, tx=tx, lc=lc),
      lambda params, batch: eval_step(params, {k: batch[k] for k in ("tokens",
                                                                   "attention_mask")},
                                      model_cfg=model_cfg, heads=lc.heads),
      mesh, rules, shardings, BATCH_NDIMS)
