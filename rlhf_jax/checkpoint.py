"""Orbax checkpoints of a stage: device state (params, optimizer, step, RNG) plus a JSON record.

The JSON record carries what is not an array: the data iterator's position, the model config, and
whatever the stage wants to find again on resume. Restoring takes an abstract target whose leaves
carry the shardings of the CURRENT mesh, so a checkpoint written on one mesh restores onto
another. Every process calls save/restore (Orbax coordinates multi-host writes). Not for: Hugging
Face export (`models/hf.py`).
"""

from __future__ import annotations

import os
from typing import Any

import flax.serialization
import jax
import orbax.checkpoint as ocp

from rlhf_jax.errors import DataError


class Checkpointer:
  """A CheckpointManager over `directory`, keeping the last `keep` steps."""

  def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._mngr = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, state, meta: dict[str, Any], force: bool = False) -> None:
    """Writes `state.params` and the rest of the state as separate items (a later stage can
    read the params alone), and `meta` as JSON."""
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
    out = self._restore(step, params=ocp.args.StandardRestore(target))
    return out["params"]

  def _restore(self, step, **items):
    try:
      return self._mngr.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise DataError(f"checkpoint {self.directory}/{step} does not match this run's model or "
                      f"optimizer (was it written with another config?): {e}") from None

  def read_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self.latest_step() if step is None else step
    return self._restore(step, meta=ocp.args.JsonRestore())["meta"]

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def _with_shardings(abstract, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                      shardings)
