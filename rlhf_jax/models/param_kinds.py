"""What kind of parameter a leaf of the params pytree is, read from its name, never its rank.

A leaf is a *weight matrix* (projection kernels, the token and position embedding tables, an
untied LM head, a score head's kernel, LoRA's A and B) or a *vector* (norm scales and biases,
projection biases, a score head's bias). Rank cannot tell them apart: with `scan_layers` every
per-layer vector gains a leading layer axis ([L, D] norm scales, [L, H, Dh] q/k/v biases). Two
callers read the kind:
  - the sampler's compute copy (`sampling.compute_copy`) casts weight matrices only: the layers
    cast each of them at its use, while norms run in float32 with float32 scales and biases;
  - the optimizer's weight-decay mask (`train_state.OptimConfig.make`) decays weight matrices
    only. Embedding tables ARE decayed, as in GPT-2 / nanoGPT (the table is also the tied LM
    head); norm gains and all biases are not.
An unknown name is an error, so a new parameter has to be classified here.
Not for: LoRA's trainable / frozen split (`lora.trainable`).
"""

from __future__ import annotations

from rlhf_jax.models.lora import is_adapter

MATRIX_NAMES = ("embed", "pos_embed", "lm_head")  # plus every "*_kernel" and LoRA A / B
VECTOR_NAMES = ("scale", "bias")  # norm gains and biases, plus every "*_bias"


def leaf_name(path) -> str:
  """The last key of a pytree path: the parameter's own name ("q_kernel", "scale", ...)."""
  return str(getattr(path[-1], "key", path[-1]))


def is_weight_matrix(path) -> bool:
  """True for a weight matrix, False for a norm gain or a bias (see the module doc)."""
  name = leaf_name(path)
  if name in MATRIX_NAMES or name.endswith("_kernel") or is_adapter(name):
    return True
  if name in VECTOR_NAMES or name.endswith("_bias"):
    return False
  raise ValueError(f"parameter {'/'.join(str(getattr(k, 'key', k)) for k in path)!r}: unknown "
                   "kind; classify it in rlhf_jax/models/param_kinds.py")
