"""DPO and IPO losses from summed response log-probs of the policy and the frozen reference.

For a comparison (chosen c, rejected r), with log-ratios ρ_c = log π(c) − log π_ref(c) and
ρ_r likewise (sums over the response tokens), h = ρ_c − ρ_r and
  dpo (Rafailov et al. 2023):  −log σ(β·h), with label smoothing ε (the label is wrong with
                               probability ε):  −(1 − ε)·log σ(β·h) − ε·log σ(−β·h)
  ipo (Azar et al. 2023):      (h − 1/(2β))²    (β plays the role of IPO's τ)
The implicit rewards are β·ρ_c and β·ρ_r: their margin and how often the chosen one is higher
are the metrics a DPO run reports, with the mean log-ratios as a KL-like drift.
Pure functions; each has a NumPy reference test (tests/test_dpo.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("dpo", "ipo")


def preference_loss(policy_chosen_B, policy_rejected_B, ref_chosen_B, ref_rejected_B,
                    beta: float, kind: str = "dpo", label_smoothing: float = 0.0,
                    weight_B=None):
  """(mean loss, metrics) over the B comparisons (weighted by `weight_B` if given: 0 drops a
  padding row). Inputs are float32[B] summed log-probs of each response."""
  if kind not in LOSSES:
    raise ValueError(f"kind={kind!r} must be one of {LOSSES}")
  if beta <= 0:
    raise ValueError(f"beta={beta} must be positive")
  rho_c = policy_chosen_B - ref_chosen_B
  rho_r = policy_rejected_B - ref_rejected_B
  h = rho_c - rho_r
  if kind == "dpo":
    per = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
           - label_smoothing * jax.nn.log_sigmoid(-beta * h))
  else:
    per = (h - 1.0 / (2.0 * beta)) ** 2
  w = jnp.ones_like(per) if weight_B is None else weight_B.astype(per.dtype)
  n = jnp.maximum(jnp.sum(w), 1.0)

  def mean(x):
    return jnp.sum(x * w) / n

  reward_c, reward_r = beta * rho_c, beta * rho_r
  metrics = {"reward_chosen": mean(reward_c), "reward_rejected": mean(reward_r),
             "reward_margin": mean(reward_c - reward_r),
             "reward_accuracy": mean((reward_c > reward_r).astype(per.dtype)),
             "logratio_chosen": mean(rho_c), "logratio_rejected": mean(rho_r)}
  return mean(per), metrics
