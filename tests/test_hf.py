"""HF interop: logits parity with transformers on tiny random models, export round trips, errors.

Run with `-s` to see the `PARITY <family> <maxdiff>` lines.
"""

import copy
import json
import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="HF interop tests need torch (transformers models)")
transformers = pytest.importorskip("transformers", reason="HF interop tests need transformers")

from safetensors.numpy import load_file, save_file  # pylint: disable=g-import-not-at-top

from rlhf_jax.errors import ConfigError, DataError  # pylint: disable=g-import-not-at-top
from rlhf_jax.models import forward, init_params  # pylint: disable=g-import-not-at-top
from rlhf_jax.models import hf  # pylint: disable=g-import-not-at-top

V, T = 100, 12
_COMMON = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=64)
FAMILIES = {
    # GQA and a head_dim that is not hidden // heads.
    "llama_gqa": lambda: transformers.LlamaConfig(
        **_COMMON, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5, rope_theta=10000.0),
    # Tied embeddings, Llama-3 rope scaling (all three frequency bands), attention + MLP biases.
    "llama_tied_llama3": lambda: transformers.LlamaConfig(
        **_COMMON, num_key_value_heads=4, tie_word_embeddings=True, attention_bias=True,
        mlp_bias=True, rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 32}),
    "qwen2": lambda: transformers.Qwen2Config(**_COMMON, num_key_value_heads=2,
                                              rope_theta=1e6, tie_word_embeddings=False),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=V, n_embd=64, n_layer=2, n_head=4,
                                            n_positions=64, bos_token_id=None,
                                            eos_token_id=None),
}


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, V, size=(3, T)).astype(np.int32)
  mask = np.ones((3, T), bool)
  mask[1, -4:] = False  # right padding
  mask[2, :3] = False  # left padding
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
  return tokens, mask, positions


def _hf_logits(model, tokens, mask, positions):
  with torch.no_grad():
    out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                attention_mask=torch.tensor(mask, dtype=torch.long),
                position_ids=torch.tensor(positions, dtype=torch.long))
  return out.logits.float().numpy()


def _ours(cfg, params):
  tokens, mask, positions = _batch()
  return np.asarray(forward(cfg, params, tokens, mask, positions)["logits"])


def _maxdiff(a, b):
  mask = _batch()[1]
  return float(np.max(np.abs(a[mask] - b[mask])))


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
  """family -> (HF model in eval mode, checkpoint dir); every weight randomised (biases too)."""
  out = {}
  for i, (name, make) in enumerate(FAMILIES.items()):
    torch.manual_seed(i)
    model = transformers.AutoModelForCausalLM.from_config(make(), attn_implementation="eager")
    model = model.float().eval()
    with torch.no_grad():
      for p in model.parameters():  # HF inits biases to 0 and norms to 1: perturb everything
        p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path, safe_serialization=True)
    out[name] = (model, path)
  return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_parity_with_hf(hf_models, family):
  model, path = hf_models[family]
  cfg, params = hf.load_checkpoint(path)
  want = _hf_logits(model, *_batch())
  got = _ours(cfg, params)
  diff = _maxdiff(got, want)
  print(f"\nPARITY {family} {diff:.3e}")
  assert diff <= 1e-4, f"{family}: max |ours - HF| = {diff}"
  # The unrolled layout holds the same weights and gives the same logits (up to XLA fusion).
  cfg_u, params_u = hf.load_checkpoint(path, scan_layers=False)
  assert "layers" not in params_u
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *[params_u.pop(f"layer_{i}")
                                                      for i in range(cfg.num_layers)])
  jax.tree.map(np.testing.assert_array_equal, dict(params_u, layers=stacked), params)
  np.testing.assert_allclose(_ours(cfg_u, dict(params_u, **{f"layer_{i}": jax.tree.map(
      lambda x, i=i: x[i], stacked) for i in range(cfg.num_layers)})), got, atol=1e-5, rtol=0)


def _random_params(cfg, seed):
  """Our init with every leaf perturbed, so zero-initialised biases are exercised too."""
  params = init_params(cfg, jax.random.key(seed))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_round_trip(hf_models, family, tmp_path):
  cfg = hf.config_from_hf(hf_models[family][1])
  params = _random_params(cfg, seed=7)
  params_with_head = dict(params, score_kernel=np.ones((cfg.hidden, 1), np.float32),
                          score_bias=np.zeros((1,), np.float32))
  hf.save_checkpoint(tmp_path, cfg, params_with_head)
  assert "score" not in json.dumps(list(load_file(tmp_path / "model.safetensors")))
  model = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, attn_implementation="eager", dtype=torch.float32).eval()
  ours = _ours(cfg, params)
  diff = _maxdiff(ours, _hf_logits(model, *_batch()))
  print(f"\nEXPORT {family} {diff:.3e}")
  assert diff <= 1e-4
  cfg2, params2 = hf.load_checkpoint(tmp_path)
  assert cfg2 == cfg
  jax.tree.map(np.testing.assert_array_equal, params2, jax.device_get(params))


def test_sharded_round_trip(hf_models, tmp_path):
  cfg, params = hf.load_checkpoint(hf_models["llama_gqa"][1], scan_layers=False)
  hf.save_checkpoint(tmp_path, cfg, params, max_shard_size_bytes=64 * 1024)
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  shards = set(index["weight_map"].values())
  assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
  cfg2, params2 = hf.load_checkpoint(tmp_path, scan_layers=False)
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
  assert _maxdiff(_ours(cfg2, params2), _hf_logits(model.eval(), *_batch())) <= 1e-4


