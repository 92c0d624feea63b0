"""ILQL decoding through the shared sampler: a logits hook (`sampling.generate(..., hook=)`)
that turns the LM head's logits at each step into the advantage-shaped logits
logits + β·(min(Q̂1, Q̂2)(s, ·) − V(s)) (Q̂: the target heads), inside the same compiled
while-loop. Temperature and top-k (`SamplingConfig.top_k`) apply to the shaped logits, and the
sampler's log-probs are those of the shaped policy at the sampling temperature.

The sampler's params are one pytree, {"policy": decoder params, "ilql": {"heads", "target",
"beta"}}
and β (`sampler_params`); the hook splits it. With β = 0 the logits pass through unchanged, so the
samples are the LM head's own, bit for bit.
Not for: training (`steps.py`).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rlhf_jax.ilql import heads as heads_lib
from rlhf_jax.ilql import losses
from rlhf_jax.models import ModelConfig


@dataclasses.dataclass(frozen=True)
class ShapedLogits:
  """The hook: hashable (a static argument of the compiled sampler); β is in the params, so
  one compiled sampler serves every β."""
  model_cfg: ModelConfig
  width: int

  def split(self, params):
    """(decoder params, what __call__ reads)."""
    return params["policy"], params["ilql"]

  def __call__(self, extra, hidden_BxD, logits_BxV):
    v = heads_lib.value(self.model_cfg, self.width, extra["heads"], hidden_BxD)
    q = heads_lib.target_q(self.model_cfg, self.width, extra["target"], hidden_BxD)
    return losses.shaped_logits(logits_BxV, q, v, extra["beta"])


def sampler_params(params, heads, target, beta: float) -> dict:
  return {"policy": params, "ilql": {"heads": heads, "target": target,
                                     "beta": jnp.asarray(beta, jnp.float32)}}
