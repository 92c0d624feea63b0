"""Train state and optimizer: what a step replaces, born sharded on the mesh.

`TrainState` holds everything a resumed run needs from the device side (step, params, optimizer
state, RNG key); the data position lives with the checkpoint (see `checkpoint.py`). Not for:
the loss or the loop.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from rlhf_jax import parallel
from rlhf_jax.errors import ConfigError, reject_unknown_fields
from rlhf_jax.models import ModelConfig
from rlhf_jax.models.param_kinds import is_weight_matrix
# Moved below the stages (the reward scorer needs them too); the old names stay importable here.
from rlhf_jax.workdir_model import boxed_params_fn as _boxed_params_fn
from rlhf_jax.workdir_model import param_shardings  # noqa: F401


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar
  params: Any
  opt_state: Any
  rng: jax.Array  # raw uint32[2] key, so checkpoints need no key-type handler


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """AdamW with linear warm-up and cosine decay, global-norm clipping, weight decay on weight
  matrices only (kernels and embedding tables; never norm gains or biases: see
  `models.param_kinds`)."""

  learning_rate: float = 1e-3
  warmup_steps: int = 20
  total_steps: int = 1000
  final_lr_fraction: float = 0.1
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  grad_clip_norm: float = 1.0

  def __post_init__(self):
    for f, ok in (("learning_rate", self.learning_rate > 0), ("warmup_steps",
                                                              self.warmup_steps >= 0),
                  ("total_steps", self.total_steps > 0),
                  ("final_lr_fraction", 0 <= self.final_lr_fraction <= 1),
                  ("weight_decay", self.weight_decay >= 0), ("b1", 0 <= self.b1 < 1),
                  ("b2", 0 <= self.b2 < 1), ("grad_clip_norm", self.grad_clip_norm >= 0)):
      if not ok:
        raise ConfigError(f"optim.{f}={getattr(self, f)!r} is out of range")

  @classmethod
  def from_dict(cls, d) -> "OptimConfig":
    reject_unknown_fields(cls, d, "optim")
    return cls(**dict(d))

  def schedule(self) -> optax.Schedule:
    decay_steps = max(self.total_steps, self.warmup_steps + 1)
    return optax.warmup_cosine_decay_schedule(
        0.0, self.learning_rate, self.warmup_steps, decay_steps,
        end_value=self.learning_rate * self.final_lr_fraction)

  def make(self, trainable=None) -> optax.GradientTransformation:
    """The transformation; `trainable` (params -> a bool per leaf, e.g. `lora.trainable`)
    restricts it to those leaves: the others get zero updates, no moments, no weight decay, and
    the clipping norm is over the trained leaves only."""
    def decay_mask(params):  # by name, not rank: scanned norm gains are [L, D]
      return jax.tree_util.tree_map_with_path(lambda path, _: is_weight_matrix(path), params)

    parts = [optax.clip_by_global_norm(self.grad_clip_norm)] if self.grad_clip_norm else []
    parts.append(optax.adamw(self.schedule(), b1=self.b1, b2=self.b2, eps=self.eps,
                             weight_decay=self.weight_decay, mask=decay_mask))
    tx = optax.chain(*parts)
    if trainable is None:
      return tx
    return optax.multi_transform(
        {"train": tx, "frozen": optax.set_to_zero()},
        lambda params: jax.tree.map(lambda t: "train" if t else "frozen", trainable(params)))


def _opt_state_shardings(abstract_opt, abstract_params, param_sh, rep):
  """Moment buffers shard like their parameter; counters and the like are replicated.

  A buffer is matched to its parameter by the trailing dict keys of its path (optax nests the
  moments as params-shaped trees under its own state nodes) and its shape; this also covers
  masked states (LoRA's frozen leaves have no buffers), which `optax.tree_map_params` does not."""
  flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  by_path = {tuple(k.key for k in path): (x.shape, sh)
             for (path, x), sh in zip(flat, jax.tree.leaves(param_sh))}

  def pick(path, x):
    keys = []
    for k in reversed(path):
      if not isinstance(k, jax.tree_util.DictKey):
        break
      keys.append(k.key)
    hit = by_path.get(tuple(reversed(keys)))
    return hit[1] if hit is not None and hit[0] == x.shape else rep

  return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def state_shardings(model_cfg: ModelConfig, tx, mesh, rules, heads: str = "lm"):
  """(abstract TrainState, its NamedShardings, boxed-params init fn), allocating nothing."""
  abstract_params, param_sh = param_shardings(model_cfg, mesh, rules, heads)
  boxed_params = _boxed_params_fn(model_cfg, heads)
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  rep = parallel.replicated(mesh)
  opt_sh = _opt_state_shardings(abstract_opt, abstract_params, param_sh, rep)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                        opt_state=abstract_opt, rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  shardings = TrainState(step=rep, params=param_sh, opt_state=opt_sh, rng=rep)
  return abstract, shardings, boxed_params


def create_state(model_cfg: ModelConfig, tx, mesh, rules, seed: int, params=None,
                 heads: str = "lm"):
  """A fresh TrainState born sharded; `params` (host arrays, e.g. from a HF checkpoint) if given.

  Returns (state, shardings).
  """
  _, shardings, boxed_params = state_shardings(model_cfg, tx, mesh, rules, heads)
  rng = jax.random.PRNGKey(seed)
  init_rng, state_rng = jax.random.split(rng)

  def init(init_rng, state_rng, params):
    if params is None:
      params = nn.meta.unbox(boxed_params(init_rng))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=state_rng)

  if params is not None:
    params = jax.device_put(params, shardings.params)
  with nn.logical_axis_rules(rules):
    state = jax.jit(init, out_shardings=shardings)(init_rng, state_rng, params)
  return state, shardings