def test_bf16_checkpoint(hf_models, tmp_path):
  copy.deepcopy(hf_models["qwen2"][0]).to(torch.bfloat16).save_pretrained(tmp_path)
  # The reference: HF's own float32 load of the bf16 weights (fresh float32 rotary buffers).
  model = transformers.AutoModelForCausalLM.from_pretrained(
      tmp_path, attn_implementation="eager", dtype=torch.float32).eval()
  cfg, params = hf.load_checkpoint(tmp_path)  # bf16 on disk -> float32 params
  assert params["embed"].dtype == np.float32
  diff = _maxdiff(_ours(cfg, params), _hf_logits(model, *_batch()))
  print(f"\nPARITY qwen2_bf16_weights {diff:.3e}")
  assert diff <= 1e-4, diff
  _, params16 = hf.load_checkpoint(tmp_path, param_dtype="bfloat16")
  assert params16["layers"]["attn"]["q_kernel"].dtype.name == "bfloat16"
  np.testing.assert_array_equal(params16["embed"].astype(np.float32), params["embed"])


def _copy_ckpt(src, dst, drop=(), add=None, rename=lambda k: k):
  tensors = {rename(k): v for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
  for k in drop:
    del tensors[k]
  tensors.update(add or {})
  os.makedirs(dst, exist_ok=True)
  save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(src, "config.json"), encoding="utf-8") as f:
    config = f.read()
  with open(os.path.join(dst, "config.json"), "w", encoding="utf-8") as f:
    f.write(config)


def test_missing_and_extra_tensors(hf_models, tmp_path):
  src = hf_models["gpt2"][1]
  key = "transformer.h.1.attn.c_attn.bias"
  _copy_ckpt(src, tmp_path / "a", drop=[key])
  with pytest.raises(DataError, match=key.replace(".", r"\.")):
    hf.load_checkpoint(tmp_path / "a")
  _copy_ckpt(src, tmp_path / "b", add={"transformer.h.2.ln_1.weight": np.ones(64, np.float32)})
  with pytest.raises(DataError, match=r"unexpected.*h\.2\.ln_1\.weight"):
    hf.load_checkpoint(tmp_path / "b")
  _copy_ckpt(src, tmp_path / "c", add={"transformer.h.0.attn.bias": np.ones(4, np.float32)})
  hf.load_checkpoint(tmp_path / "c")  # a GPT-2 causal-mask buffer is known and skipped
  # Original GPT-2 checkpoints have bare keys ("h.0.attn.c_attn.weight", no "transformer.").
  _copy_ckpt(src, tmp_path / "d", rename=lambda k: k.removeprefix("transformer."),
             add={"h.0.attn.masked_bias": np.ones(1, np.float32)})
  jax.tree.map(np.testing.assert_array_equal, hf.load_checkpoint(tmp_path / "d")[1],
               hf.load_checkpoint(src)[1])


def test_missing_files(hf_models, tmp_path):
  with pytest.raises(DataError, match="nope"):
    hf.load_checkpoint(tmp_path / "nope")
  with pytest.raises(DataError, match="config.json"):
    hf.load_checkpoint(tmp_path)
  (tmp_path / "config.json").write_text((hf_models["gpt2"][1] / "config.json").read_text())
  with pytest.raises(DataError, match="model.safetensors"):
    hf.load_checkpoint(tmp_path)


def _llama_dict(**kw):
  d = FAMILIES["llama_gqa"]().to_dict()
  d.update(kw)
  return d


def test_config_checks():
  cfg = hf.config_from_hf(_llama_dict(), dtype="bfloat16", scan_layers=False)
  assert (cfg.num_kv_heads, cfg.head_dim, cfg.dtype, cfg.scan_layers) == (2, 32, "bfloat16", False)
  # transformers 4.x layout: rope_theta / rope_scaling at the top level.
  legacy = _llama_dict(rope_parameters=None, rope_theta=5e5, rope_scaling={
      "type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192})
  cfg = hf.config_from_hf(legacy)
  assert cfg.rope_theta == 5e5 and cfg.rope_llama3_scaling == (32.0, 1.0, 4.0, 8192)
  with pytest.raises(ConfigError, match="yarn"):
    hf.config_from_hf(_llama_dict(rope_parameters={"rope_type": "yarn", "factor": 2.0}))
  with pytest.raises(ConfigError, match="hidden_act"):
    hf.config_from_hf(_llama_dict(hidden_act="gelu"))
  with pytest.raises(ConfigError, match="model_type"):
    hf.config_from_hf(_llama_dict(model_type="bert"))
  with pytest.raises(ConfigError, match="remat_everything"):
    hf.config_from_hf(_llama_dict(), remat_everything=True)
  qwen = FAMILIES["qwen2"]().to_dict()
  qwen.update(use_sliding_window=True, sliding_window=16, max_window_layers=1, layer_types=None)
  with pytest.raises(ConfigError, match="use_sliding_window"):
    hf.config_from_hf(qwen)
  gpt2 = FAMILIES["gpt2"]().to_dict()
  with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
    hf.config_from_hf(dict(gpt2, scale_attn_by_inverse_layer_idx=True))
  with pytest.raises(ConfigError, match="activation_function"):
    hf.config_from_hf(dict(gpt2, activation_function="relu"))
  mistral = _llama_dict(model_type="mistral", sliding_window=32)
  assert hf.config_from_hf(mistral).max_seq_len == 32
