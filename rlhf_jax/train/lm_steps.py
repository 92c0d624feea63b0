"""The compiled steps of the language-model stages: one optimizer step and one eval batch.

`make_lm_steps` closes over the model config and optimizer and returns two functions jitted once
with explicit in/out shardings (`jit_steps.compile_steps`); the train step donates its state.
The batch is the dict made by `rlhf_jax.data.batching` ("tokens", "loss_mask",
"attention_mask", each [B, T]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from rlhf_jax.models import ModelConfig, chunked_head
from rlhf_jax.jit_steps import compile_steps
from rlhf_jax.train_state import TrainState

BATCH_KEYS = ("tokens", "loss_mask", "attention_mask")


def lm_loss(params, model_cfg: ModelConfig, batch):
  total, count = chunked_head.forward_masked_nll(model_cfg, params, batch["tokens"],
                                                 batch["attention_mask"], batch["loss_mask"])
  return total / jnp.maximum(count, 1.0), count


def train_step(state: TrainState, batch, *, model_cfg: ModelConfig, tx):
  (loss, count), grads = jax.value_and_grad(lm_loss, has_aux=True)(state.params, model_cfg,
                                                                   batch)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "target_tokens": count, "grad_norm": optax.global_norm(grads)}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params, batch, *, model_cfg: ModelConfig):
  total, count = chunked_head.forward_masked_nll(model_cfg, params, batch["tokens"],
                                                 batch["attention_mask"], batch["loss_mask"])
  return {"nll_sum": total, "target_tokens": count}


def make_lm_steps(model_cfg: ModelConfig, tx, mesh, rules, shardings: TrainState):
  """(train_step(state, batch) -> (state, metrics), eval_step(params, batch) -> sums), jitted."""
  return compile_steps(lambda state, batch: train_step(state, batch, model_cfg=model_cfg, tx=tx),
                       lambda params, batch: eval_step(params, batch, model_cfg=model_cfg),
                       mesh, rules, shardings, {k: 2 for k in BATCH_KEYS})
