"""LoRA: the merge (computed independently in NumPy) equals the adapted forward, at both model
families and both layer layouts; fresh adapters change nothing; only adapters and a score head get
gradients and updates (the base stays bitwise, with weight decay on); the optimizer keeps no
moments for the base; the config names bad settings; a LoRA SFT run exports a merged checkpoint
that Hugging Face loads to the same logits."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax import config_base, stages
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import PRESETS, ModelConfig, forward, init_params, lora
from rlhf_jax.train_state import OptimConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA = PRESETS["tiny"].replace(vocab_size=97, hidden=32, num_heads=4, num_kv_heads=2,
                                mlp_dim=48, max_seq_len=16)
GPT2 = PRESETS["gpt2"].replace(vocab_size=97, hidden=32, num_layers=2, num_heads=4,
                               num_kv_heads=4, mlp_dim=48, max_seq_len=16)


def _randomise_b(params, seed=1):
  """Adapters as after training: B no longer zero."""
  key = jax.random.PRNGKey(seed)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: 0.05 * jax.random.normal(jax.random.fold_in(key, hash(str(p)) % 2**31),
                                            x.shape, x.dtype)
      if str(p[-1].key).endswith("_lora_b") else x, params)


def _np_merge(params, cfg, stacked):
  """W + (alpha / r)·A·B for every adapted kernel, in NumPy float64, by explicit einsums."""
  s = cfg.lora_alpha / cfg.lora_rank
  lead = "l" if stacked else ""
  shapes = {"q": ("d", "nh"), "k": ("d", "nh"), "v": ("d", "nh"), "o": ("nh", "d"),
            "gate": ("d", "f"), "up": ("d", "f"), "down": ("f", "d")}

  def walk(node):
    out = {}
    for k, v in node.items():
      if isinstance(v, dict):
        out[k] = walk(v)
      elif not lora.is_adapter(k):
        out[k] = np.asarray(v, np.float64)
    for name, (ins, outs) in shapes.items():
      if f"{name}_lora_a" in node:
        a = np.asarray(node[f"{name}_lora_a"], np.float64)
        b = np.asarray(node[f"{name}_lora_b"], np.float64)
        spec = f"{lead}{ins}r,{lead}r{outs}->{lead}{ins}{outs}"
        out[f"{name}_kernel"] = out[f"{name}_kernel"] + s * np.einsum(spec, a, b)
    return out

  return walk(params)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("scan", [True, False])
def test_merge_equals_the_adapted_forward(family, scan):
  cfg = (LLAMA if family == "llama" else GPT2).replace(lora_rank=4, lora_alpha=8.0,
                                                       scan_layers=scan)
  params = _randomise_b(init_params(cfg, jax.random.PRNGKey(0), heads="lm"))
  tokens = jax.random.randint(jax.random.PRNGKey(2), (3, 12), 0, cfg.vocab_size)
  mask = jnp.ones_like(tokens, bool).at[0, :4].set(False)
  adapted = forward(cfg, params, tokens, mask)["logits"]
  base = forward(cfg, lora.base_params(params), tokens, mask)["logits"]
  assert float(jnp.max(jnp.abs(adapted - base))) > 1e-2  # the adapters do something

  merged, merged_cfg = lora.merge(params, cfg)
  assert merged_cfg.lora_rank == 0 and not lora.has_adapters(merged)
  reference = _np_merge(params, cfg, scan)
  flat_m = dict(jax.tree_util.tree_flatten_with_path(merged)[0])
  flat_r = dict(jax.tree_util.tree_flatten_with_path(reference)[0])
  assert flat_m.keys() == flat_r.keys()
  for k, v in flat_m.items():
    np.testing.assert_allclose(np.asarray(v), flat_r[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
  # The NumPy-merged weights in a plain model compute what the adapters compute.
  numpy_merged = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), reference)
  np.testing.assert_allclose(forward(merged_cfg, numpy_merged, tokens, mask)["logits"], adapted,
                             rtol=1e-4, atol=1e-4)


def test_fresh_adapters_compute_what_the_base_computes():
  cfg = LLAMA.replace(lora_rank=8, lora_targets="q,v,down")
  base = init_params(LLAMA, jax.random.PRNGKey(0), heads="lm+score")
  params = lora.attach(base, cfg, "lm+score", seed=3)
  assert lora.num_adapter_params(params) == cfg.num_lora_params() > 0
  names = {str(p[-1].key) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert {"q_lora_a", "v_lora_b", "down_lora_a"} <= names and "k_lora_a" not in names
  assert lora.base_params(params).keys() == base.keys()
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 10), 0, cfg.vocab_size)
  mask = jnp.ones_like(tokens, bool)
  a = forward(cfg, params, tokens, mask, heads="lm+score")
  b = forward(LLAMA, base, tokens, mask, heads="lm+score")
  for k in ("logits", "scores"):
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_only_adapters_and_the_score_head_train():
  cfg = LLAMA.replace(lora_rank=4)
  params = _randomise_b(init_params(cfg, jax.random.PRNGKey(0), heads="lm+score"))
  tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 10), 0, cfg.vocab_size)
  mask = jnp.ones_like(tokens, bool)

  def loss(p):
    out = forward(cfg, p, tokens, mask, heads="lm+score")
    return jnp.mean(jax.nn.log_softmax(out["logits"])[..., 0]) + jnp.mean(out["scores"] ** 2)

  grads = jax.grad(loss)(params)
  train = lora.trainable(params)
  for (path, g), t in zip(jax.tree_util.tree_flatten_with_path(grads)[0],
                          jax.tree.leaves(train)):
    assert (float(jnp.max(jnp.abs(g))) > 0) == t, path

  tx = OptimConfig(learning_rate=1e-2, warmup_steps=0, weight_decay=0.1).make(lora.trainable)
  opt = tx.init(params)
  # Moments only for the trained leaves: the optimizer state is adapter-sized.
  moments = sum(x.size for x in jax.tree.leaves(opt) if x.ndim)
  n_train = sum(x.size for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(train)) if t)
  assert moments == 2 * n_train
  new = params
  for _ in range(3):
    updates, opt = tx.update(jax.grad(loss)(new), opt, new)
    new = optax.apply_updates(new, updates)
  for (path, old), nw, t in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                jax.tree.leaves(new), jax.tree.leaves(train)):
    if t:
      assert not np.array_equal(np.asarray(old), np.asarray(nw)), path
    else:  # frozen, weight decay included
      np.testing.assert_array_equal(np.asarray(old), np.asarray(nw), err_msg=str(path))


def test_bad_lora_settings_name_the_field():
  with pytest.raises(ConfigError, match="lora_targets"):
    LLAMA.replace(lora_rank=4, lora_targets="q,proj")
  with pytest.raises(ConfigError, match="lora_rank"):
    LLAMA.replace(lora_rank=-1)
  with pytest.raises(ConfigError, match="lora_alpha"):
    LLAMA.replace(lora_rank=4, lora_alpha=0.0)
  assert ModelConfig.from_dict({"preset": "tiny", "lora_rank": 2}).lora_scale == 8.0


def test_lora_sft_trains_adapters_and_exports_a_merged_checkpoint(tmp_path):
  """SFT from a pretrained workdir with LoRA: the base stays bitwise, the adapters move, a later
  stage reads the workdir merged, and the export loads in transformers to the same logits."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from rlhf_jax import export  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import model_init  # pylint: disable=g-import-not-at-top

  def small(c, steps):
    c.model.update(hidden=32, mlp_dim=64, num_layers=2)
    c.train.update(steps=steps, batch_size=8, log_every=2, eval_every=100, checkpoint_every=100,
                   num_samples=0)
    c.data.update(builtin_train=64, builtin_eval=8)
    return c

  pre = small(config_base.from_file(os.path.join(REPO, "configs", "pretrain.py")), 3)
  stages.run(pre, str(tmp_path / "pretrain"))
  sft = small(config_base.from_file(os.path.join(REPO, "configs", "sft.py")), 6)
  sft.init.from_workdir = str(tmp_path / "pretrain")
  sft.model.update(lora_rank=4, lora_alpha=8.0)
  sft.optim.learning_rate = 1e-2
  out = stages.run(sft, str(tmp_path / "sft"))
  info = json.load(open(tmp_path / "sft" / "model.json"))
  assert info["model"]["lora_rank"] == 4

  cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v
                       for k, v in info["model"].items()})
  params = jax.device_get(out["state"].params)
  assert lora.has_adapters(params)
  start = model_init.load_workdir_params(str(tmp_path / "pretrain"), sft, "lm")[1]
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(lora.base_params(params))[0],
                          jax.tree.leaves(start)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
  assert any(np.abs(np.asarray(x)).max() > 0 for p, x in
             jax.tree_util.tree_flatten_with_path(params)[0] if str(p[-1].key).endswith("_b"))

  # A later stage reads the workdir merged: a plain model computing what the adapters compute.
  later_cfg, later = model_init.load_workdir_params(str(tmp_path / "sft"), sft, "lm")
  assert later_cfg.lora_rank == 0 and not lora.has_adapters(later)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, (2, 12)))
  mask = jnp.ones_like(tokens, bool)
  ours = np.asarray(forward(cfg, params, tokens, mask)["logits"])
  np.testing.assert_allclose(np.asarray(forward(later_cfg, later, tokens, mask)["logits"]), ours,
                             rtol=1e-4, atol=1e-4)

  got = export.export(str(tmp_path / "sft"), str(tmp_path / "hf"))
  assert got["lora_merged"]
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
  with torch.no_grad():
    theirs = model(torch.tensor(np.asarray(tokens))).logits.numpy()
  np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
