"""Compiling a stage's train and eval functions once, with explicit shardings.

`compile_steps` wraps `train(state, batch) -> (state, metrics)` and `evaluate(params, batch) ->
outputs` in `jax.jit` with the state's shardings in and out, the batch sharded over the mesh's
batch axes (each key by its rank), metrics and eval outputs replicated, and the train state
donated (the step replaces it), and guarded: a step whose loss, gradient norm or new params are
not finite leaves the state as it was (`guard_nonfinite`). Both run under the mesh and the
logical-axis rules.
Not for: the loss arithmetic (each stage's `*_steps.py`).
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

import flax.linen as nn
import jax

from rlhf_jax import nonfinite, parallel


def with_rules(fn: Callable, rules) -> Callable:
  """fn traced under the logical-axis rules (what `nn.with_logical_constraint` reads)."""
  @functools.wraps(fn)
  def wrapped(*args):
    with nn.logical_axis_rules(rules):
      return fn(*args)
  return wrapped


def guard_nonfinite(train: Callable) -> Callable:
  """train(state, *args) -> (state, metrics) that keeps the old params and optimizer state when
  the step's "loss", "grad_norm" or new params are not finite; metrics gain "nonfinite"."""
  @functools.wraps(train)
  def step(state, *args):
    new_state, metrics = train(state, *args)
    return nonfinite.keep_if_finite(state, new_state, metrics)
  return step


def in_mesh(fn: Callable, mesh) -> Callable:
  """fn called with `mesh` as the current mesh."""
  @functools.wraps(fn)
  def run(*args):
    with jax.set_mesh(mesh):
      return fn(*args)
  return run


def compile_steps(train: Callable, evaluate: Callable, mesh, rules, shardings,
                  batch_ndims: Mapping[str, int]):
  """(run_train(state, batch), run_eval(params, batch)); `.jitted` on each is the jit object."""
  batch_sh = {k: parallel.batch_sharding(mesh, rules, n) for k, n in batch_ndims.items()}
  rep = parallel.replicated(mesh)
  train_jit = jax.jit(with_rules(guard_nonfinite(train), rules),
                      in_shardings=(shardings, batch_sh),
                      out_shardings=(shardings, rep), donate_argnums=0)
  eval_jit = jax.jit(with_rules(evaluate, rules), in_shardings=(shardings.params, batch_sh),
                     out_shardings=rep)
  run_train, run_eval = in_mesh(train_jit, mesh), in_mesh(eval_jit, mesh)
  run_train.jitted = train_jit
  run_eval.jitted = eval_jit
  return run_train, run_eval
