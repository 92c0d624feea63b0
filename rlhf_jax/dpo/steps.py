"""The DPO train and eval steps: summed response log-probs of the policy and the frozen
reference for every response of a comparison, from one forward pass each, and the DPO / IPO
loss over every ordered pair of a prompt's responses.

Batches are the reward model's ([B, K, T] rows of prompt + response, ranks [B, K]) with a
"response_mask" [B, K, T]; a K-way ranking gives all its ordered pairs (weights: the preference
matrix), so K = 2 is the usual chosen/rejected pair.
Not for: the loss arithmetic (`rlhf_jax.dpo.losses`), the stage (`rlhf_jax.train.dpo_stage`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from rlhf_jax.dpo.losses import LOSSES, preference_loss
from rlhf_jax.errors import ConfigError, reject_unknown_fields
from rlhf_jax.models import ModelConfig, chunked_head, lora
from rlhf_jax.reward.losses import preference_matrix

BATCH_NDIMS = {"tokens": 3, "attention_mask": 3, "response_mask": 3, "ranks": 2, "margin": 1}


@dataclasses.dataclass(frozen=True)
class DPOConfig:
  beta: float = 0.1  # strength of the implicit KL constraint (IPO: its τ)
  loss: str = "dpo"  # "dpo" (sigmoid) or "ipo" (squared)
  label_smoothing: float = 0.0  # dpo: the probability that a label is flipped

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ConfigError(f"dpo.loss={self.loss!r} must be one of {LOSSES}")
    if not self.beta > 0:
      raise ConfigError(f"dpo.beta={self.beta} must be positive")
    if not 0 <= self.label_smoothing < 0.5:
      raise ConfigError(f"dpo.label_smoothing={self.label_smoothing} must be in [0, 0.5)")

  @classmethod
  def from_dict(cls, d) -> "DPOConfig":
    reject_unknown_fields(cls, d, "dpo")
    return cls(**dict(d))


def sequence_logps(params, model_cfg: ModelConfig, tokens_BxKxT, mask_BxKxT, resp_BxKxT):
  """float32[B, K]: the sum of each row's response-token log-probs (teacher-forced)."""
  b, k, t = tokens_BxKxT.shape
  tokens = tokens_BxKxT.reshape(b * k, t)
  tok_logp = chunked_head.forward_next_token_logprobs(  # no shifted or log-softmax copy
      model_cfg, params, tokens, mask_BxKxT.reshape(b * k, t))
  resp = resp_BxKxT.reshape(b * k, t)[:, 1:]
  return jnp.sum(jnp.where(resp, tok_logp, 0.0), axis=-1).reshape(b, k)


def _pairs(logp_BxK, ref_BxK, ranks_BxK, dc: DPOConfig):
  """The preference loss over every ordered pair (i above j) of each element."""
  better = preference_matrix(ranks_BxK)  # [B, K, K]
  pc = jnp.broadcast_to(logp_BxK[:, :, None], better.shape)
  pr = jnp.broadcast_to(logp_BxK[:, None, :], better.shape)
  rc = jnp.broadcast_to(ref_BxK[:, :, None], better.shape)
  rr = jnp.broadcast_to(ref_BxK[:, None, :], better.shape)
  loss, met = preference_loss(pc.reshape(-1), pr.reshape(-1), rc.reshape(-1), rr.reshape(-1),
                              dc.beta, dc.loss, dc.label_smoothing, better.reshape(-1))
  met["pairs"] = jnp.sum(better)
  return loss, met


def reference_of(params, ref_params):
  """The frozen reference: `ref_params`, or None for the policy's own base with its LoRA
  adapters switched off (no second copy of the weights)."""
  return lora.base_params(params) if ref_params is None else ref_params


def dpo_loss(params, ref_params, model_cfg: ModelConfig, batch, dc: DPOConfig):
  args = (batch["tokens"], batch["attention_mask"], batch["response_mask"])
  logp = sequence_logps(params, model_cfg, *args)
  ref = jax.lax.stop_gradient(sequence_logps(reference_of(params, ref_params), model_cfg, *args))
  return _pairs(logp, ref, batch["ranks"], dc)


def train_step(state, ref_params, batch, *, model_cfg: ModelConfig, tx, dc: DPOConfig):
  (loss, met), grads = jax.value_and_grad(dpo_loss, has_aux=True)(state.params, ref_params,
                                                                  model_cfg, batch, dc)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  met = dict(met, loss=loss, grad_norm=optax.global_norm(grads))
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), met


def eval_step(params, ref_params, batch, *, model_cfg: ModelConfig):
  """{"logp", "ref_logp"} [B, K]: the host computes the held-out metrics from them."""
  args = (batch["tokens"], batch["attention_mask"], batch["response_mask"])
  return {"logp": sequence_logps(params, model_cfg, *args),
          "ref_logp": sequence_logps(reference_of(params, ref_params), model_cfg, *args)}
