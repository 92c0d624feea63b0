"""The whole state of an RL run, as one checkpointable pytree, and how it is born sharded.

`RLState` holds what a resumed run needs to continue bitwise: the policy (params, optimizer
state), the critic (params, optimizer state; a placeholder when the value head shares the policy
trunk), the KL coefficient β, the RNG key and the iteration. Its `params` are the policy's, so a
later stage reads an RL workdir's params exactly as it reads an SFT workdir's (see
`checkpoint.Checkpointer.save`). The frozen reference and reward models are not in it: they are
re-read from their own workdirs.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from rlhf_jax import parallel
from rlhf_jax.train_state import create_state, state_shardings


@flax.struct.dataclass
class RLState:
  step: jax.Array  # int32: RL iterations done
  params: Any  # the policy's
  opt_state: Any
  rng: jax.Array  # raw uint32[2]
  critic: Any  # TrainState of the separate critic, or a float32 placeholder
  kl_coef: jax.Array  # float32: β


def _placeholder():
  return jnp.zeros((), jnp.float32)


def abstract_and_shardings(model_cfg, heads, tx_policy, critic_cfg, tx_critic, mesh, rules):
  """(abstract RLState, its shardings, policy TrainState shardings, critic shardings or None)."""
  pol_abs, pol_sh, _ = state_shardings(model_cfg, tx_policy, mesh, rules, heads)
  rep = parallel.replicated(mesh)
  scalar_f = jax.ShapeDtypeStruct((), jnp.float32)
  if critic_cfg is not None:
    cri_abs, cri_sh, _ = state_shardings(critic_cfg, tx_critic, mesh, rules, "score")
  else:
    cri_abs, cri_sh = scalar_f, rep
  abstract = RLState(step=jax.ShapeDtypeStruct((), jnp.int32), params=pol_abs.params,
                     opt_state=pol_abs.opt_state, rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
                     critic=cri_abs, kl_coef=scalar_f)
  shardings = RLState(step=rep, params=pol_sh.params, opt_state=pol_sh.opt_state, rng=rep,
                      critic=cri_sh, kl_coef=rep)
  return abstract, shardings, pol_sh, (cri_sh if critic_cfg is not None else None)


def create(model_cfg, heads, tx_policy, policy_params, critic_cfg, tx_critic, critic_params,
           mesh, rules, seed: int, kl_coef: float) -> RLState:
  """A fresh RLState from host or device params (copied: the reference keeps its own)."""
  copy = lambda t: jax.tree.map(lambda x: jnp.array(x, copy=True), t)  # noqa: E731
  policy, _ = create_state(model_cfg, tx_policy, mesh, rules, seed, params=copy(policy_params),
                           heads=heads)
  if critic_cfg is not None:
    critic, _ = create_state(critic_cfg, tx_critic, mesh, rules, seed + 1,
                             params=copy(critic_params), heads="score")
  else:
    critic = _placeholder()
  rep = parallel.replicated(mesh)
  return RLState(step=jax.device_put(jnp.zeros((), jnp.int32), rep), params=policy.params,
                 opt_state=policy.opt_state, rng=policy.rng, critic=critic,
                 kl_coef=jax.device_put(jnp.asarray(kl_coef, jnp.float32), rep))
