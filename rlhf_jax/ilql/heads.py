"""ILQL's heads on the policy trunk: two Q heads over the vocabulary and one V head, each a
two-layer MLP of the final hidden state, and their Polyak-averaged targets.

Parameters carry logical axis names like the decoder's (in: ("embed", "mlp"), out: ("mlp",
"vocab")), so they shard under the same rules. `Heads` returns per position
  q1, q2  float32[..., V]  Q(s, a) for every token a
  v       float32[...]     V(s)
The targets are copies of q1 and q2 (`target_of`) moved toward them by `polyak` after every
step; V's expectile regression and decoding read the targets (the smaller of the two Qs).
Not for: the losses (`losses.py`) or the trunk (`rlhf_jax.models`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax.models import ModelConfig

_INIT = nn.initializers.normal(stddev=0.02)
Q_NAMES = ("q1", "q2")


class Mlp(nn.Module):
  """hidden [..., D] -> float32 [..., out]: D -> width (ReLU) -> out."""
  config: ModelConfig
  width: int
  out: int
  out_axis: str | None

  @nn.compact
  def __call__(self, hidden):
    cfg = self.config
    cd = cfg.compute_dtype
    w1 = self.param("in_kernel", nn.with_logical_partitioning(_INIT, ("embed", "mlp")),
                    (cfg.hidden, self.width), cfg.storage_dtype)
    b1 = self.param("in_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                    (self.width,), jnp.float32)
    w2 = self.param("out_kernel", nn.with_logical_partitioning(_INIT, ("mlp", self.out_axis)),
                    (self.width, self.out), cfg.storage_dtype)
    b2 = self.param("out_bias",
                    nn.with_logical_partitioning(nn.initializers.zeros, (self.out_axis,)),
                    (self.out,), jnp.float32)
    h = jnp.einsum("...d,dh->...h", hidden.astype(cd), w1.astype(cd),
                   preferred_element_type=jnp.float32) + b1
    h = jax.nn.relu(h)
    return jnp.einsum("...h,ho->...o", h.astype(cd), w2.astype(cd),
                      preferred_element_type=jnp.float32) + b2


class Heads(nn.Module):
  """q1, q2 (over the vocabulary) and v of final hidden states [..., D]."""
  config: ModelConfig
  width: int

  def setup(self):
    v = self.config.vocab_size
    self.q1 = Mlp(self.config, self.width, v, "vocab")
    self.q2 = Mlp(self.config, self.width, v, "vocab")
    self.v = Mlp(self.config, self.width, 1, None)

  def __call__(self, hidden):
    return {"q1": self.q1(hidden), "q2": self.q2(hidden), "v": self.v(hidden)[..., 0]}


def head_width(model_cfg: ModelConfig, width: int) -> int:
  """The MLP width: `ilql.head_hidden`, or twice the model's hidden size when 0."""
  return width or 2 * model_cfg.hidden


def boxed_heads_fn(model_cfg: ModelConfig, width: int):
  """rng -> the heads' params boxed with their logical axis names."""
  def init(rng):
    x = jnp.zeros((1, model_cfg.hidden), model_cfg.compute_dtype)
    return Heads(model_cfg, width).init(rng, x)["params"]
  return init


def apply_heads(model_cfg: ModelConfig, width: int, params, hidden):
  return Heads(model_cfg, width).apply({"params": params}, hidden)


def value(model_cfg: ModelConfig, width: int, heads, hidden):
  """float32[...]: V(s) from the V head alone."""
  return Mlp(model_cfg, width, 1, None).apply({"params": heads["v"]}, hidden)[..., 0]


def target_q(model_cfg: ModelConfig, width: int, target, hidden):
  """float32[..., V]: min over the two target Q heads."""
  q = [Mlp(model_cfg, width, model_cfg.vocab_size, "vocab").apply({"params": target[n]}, hidden)
       for n in Q_NAMES]
  return jnp.minimum(q[0], q[1])


def target_of(heads):
  """The target heads at the start: copies of the Q heads."""
  return {n: jax.tree.map(jnp.array, heads[n]) for n in Q_NAMES}


def polyak(target, heads, rate: float):
  """target ← (1 − rate)·target + rate·online, leaf by leaf, for each Q head."""
  return {n: jax.tree.map(lambda t, o: (1.0 - rate) * t + rate * o.astype(t.dtype),
                          target[n], heads[n]) for n in Q_NAMES}
