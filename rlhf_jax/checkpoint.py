"""Orbax checkpoints of a stage: device state (params, optimizer, step, RNG) plus a JSON record.

The JSON record carries what is not an array: the data iterator's position, the model config, and
whatever the stage wants to find again on resume. Restoring takes an abstract target whose leaves
carry the shardings of the CURRENT mesh, so a checkpoint written on one mesh restores onto
another. Every process calls save/restore (Orbax coordinates multi-host writes). Not for: Hugging
Face export (`models/hf.py`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from absl import logging as absl_logging

import flax.serialization
import jax
import orbax.checkpoint as ocp

from rlhf_jax import nonfinite, parallel
from rlhf_jax.errors import DataError, NonFiniteError


class Checkpointer:
  """A CheckpointManager over `directory`, keeping the last `keep` steps."""

  def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options)
    self._closed = False

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, state, meta: dict[str, Any], force: bool = False) -> None:
    """Writes `state.params` and the rest of the state as separate items (a later stage can
    read the params alone), and `meta` as JSON. Parameters that are not all finite are never
    written (NonFiniteError), so the newest checkpoint, and every one rotation keeps, is a
    finite one."""
    if not bool(parallel.to_host(nonfinite.all_finite(state.params))):
      raise NonFiniteError(f"step {step}: the parameters hold NaN/Inf; no checkpoint was "
                           f"written, the last good one is step {self.latest_step()} in "
                           f"{self.directory}")
    tree = flax.serialization.to_state_dict(state)
    params = tree.pop("params")
    self._mngr.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(tree),
        meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, abstract_state, shardings, step: int | None = None):
    """(state, meta) restored onto `shardings`; the latest step when `step` is None."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise DataError(f"no checkpoint in {self.directory}")
    target = _with_shardings(abstract_state, shardings)
    tree = flax.serialization.to_state_dict(target)
    params = tree.pop("params")
    self._check_shapes(step, params=params, train=tree)
    out = self._restore(step, params=ocp.args.StandardRestore(params),
                        train=ocp.args.StandardRestore(tree), meta=ocp.args.JsonRestore())
    restored = dict(out["train"], params=out["params"])
    return flax.serialization.from_state_dict(target, restored), out["meta"]

  def restore_params(self, abstract_params, shardings, step: int | None = None):
    """Only the parameters (e.g. an SFT policy as the start of the reward model)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise DataError(f"no checkpoint in {self.directory}")
    target = _with_shardings(abstract_params, shardings)
    self._check_shapes(step, params=target)
    out = self._restore(step, params=ocp.args.StandardRestore(target))
    return out["params"]

  def _check_shapes(self, step, **targets) -> None:
    """DataError naming the arrays whose saved shape differs from this run's, read from the
    checkpoint's metadata before any array is: a failed restore would leave Orbax's other
    reads in flight, and they print into stderr after the message."""
    wrong = []
    for item, target in targets.items():
      with _quiet_absl():
        tree = ocp.StandardCheckpointer().metadata(
            os.path.join(self.directory, str(step), item))
      saved = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(
          getattr(tree, "item_metadata", tree))[0] if hasattr(x, "shape")}
      for path, x in jax.tree_util.tree_flatten_with_path(target)[0]:
        key = jax.tree_util.keystr(path)
        if key in saved and tuple(saved[key]) != tuple(x.shape):
          wrong.append(f"{item}{key}: saved {tuple(saved[key])}, this run {tuple(x.shape)}")
    if wrong:
      more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
      raise DataError(f"checkpoint {self.directory}/{step} does not match this run's model or "
                      f"optimizer (was it written with another config?): "
                      f"{'; '.join(wrong[:3])}{more}")

  def _restore(self, step, **items):
    try:
      return self._mngr.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      # Orbax's other reads of this restore are still in flight; closing waits for them, so
      # none of them complains into stderr after the message (a closed event loop) at exit.
      self.close()
      first = (str(e).strip().split(". ") or [type(e).__name__])[0][:300]
      raise DataError(f"checkpoint {self.directory}/{step} does not match this run's model or "
                      f"optimizer (was it written with another config?): {first}") from None

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self.latest_step() if step is None else step
    return self._restore(step, meta=ocp.args.JsonRestore())["meta"]

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    """Waits for every save in flight to be on disk, then releases the manager (idempotent)."""
    if self._closed:
      return
    self._closed = True
    self._mngr.wait_until_finished()
    self._mngr.close()


@contextlib.contextmanager
def _quiet_absl():
  """Orbax warns (through absl) about metadata files older checkpoints lack; not the user's
  concern here."""
  level = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(level)


def _with_shardings(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                      shardings)
