"""A NaN or Inf never becomes the model: the guard every training step runs, and what the loop
does when it fires.

On the device, `keep_if_finite` compares a step's loss, gradient norms and new parameters with
themselves (NaN != NaN, and Inf is caught by `isfinite`): when any is not finite, the step's new
parameters and optimizer state are replaced by the old ones, so the state a later step or a
checkpoint sees is always the last finite one. It costs one reduction over the parameters.
The step counter still advances (the batch was consumed, and a resumed run must read the same
batches), and the step's metrics carry `nonfinite` = 1.

On the host, `Watch.check` reads that flag each step. With `train.on_nonfinite="stop"` (the
default) the run ends with `NonFiniteError`, naming the step and the last good checkpoint, and
writes nothing more; with "skip" it logs the skipped step and goes on, and stops once
`train.max_nonfinite_skips` steps in a row were skipped.
Not for: checking inputs (the data loaders do that).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.errors import ConfigError, NonFiniteError

MODES = ("stop", "skip")


def all_finite(*trees) -> jax.Array:
  """bool scalar: every floating-point element of every tree is finite."""
  leaves = [x for t in trees for x in jax.tree.leaves(t)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
  if not leaves:
    return jnp.asarray(True)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def select(ok, new, old):
  """`new` where the scalar `ok` holds, else `old`, leaf by leaf."""
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def keep_if_finite(old_state, new_state, metrics: dict, keys=("loss", "grad_norm")):
  """(state, metrics): `new_state` if `metrics[keys]` and its params are all finite, else
  `old_state` with `new_state`'s step; metrics gain `nonfinite` (0.0 or 1.0)."""
  ok = all_finite([metrics[k] for k in keys], new_state.params)
  kept = select(ok, new_state, old_state).replace(step=new_state.step)
  return kept, dict(metrics, nonfinite=1.0 - ok.astype(jnp.float32))


def check_config(tc) -> None:
  if tc.on_nonfinite not in MODES:
    raise ConfigError(f"train.on_nonfinite={tc.on_nonfinite!r} must be one of {MODES}")
  if tc.max_nonfinite_skips < 1:
    raise ConfigError(f"train.max_nonfinite_skips={tc.max_nonfinite_skips} must be >= 1")


class Watch:
  """The host side: `check(step, metrics)` after each step; raises NonFiniteError to stop."""

  def __init__(self, stage: str, tc, ckpt, writer):
    check_config(tc)
    self.stage, self.mode, self.limit = stage, tc.on_nonfinite, tc.max_nonfinite_skips
    self.ckpt, self.writer = ckpt, writer
    self.in_a_row = 0
    self.skipped = 0

  def check(self, step: int, metrics: dict) -> bool:
    """True when `step` was skipped (its update not applied)."""
    if float(np.asarray(metrics["nonfinite"])) == 0.0:
      self.in_a_row = 0
      return False
    self.in_a_row += 1
    self.skipped += 1
    seen = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()
                     if k != "nonfinite" and np.ndim(v) == 0 and not _finite(v))
    what = f"step {step}: a non-finite loss, gradient or parameter ({seen or 'in the update'})"
    if self.mode == "skip" and self.in_a_row < self.limit:
      self.writer.text(f"[{self.stage}] {what}; the update was skipped ({self.in_a_row} in a "
                       f"row, {self.skipped} in all; the run stops at "
                       f"train.max_nonfinite_skips={self.limit} in a row)")
      return True
    last = self.ckpt.latest_step()
    kept = (f"the last good checkpoint is step {last} in {self.ckpt.directory}" if last is not
            None else f"no checkpoint was written yet in {self.ckpt.directory}")
    why = (f"{self.in_a_row} steps in a row were not finite" if self.mode == "skip" else
           "train.on_nonfinite='stop'")
    raise NonFiniteError(
        f"[{self.stage}] {what}; the update was not applied and the run stops ({why}); {kept}. "
        "Lower optim.learning_rate or check the data; train.on_nonfinite='skip' skips such "
        "steps instead")


def _finite(v) -> bool:
  return math.isfinite(float(np.asarray(v)))


def _fmt(v) -> str:
  return f"{float(np.asarray(v)):g}"
