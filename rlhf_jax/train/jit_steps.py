"""Compiling a stage's train and eval functions once, with explicit shardings.

`compile_steps` wraps `train(state, batch) -> (state, metrics)` and `evaluate(params, batch) ->
outputs` in `jax.jit` with the state's shardings in and out, the batch sharded over the mesh's
batch axes (each key by its rank), metrics and eval outputs replicated, and the train state
donated (the step replaces it). Both run under the mesh and the logical-axis rules.
Not for: the loss arithmetic (each stage's `*_steps.py`).
"""

from __future__ import annotations

from typing import Callable, Mapping

import flax.linen as nn
import jax

from rlhf_jax import parallel


def compile_steps(train: Callable, evaluate: Callable, mesh, rules, shardings,
                  batch_ndims: Mapping[str, int]):
  """(run_train(state, batch), run_eval(params, batch)); `.jitted` on each is the jit object."""
  batch_sh = {k: parallel.batch_sharding(mesh, rules, n) for k, n in batch_ndims.items()}
  rep = parallel.replicated(mesh)

  def with_rules(fn):
    def wrapped(*args):
      with nn.logical_axis_rules(rules):
        return fn(*args)
    return wrapped

  train_jit = jax.jit(with_rules(train), in_shardings=(shardings, batch_sh),
                      out_shardings=(shardings, rep), donate_argnums=0)
  eval_jit = jax.jit(with_rules(evaluate), in_shardings=(shardings.params, batch_sh),
                     out_shardings=rep)

  def run_train(state, batch):
    with jax.set_mesh(mesh):
      return train_jit(state, batch)

  def run_eval(params, batch):
    with jax.set_mesh(mesh):
      return eval_jit(params, batch)

  run_train.jitted = train_jit
  run_eval.jitted = eval_jit
  return run_train, run_eval
