"""Mesh equivalence on 8 fake CPU devices: one SFT step gives the same loss and parameters on
every mesh, parameters land where the rules say, and the step compiles once."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rlhf_jax import parallel
from rlhf_jax.errors import ConfigError, ShapeError
from rlhf_jax.models import ModelConfig
from rlhf_jax.train.lm_steps import make_lm_steps
from rlhf_jax.train_state import OptimConfig, create_state

CFG = ModelConfig(vocab_size=128, hidden=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  mlp_dim=128, max_seq_len=32, tie_embeddings=False)
MESHES = {"single": {"data": 1}, "data8": {"data": 8}, "fsdp8": {"fsdp": 8},
          "d2f2t2": {"data": 2, "fsdp": 2, "tensor": 2}}


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, CFG.vocab_size, (8, 24)).astype(np.int32)
  attn = np.ones((8, 24), bool)
  attn[::3, 18:] = False  # some right padding
  loss_mask = attn & (np.arange(24)[None] >= 6)  # prompt of 6 tokens
  return {"tokens": tokens, "loss_mask": loss_mask, "attention_mask": attn}


def _one_step(mesh_shape):
  n = int(np.prod(list(mesh_shape.values())))
  mesh = parallel.make_mesh(mesh_shape, jax.devices()[:n])
  rules = parallel.DEFAULT_RULES
  # Adam's first update is lr * g / (|g| + eps): with the usual eps=1e-8 a gradient entry of
  # ~1e-9, whose rounding differs between reduction orders, flips between +lr and -lr. eps=1e-4
  # keeps this comparison about the sharded arithmetic rather than the sign of round-off.
  tx = OptimConfig(learning_rate=1e-2, warmup_steps=0, eps=1e-4).make()
  state, shardings = create_state(CFG, tx, mesh, rules, seed=0)
  step, _ = make_lm_steps(CFG, tx, mesh, rules, shardings)
  state, m = step(state, parallel.put_batch(_batch(), mesh, rules))
  return (float(m["loss"]), float(m["grad_norm"])), jax.device_get(state.params), state, mesh, step


@pytest.fixture(scope="module")
def results():
  return {name: _one_step(shape) for name, shape in MESHES.items()}


@pytest.mark.parametrize("name", ["data8", "fsdp8", "d2f2t2"])
def test_step_equals_single_device(results, name):
  (loss0, gnorm0), params0, *_ = results["single"]
  (loss, gnorm), params, *_ = results[name]
  assert abs(loss - loss0) <= 1e-5
  assert abs(gnorm - gnorm0) <= 1e-5 * gnorm0
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, params0)
  worst = max(jax.tree.leaves(diffs))
  print(f"MESH {name}: |loss diff| {abs(loss - loss0):.2e}, max |param diff| {worst:.2e}")
  assert worst <= 1e-5


def test_lora_step_equals_single_device():
  """A LoRA step (masked optimizer state, adapters sharded by their logical axes) on a
  data x fsdp x tensor mesh equals the single-device step, and the base stays bitwise."""
  from rlhf_jax.models import lora  # pylint: disable=g-import-not-at-top
  cfg = CFG.replace(lora_rank=4)

  def one(mesh_shape):
    n = int(np.prod(list(mesh_shape.values())))
    mesh = parallel.make_mesh(mesh_shape, jax.devices()[:n])
    tx = OptimConfig(learning_rate=1e-2, warmup_steps=0, eps=1e-4,
                     weight_decay=0.1).make(lora.trainable)
    state, shardings = create_state(cfg, tx, mesh, parallel.DEFAULT_RULES, seed=0)
    start = jax.device_get(state.params)
    step, _ = make_lm_steps(cfg, tx, mesh, parallel.DEFAULT_RULES, shardings)
    state, m = step(state, parallel.put_batch(_batch(), mesh, parallel.DEFAULT_RULES))
    return float(m["loss"]), start, jax.device_get(state.params)

  loss0, start0, params0 = one(MESHES["single"])
  loss, start, params = one(MESHES["d2f2t2"])
  assert abs(loss - loss0) <= 1e-5
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params0)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), params, start)
  for (path, m_), t in zip(jax.tree_util.tree_flatten_with_path(moved)[0],
                           jax.tree.leaves(lora.trainable(params))):
    name = str(path[-1].key)
    if not t:
      assert not m_, path  # the frozen base, weight decay on
    elif name.endswith("_lora_b"):
      assert m_, path  # B leaves zero on the first step (A's gradient is 0 while B is)


def test_parameters_are_sharded_as_the_rules_say(results):
  *_, state, mesh, _ = results["d2f2t2"]
  p = state.params
  expect = {
      ("embed",): P("tensor", "fsdp"),
      ("lm_head",): P("fsdp", "tensor"),
      ("layers", "attn", "q_kernel"): P(None, "fsdp", "tensor", None),
      ("layers", "attn", "k_kernel"): P(None, "fsdp", "tensor", None),
      ("layers", "attn", "o_kernel"): P(None, "tensor", None, "fsdp"),
      ("layers", "mlp", "gate_kernel"): P(None, "fsdp", "tensor"),
      ("layers", "mlp", "down_kernel"): P(None, "tensor", "fsdp"),
      ("layers", "attn_norm", "scale"): P(None, None),
      ("final_norm", "scale"): P(None),
  }
  for path, spec in expect.items():
    leaf = p
    for k in path:
      leaf = leaf[k]
    assert leaf.sharding.mesh.shape == mesh.shape
    assert leaf.sharding.spec == spec, (path, leaf.sharding.spec)
  # Adam moments shard like their parameter.
  mu = state.opt_state[1][0].mu
  assert mu["layers"]["mlp"]["up_kernel"].sharding.spec == P(None, "fsdp", "tensor")


def test_step_is_not_retraced(results):
  *_, state, mesh, step = results["fsdp8"]
  rules = parallel.DEFAULT_RULES
  for _ in range(3):
    state, _ = step(state, parallel.put_batch(_batch(), mesh, rules))
  assert step.jitted._cache_size() == 1


def test_mesh_errors_are_clear():
  with pytest.raises(ShapeError, match="needs 6 devices"):
    parallel.make_mesh({"data": 3, "fsdp": 2})
  with pytest.raises(ShapeError, match="do not divide"):
    parallel.make_mesh({"data": -1, "fsdp": 3})
  with pytest.raises(ConfigError, match="unknown axis"):
    parallel.make_mesh({"dta": 2})
  with pytest.raises(ConfigError, match="names mesh axis"):
    parallel.rules_from_config([("embed", "fspd")])
  bad = CFG.replace(num_kv_heads=1, num_heads=2)
  mesh = parallel.make_mesh({"tensor": 2}, jax.devices()[:2])
  with pytest.raises(ShapeError, match="does not divide over mesh axes"):
    create_state(bad, OptimConfig().make(), mesh, parallel.DEFAULT_RULES, 0)
