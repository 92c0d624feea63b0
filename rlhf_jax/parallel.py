"""Mesh, logical-axis rules, and placing parameters and host batches on the mesh.

One table (`DEFAULT_RULES`, overridable from the config) maps the logical axis names carried by
every parameter and activation to the mesh axes ("data", "fsdp", "tensor"). Parameters are born
sharded: `jax.eval_shape` of the init gives their logical specs, the rules turn those into
`NamedSharding`s, and a jitted init with those `out_shardings` materialises each shard where it
lives. Not for: multi-host process start-up (`rlhf_jax.main`), checkpoints (`checkpoint.py`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rlhf_jax.errors import ConfigError, ShapeError

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of axes, or None for replicated).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_act", None),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    ("layers", None),
)


def make_mesh(shape: dict[str, int] | Sequence[int], devices=None) -> Mesh:
  """A mesh with axes (data, fsdp, tensor); one size may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if isinstance(shape, dict):
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
      raise ConfigError(f"mesh: unknown axis {unknown}; the axes are {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  else:
    sizes = [int(s) for s in shape]
  if len(sizes) != len(MESH_AXES) or sizes.count(-1) > 1 or any(
      s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"mesh: sizes {dict(zip(MESH_AXES, sizes))} must be positive, with at "
                      "most one -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n % known:
      raise ShapeError(f"mesh {dict(zip(MESH_AXES, sizes))}: {n} devices do not divide by "
                       f"the fixed axes' product {known}")
    sizes[sizes.index(-1)] = n // known
  if math.prod(sizes) != n:
    raise ShapeError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"but {n} are available ({jax.devices()[0].platform})")
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=auto, devices=devices)


def rules_from_config(overrides: Sequence[Sequence[Any]] | None = None):
  """DEFAULT_RULES with (logical, mesh_axes) pairs from the config replacing same-named rows."""
  rules = dict(DEFAULT_RULES)
  for row in overrides or ():
    if len(row) != 2:
      raise ConfigError(f"sharding rule {row!r} must be a (logical_axis, mesh_axes) pair")
    logical, mesh_axes = row
    axes = mesh_axes if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)
    bad = [a for a in axes if a is not None and a not in MESH_AXES]
    if bad:
      raise ConfigError(f"sharding rule for {logical!r} names mesh axis {bad}; the axes are "
                        f"{MESH_AXES}")
    rules[logical] = tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes
  return tuple(rules.items())


def logical_shardings(abstract_boxed, mesh: Mesh, rules):
  """NamedShardings for a pytree of `nn.Partitioned` leaves (from `jax.eval_shape(init)`)."""
  specs = nn.get_partition_spec(abstract_boxed)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  _check_divisible(nn.meta.unbox(abstract_boxed), shardings, mesh)
  return shardings


def _check_divisible(abstract, shardings, mesh: Mesh):
  def check(path, leaf, sharding):
    for dim, axes in zip(leaf.shape, sharding.spec):
      axes = axes if isinstance(axes, tuple) else (axes,)
      size = math.prod(mesh.shape[a] for a in axes if a is not None)
      if dim % size:
        name = jax.tree_util.keystr(path)
        raise ShapeError(f"parameter {name} of shape {leaf.shape}: dimension {dim} does not "
                         f"divide over mesh axes {axes} of size {size}; change the mesh or the "
                         "sharding rules")

  jax.tree_util.tree_map_with_path(check, abstract, shardings)


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a [B, ...] batch: batch over the rule's axes, everything else replicated."""
  batch_axes = dict(rules).get("batch")
  return NamedSharding(mesh, P(batch_axes, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_divisor(mesh: Mesh, rules) -> int:
  axes = dict(rules).get("batch")
  axes = axes if isinstance(axes, tuple) else (axes,)
  return math.prod(mesh.shape[a] for a in axes if a is not None)


def check_batch_size(batch_size: int, mesh: Mesh, rules) -> None:
  """At start, before any data is made: the global batch must split evenly over the mesh."""
  div = batch_divisor(mesh, rules)
  if batch_size % div:
    raise ConfigError(f"train.batch_size={batch_size} does not divide over the mesh's batch "
                      f"axes (size {div} of {dict(mesh.shape)}); use a multiple of {div}")


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh, rules) -> dict[str, jax.Array]:
  """Host numpy batch -> global jax.Arrays sharded over the batch axes.

  Each process passes its own slice (rows process_index*B/P ... of the global batch); the global
  array is assembled with `make_array_from_process_local_data`, so one code path serves one and
  many hosts.
  """
  out = {}
  div = batch_divisor(mesh, rules)
  for k, v in batch.items():
    v = np.asarray(v)
    global_rows = v.shape[0] * jax.process_count()
    if global_rows % div:
      raise ShapeError(f"batch of {global_rows} rows does not divide over the mesh's batch axes "
                       f"(size {div}); make the batch size a multiple of {div}")
    sharding = batch_sharding(mesh, rules, v.ndim)
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def to_host(x) -> np.ndarray:
  """A (global) jax.Array as one numpy array holding all of it, on every process: an array
  that spans several processes is all-gathered (every process must call this, in the same
  order); anything else is simply fetched."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))
