"""The ILQL state born sharded: the policy from its source, fresh Q/V heads, target heads equal
to the Q heads, the optimizer state over policy and heads; and its abstract form and
shardings for restoring a checkpoint. Heads shard by their logical axis names, optimizer
moments like their parameters.
Not for: the step (`steps.py`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rlhf_jax import parallel
from rlhf_jax.ilql import heads as heads_lib
from rlhf_jax.ilql.steps import ILQLState
from rlhf_jax.train_state import _opt_state_shardings
from rlhf_jax.workdir_model import param_shardings


def abstract_and_shardings(model_cfg, width: int, tx, mesh, rules):
  """(abstract ILQLState, its NamedShardings), allocating nothing."""
  abs_policy, policy_sh = param_shardings(model_cfg, mesh, rules, "lm")
  boxed = jax.eval_shape(heads_lib.boxed_heads_fn(model_cfg, width), jax.random.PRNGKey(0))
  abs_heads, heads_sh = nn.meta.unbox(boxed), parallel.logical_shardings(boxed, mesh, rules)
  abs_train = {"policy": abs_policy, "heads": abs_heads}
  train_sh = {"policy": policy_sh, "heads": heads_sh}
  abs_opt = jax.eval_shape(tx.init, abs_train)
  rep = parallel.replicated(mesh)
  opt_sh = _opt_state_shardings(abs_opt, abs_train, train_sh, rep)
  pick = lambda t: {n: t[n] for n in heads_lib.Q_NAMES}  # noqa: E731
  abstract = ILQLState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abs_policy,
                       heads=abs_heads, target=pick(abs_heads), opt_state=abs_opt,
                       rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
  shardings = ILQLState(step=rep, params=policy_sh, heads=heads_sh, target=pick(heads_sh),
                        opt_state=opt_sh, rng=rep)
  return abstract, shardings


def create(model_cfg, width: int, tx, policy_params, mesh, rules, seed: int):
  """(ILQLState, shardings): `policy_params` (host or device; copied) and heads from `seed`."""
  _, shardings = abstract_and_shardings(model_cfg, width, tx, mesh, rules)
  init_heads = heads_lib.boxed_heads_fn(model_cfg, width)
  heads_rng, state_rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 29))

  def init(policy, heads_rng, state_rng):
    heads = nn.meta.unbox(init_heads(heads_rng))
    policy = jax.tree.map(lambda x: jnp.array(x, copy=True), policy)
    return ILQLState(step=jnp.zeros((), jnp.int32), params=policy, heads=heads,
                     target=heads_lib.target_of(heads),
                     opt_state=tx.init({"policy": policy, "heads": heads}), rng=state_rng)

  policy_params = jax.device_put(policy_params, shardings.params)
  with nn.logical_axis_rules(rules):
    state = jax.jit(init, out_shardings=shardings)(policy_params, heads_rng, state_rng)
  return state, shardings
