"""Critic-free advantages from G sampled responses per prompt (GRPO, RLOO).

Rewards come as [P, G]: P prompts, G responses each (the rollout rows are prompt-major, row
p·G + g). Each response's advantage is its reward against a baseline built from its group:
  grpo:  A = (r − mean_group(r)) / (std_group(r) + eps)   (scale="group", Shao et al. 2024)
         A = (r − mean_group(r)) / (std_batch(r) + eps)   (scale="batch")
         A = r − mean_group(r)                            (scale="none", Dr. GRPO)
  rloo:  A_i = r_i − mean_{j≠i} r_j = G/(G−1) · (r_i − mean_group(r))   (Ahmadian et al. 2024)
The sequence advantage is then given to every token of the response (`per_token`).
Pure functions; each has a NumPy reference test (tests/test_rl_math.py).
"""

from __future__ import annotations

import jax.numpy as jnp

SCALES = ("group", "batch", "none")


def grpo_advantages(rewards_PxG, scale: str = "group", eps: float = 1e-4):
  """float32[P, G]: group-relative advantages; `scale` as in the module doc (std with ddof 0)."""
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r} must be one of {SCALES}")
  r = rewards_PxG.astype(jnp.float32)
  centred = r - jnp.mean(r, axis=1, keepdims=True)
  if scale == "group":
    return centred / (jnp.std(r, axis=1, keepdims=True) + eps)
  if scale == "batch":
    return centred / (jnp.std(r) + eps)
  return centred


def rloo_advantages(rewards_PxG):
  """float32[P, G]: each reward minus the mean of the other G − 1 rewards of its prompt."""
  g = rewards_PxG.shape[1]
  if g < 2:
    raise ValueError(f"RLOO needs at least 2 responses per prompt, got {g}")
  r = rewards_PxG.astype(jnp.float32)
  others = (jnp.sum(r, axis=1, keepdims=True) - r) / (g - 1)
  return r - others


def per_token(advantages_B, mask_BxN):
  """float32[B, N]: each row's sequence advantage on each of its real tokens, 0 elsewhere."""
  return jnp.where(mask_BxN.astype(bool), advantages_B[:, None].astype(jnp.float32), 0.0)
