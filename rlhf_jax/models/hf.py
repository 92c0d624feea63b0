"""Hugging Face interop: Llama / Qwen2 / Mistral / GPT-2 configs and safetensors weights.

`config_from_hf` turns an HF `config.json` into a `ModelConfig` (rejecting, by field name, what the
decoder cannot reproduce); `load_checkpoint` reads a checkpoint directory (single or sharded
safetensors, float32/float16/bfloat16) into host numpy params; `save_checkpoint` writes params back
in the layout `transformers.AutoModelForCausalLM.from_pretrained` reads. Each family is a table of
(HF tensor name, our param paths, transform) rows, used in both directions. Not for: tokenizers,
PyTorch `.bin` checkpoints, or score/value heads (export is of the LM only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.models import lora
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import init_params

_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"


# ---------------------------------------------------------------------------------------------
# Tensor transforms: (HF tensor -> tuple of our arrays, tuple of our arrays -> HF tensor).

@dataclasses.dataclass(frozen=True)
class _Tx:
  to_ours: Callable[[np.ndarray, ModelConfig], tuple]
  to_hf: Callable[[tuple, ModelConfig], np.ndarray]


_COPY = _Tx(lambda w, c: (w,), lambda xs, c: xs[0])
_T = _Tx(lambda w, c: (w.T,), lambda xs, c: xs[0].T)  # torch Linear [out, in] <-> [in, out]


def _heads(n: Callable[[ModelConfig], int]) -> tuple[_Tx, _Tx]:
  """(Linear weight [n*Dh, D] <-> [D, n, Dh], bias [n*Dh] <-> [n, Dh]) for q/k/v projections."""
  w = _Tx(lambda w, c: (w.T.reshape(w.shape[1], n(c), c.dim_per_head),),
          lambda xs, c: xs[0].reshape(xs[0].shape[0], -1).T)
  b = _Tx(lambda w, c: (w.reshape(n(c), c.dim_per_head),), lambda xs, c: xs[0].reshape(-1))
  return w, b


_Q, _QB = _heads(lambda c: c.num_heads)
_KV, _KVB = _heads(lambda c: c.num_kv_heads)
# o_proj Linear [D, H*Dh] <-> [H, Dh, D]; GPT-2 Conv1D c_proj is already [H*Dh, D].
_O = _Tx(lambda w, c: (w.T.reshape(c.num_heads, c.dim_per_head, w.shape[0]),),
         lambda xs, c: xs[0].reshape(-1, xs[0].shape[-1]).T)
_O_CONV = _Tx(lambda w, c: (w.reshape(c.num_heads, c.dim_per_head, w.shape[-1]),),
              lambda xs, c: xs[0].reshape(-1, xs[0].shape[-1]))
# GPT-2 c_attn Conv1D [D, 3*H*Dh] (q|k|v along the output axis) <-> three [D, H, Dh].
_QKV_CONV = _Tx(
    lambda w, c: tuple(p.reshape(w.shape[0], c.num_heads, c.dim_per_head)
                       for p in np.split(w, 3, axis=-1)),
    lambda xs, c: np.concatenate([x.reshape(x.shape[0], -1) for x in xs], axis=-1))
_QKV_CONV_B = _Tx(lambda w, c: tuple(p.reshape(c.num_heads, c.dim_per_head)
                                     for p in np.split(w, 3)),
                  lambda xs, c: np.concatenate([x.reshape(-1) for x in xs]))


# ---------------------------------------------------------------------------------------------
# Family tables. scope: "base" (under the prefix), "layer" (under prefix + layer_fmt), "head"
# (no prefix: lm_head). `when` picks rows by config. Our paths are relative to the layer subtree
# for "layer" rows and to the params root otherwise.

@dataclasses.dataclass(frozen=True)
class _Row:
  scope: str
  hf: str
  ours: tuple
  tx: _Tx
  when: Callable[[ModelConfig], bool] = lambda c: True


_QKVB = lambda c: c.qkv_bias
_OB = lambda c: c.out_bias
_MB = lambda c: c.mlp_bias
_UNTIED = lambda c: not c.tie_embeddings

_LLAMA_ROWS = (
    _Row("base", "embed_tokens.weight", ("embed",), _COPY),
    _Row("base", "norm.weight", ("final_norm/scale",), _COPY),
    _Row("head", "lm_head.weight", ("lm_head",), _T, _UNTIED),
    _Row("layer", "input_layernorm.weight", ("attn_norm/scale",), _COPY),
    _Row("layer", "post_attention_layernorm.weight", ("mlp_norm/scale",), _COPY),
    _Row("layer", "self_attn.q_proj.weight", ("attn/q_kernel",), _Q),
    _Row("layer", "self_attn.k_proj.weight", ("attn/k_kernel",), _KV),
    _Row("layer", "self_attn.v_proj.weight", ("attn/v_kernel",), _KV),
    _Row("layer", "self_attn.o_proj.weight", ("attn/o_kernel",), _O),
    _Row("layer", "self_attn.q_proj.bias", ("attn/q_bias",), _QB, _QKVB),
    _Row("layer", "self_attn.k_proj.bias", ("attn/k_bias",), _KVB, _QKVB),
    _Row("layer", "self_attn.v_proj.bias", ("attn/v_bias",), _KVB, _QKVB),
    _Row("layer", "self_attn.o_proj.bias", ("attn/o_bias",), _COPY, _OB),
    _Row("layer", "mlp.gate_proj.weight", ("mlp/gate_kernel",), _T),
    _Row("layer", "mlp.up_proj.weight", ("mlp/up_kernel",), _T),
    _Row("layer", "mlp.down_proj.weight", ("mlp/down_kernel",), _T),
    _Row("layer", "mlp.gate_proj.bias", ("mlp/gate_bias",), _COPY, _MB),
    _Row("layer", "mlp.up_proj.bias", ("mlp/up_bias",), _COPY, _MB),
    _Row("layer", "mlp.down_proj.bias", ("mlp/down_bias",), _COPY, _MB),
)

_GPT2_ROWS = (
    _Row("base", "wte.weight", ("embed",), _COPY),
    _Row("base", "wpe.weight", ("pos_embed",), _COPY),
    _Row("base", "ln_f.weight", ("final_norm/scale",), _COPY),
    _Row("base", "ln_f.bias", ("final_norm/bias",), _COPY),
    _Row("head", "lm_head.weight", ("lm_head",), _T, _UNTIED),
    _Row("layer", "ln_1.weight", ("attn_norm/scale",), _COPY),
    _Row("layer", "ln_1.bias", ("attn_norm/bias",), _COPY),
    _Row("layer", "ln_2.weight", ("mlp_norm/scale",), _COPY),
    _Row("layer", "ln_2.bias", ("mlp_norm/bias",), _COPY),
    _Row("layer", "attn.c_attn.weight", ("attn/q_kernel", "attn/k_kernel", "attn/v_kernel"),
         _QKV_CONV),
    _Row("layer", "attn.c_attn.bias", ("attn/q_bias", "attn/k_bias", "attn/v_bias"), _QKV_CONV_B),
    _Row("layer", "attn.c_proj.weight", ("attn/o_kernel",), _O_CONV),
    _Row("layer", "attn.c_proj.bias", ("attn/o_bias",), _COPY),
    _Row("layer", "mlp.c_fc.weight", ("mlp/up_kernel",), _COPY),
    _Row("layer", "mlp.c_fc.bias", ("mlp/up_bias",), _COPY),
    _Row("layer", "mlp.c_proj.weight", ("mlp/down_kernel",), _COPY),
    _Row("layer", "mlp.c_proj.bias", ("mlp/down_bias",), _COPY),
)


def _get(d: Mapping[str, Any], key: str, default: Any = ConfigError, alt: tuple = ()):
  for k in (key,) + alt:
    if d.get(k) is not None:
      return d[k]
  if default is ConfigError:
    raise ConfigError(f"HF config ({d.get('model_type')}): required field {key!r} is missing")
  return default


def _unsupported(field: str, value, why: str):
  raise ConfigError(f"HF config field {field}={value!r} is not supported: {why}")


def _rope(d: Mapping[str, Any]) -> dict:
  """(rope_theta, rope_llama3_scaling) from transformers 5 `rope_parameters` or v4 fields."""
  field = "rope_parameters" if d.get("rope_parameters") else "rope_scaling"
  rp = dict(d.get(field) or {})
  if rp and all(isinstance(v, dict) for v in rp.values()):  # nested per layer type
    distinct = {json.dumps(v, sort_keys=True) for v in rp.values()}
    if len(distinct) != 1:
      _unsupported(field, rp, "different RoPE settings per layer type")
    rp = dict(next(iter(rp.values())))
  theta = float(rp.get("rope_theta") or d.get("rope_theta") or 10_000.0)
  kind = rp.get("rope_type", rp.get("type")) or "default"
  prf = rp.get("partial_rotary_factor", d.get("partial_rotary_factor"))
  if prf not in (None, 1, 1.0):
    _unsupported("partial_rotary_factor", prf, "RoPE rotates the whole head")
  if kind == "default":
    return dict(rope_theta=theta)
  if kind != "llama3":
    _unsupported(f"{field}.rope_type", kind, "only 'default' and 'llama3' RoPE are implemented")
  old = rp.get("original_max_position_embeddings") or d.get("max_position_embeddings")
  return dict(rope_theta=theta, rope_llama3_scaling=(
      float(rp["factor"]), float(rp["low_freq_factor"]), float(rp["high_freq_factor"]), int(old)))


def _llama_config(d: Mapping[str, Any]) -> dict:
  mt = d["model_type"]
  if _get(d, "hidden_act", "silu") != "silu":
    _unsupported("hidden_act", d["hidden_act"], "the Llama family MLP is SwiGLU (silu)")
  heads = _get(d, "num_attention_heads")
  out = dict(vocab_size=_get(d, "vocab_size"), hidden=_get(d, "hidden_size"),
             num_layers=_get(d, "num_hidden_layers"), num_heads=heads,
             num_kv_heads=_get(d, "num_key_value_heads", heads),
             head_dim=_get(d, "head_dim", 0), mlp_dim=_get(d, "intermediate_size"),
             max_seq_len=_get(d, "max_position_embeddings", 2048),
             norm="rms", norm_eps=float(_get(d, "rms_norm_eps", 1e-6)), position="rope",
             mlp="swiglu", tie_embeddings=bool(_get(d, "tie_word_embeddings", False)), **_rope(d))
  if out["head_dim"] * heads == out["hidden"]:
    out["head_dim"] = 0  # the default; keeps configs equal across an export round trip
  if mt == "qwen2":
    out.update(qkv_bias=True, out_bias=False, mlp_bias=False)
    layer_types = d.get("layer_types") or ()
    if d.get("use_sliding_window") and d.get("sliding_window") and (
        "sliding_attention" in layer_types or
        _get(d, "max_window_layers", 0) < out["num_layers"]):
      _unsupported("use_sliding_window", True, "sliding-window attention is not implemented")
  else:
    bias = bool(_get(d, "attention_bias", False))
    out.update(qkv_bias=bias, out_bias=bias, mlp_bias=bool(_get(d, "mlp_bias", False)))
    if mt == "mistral" and d.get("sliding_window"):
      # Full attention equals sliding-window attention on sequences no longer than the window.
      out["max_seq_len"] = min(out["max_seq_len"], int(d["sliding_window"]))
  return out


def _gpt2_config(d: Mapping[str, Any]) -> dict:
  act = _get(d, "activation_function", "gelu_new")
  if act not in ("gelu_new", "gelu_pytorch_tanh"):
    _unsupported("activation_function", act, "the GPT-2 MLP uses tanh-approximated GELU")
  for field, ok in (("scale_attn_by_inverse_layer_idx", False), ("scale_attn_weights", True),
                    ("add_cross_attention", False)):
    if bool(_get(d, field, ok)) != ok:
      _unsupported(field, d[field], f"only {field}={ok} is implemented")
  hidden = _get(d, "n_embd", alt=("hidden_size",))
  heads = _get(d, "n_head", alt=("num_attention_heads",))
  return dict(vocab_size=_get(d, "vocab_size"), hidden=hidden,
              num_layers=_get(d, "n_layer", alt=("num_hidden_layers",)), num_heads=heads,
              num_kv_heads=heads, mlp_dim=_get(d, "n_inner", 4 * hidden),
              max_seq_len=_get(d, "n_positions", 1024, alt=("n_ctx",)), norm="layer",
              norm_eps=float(_get(d, "layer_norm_epsilon", 1e-5)), position="learned",
              mlp="gelu", qkv_bias=True, out_bias=True, mlp_bias=True,
              tie_embeddings=bool(_get(d, "tie_word_embeddings", True)))


def _llama_json(cfg: ModelConfig, model_type: str) -> dict:
  rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_llama3_scaling is not None:
    f, lo, hi, old = cfg.rope_llama3_scaling
    rope.update(rope_type="llama3", factor=f, low_freq_factor=lo, high_freq_factor=hi,
                original_max_position_embeddings=old)
  d = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden, intermediate_size=cfg.mlp_dim,
           num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
           num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.dim_per_head, hidden_act="silu",
           max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
           tie_word_embeddings=cfg.tie_embeddings, rope_theta=cfg.rope_theta,
           rope_parameters=rope,  # transformers >= 5; the two fields around it for 4.x
           rope_scaling=({k: v for k, v in rope.items() if k != "rope_theta"}
                         if cfg.rope_llama3_scaling else None))
  if model_type == "qwen2":
    d.update(use_sliding_window=False, sliding_window=None, max_window_layers=cfg.num_layers)
  else:
    d.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
  return d


def _gpt2_json(cfg: ModelConfig, model_type: str) -> dict:
  eos = 50256 if cfg.vocab_size > 50256 else None  # GPT-2's <|endoftext|> when the vocab has it
  return dict(vocab_size=cfg.vocab_size, n_embd=cfg.hidden, n_layer=cfg.num_layers,
              n_head=cfg.num_heads, n_inner=cfg.mlp_dim, n_positions=cfg.max_seq_len,
              layer_norm_epsilon=cfg.norm_eps, activation_function="gelu_new",
              tie_word_embeddings=cfg.tie_embeddings, scale_attn_weights=True,
              scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
              bos_token_id=eos, eos_token_id=eos)


@dataclasses.dataclass(frozen=True)
class _Family:
  rows: tuple
  prefix: str  # in front of "base" and "layer" keys in a *ForCausalLM checkpoint
  layer_fmt: str
  arch: str
  read_config: Callable[[Mapping[str, Any]], dict]
  write_config: Callable[[ModelConfig, str], dict]
  ignore: tuple = ()  # regexes of buffers a checkpoint may carry that we do not need


_ROTARY = (r"rotary_emb\.inv_freq$",)
_FAMILIES = {
    "llama": _Family(_LLAMA_ROWS, "model.", "layers.{}.", "LlamaForCausalLM", _llama_config,
                     _llama_json, _ROTARY),
    "mistral": _Family(_LLAMA_ROWS, "model.", "layers.{}.", "MistralForCausalLM", _llama_config,
                       _llama_json, _ROTARY),
    "qwen2": _Family(_LLAMA_ROWS, "model.", "layers.{}.", "Qwen2ForCausalLM", _llama_config,
                     _llama_json, _ROTARY),
    "gpt2": _Family(_GPT2_ROWS, "transformer.", "h.{}.", "GPT2LMHeadModel", _gpt2_config,
                    _gpt2_json, (r"attn\.bias$", r"attn\.masked_bias$")),
}


def _key(fam: _Family, row: _Row, i: int | None, prefix: str) -> str:
  if row.scope == "head":
    return row.hf
  return prefix + (fam.layer_fmt.format(i) if row.scope == "layer" else "") + row.hf


def _family_of(cfg: ModelConfig) -> str:
  """Which HF architecture reproduces `cfg` (ConfigError naming the mismatch if none does)."""
  if (cfg.norm, cfg.position, cfg.mlp) == ("layer", "learned", "gelu"):
    for ok, what in ((cfg.qkv_bias and cfg.out_bias and cfg.mlp_bias, "all biases"),
                     (cfg.num_kv_heads == cfg.num_heads, "num_kv_heads == num_heads"),
                     (cfg.dim_per_head * cfg.num_heads == cfg.hidden, "head_dim*heads == hidden")):
      if not ok:
        raise ConfigError(f"cannot export as GPT-2: it needs {what}")
    return "gpt2"
  if (cfg.norm, cfg.position, cfg.mlp) == ("rms", "rope", "swiglu"):
    if cfg.qkv_bias == cfg.out_bias:
      return "llama"
    if cfg.qkv_bias and not cfg.mlp_bias:
      return "qwen2"
    raise ConfigError(f"cannot export qkv_bias={cfg.qkv_bias}, out_bias={cfg.out_bias}, "
                      f"mlp_bias={cfg.mlp_bias}: no HF Llama/Qwen2 config has these biases")
  raise ConfigError(f"cannot export norm={cfg.norm!r}, position={cfg.position!r}, "
                    f"mlp={cfg.mlp!r}: matches neither Llama/Qwen2 nor GPT-2")


def _read_json(path: str) -> dict:
  if not os.path.isfile(path):
    raise DataError(f"{path!r} does not exist")
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{path!r} is not readable JSON: {e}") from None


# ---------------------------------------------------------------------------------------------
# Public API.

def config_from_hf(hf_config: Mapping[str, Any] | str | os.PathLike, **overrides) -> ModelConfig:
  """ModelConfig from an HF config dict, a checkpoint directory, or a config.json path.

  `overrides` set ModelConfig fields the HF config does not carry (dtype, param_dtype, remat,
  scan_layers, or a shorter max_seq_len).
  """
  if not isinstance(hf_config, Mapping):
    path = os.fspath(hf_config)
    path = os.path.join(path, "config.json") if os.path.isdir(path) else path
    hf_config = _read_json(path)
  mt = hf_config.get("model_type")
  if mt not in _FAMILIES:
    raise ConfigError(f"HF config model_type={mt!r} is not supported; choose one of "
                      f"{sorted(_FAMILIES)}")
  fields = _FAMILIES[mt].read_config(hf_config)
  known = {f.name for f in dataclasses.fields(ModelConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise ConfigError(f"unknown ModelConfig override(s) {unknown}")
  fields.update({k: v for k, v in overrides.items() if v is not None})
  return ModelConfig(**fields)


@contextlib.contextmanager
def _open_weights(path: str):
  """Yields ({tensor name: file}, get(name) -> np.ndarray) over single or sharded safetensors."""
  index, single = os.path.join(path, _INDEX), os.path.join(path, _SINGLE)
  if os.path.isfile(index):
    with open(index, encoding="utf-8") as f:
      where = {k: os.path.join(path, v) for k, v in json.load(f)["weight_map"].items()}
  elif os.path.isfile(single):
    where = None
  else:
    raise DataError(f"HF checkpoint {path!r} has neither {_SINGLE} nor {_INDEX}")
  files = sorted(set(where.values())) if where else [single]
  for fn in files:
    if not os.path.isfile(fn):
      raise DataError(f"HF checkpoint shard {fn!r} (named in {_INDEX}) does not exist")
  with contextlib.ExitStack() as stack:
    handles = {}
    for fn in files:
      with _unreadable(fn):
        handles[fn] = stack.enter_context(safe_open(fn, framework="numpy"))
    if where is None:
      where = {k: single for k in handles[single].keys()}

    def get(k):
      with _unreadable(where[k], k):
        return handles[where[k]].get_tensor(k)  # bf16 arrives as ml_dtypes.bfloat16
    yield where, get


@contextlib.contextmanager
def _unreadable(fn: str, tensor: str | None = None):
  """A safetensors file cut short (an interrupted download or copy) or corrupt: one DataError
  naming the file, not the library's trace."""
  try:
    yield
  except (SafetensorError, OSError, ValueError) as e:
    what = f" (tensor {tensor!r})" if tensor else ""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    raise DataError(f"{fn}{what} cannot be read: {first}; the file is truncated or corrupt "
                    "(re-download or re-export it)") from None


def _tree_set(tree: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def _tree_get(tree, path: str):
  for p in path.split("/"):
    tree = tree[p]
  return tree


def load_checkpoint(path: str | os.PathLike, *, dtype: str = "float32",
                    param_dtype: str = "float32", scan_layers: bool = True,
                    **overrides) -> tuple[ModelConfig, dict]:
  """(ModelConfig, host numpy params) from an HF checkpoint directory.

  Params are in `param_dtype`, stacked on a leading layer axis under "layers" when `scan_layers`
  (else `layer_0`, `layer_1`, ...); no score head. Place them with `jax.device_put`.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise DataError(f"HF checkpoint directory {path!r} does not exist")
  hf_config = _read_json(os.path.join(path, "config.json"))
  cfg = config_from_hf(hf_config, dtype=dtype, param_dtype=param_dtype, scan_layers=scan_layers,
                       **overrides)
  fam = _FAMILIES[hf_config["model_type"]]
  store = np.dtype(cfg.storage_dtype)
  want = jax.eval_shape(lambda: init_params(cfg.replace(scan_layers=False), jax.random.key(0)))
  top, layers, used = {}, [{} for _ in range(cfg.num_layers)], set()
  with _open_weights(path) as (where, get):
    prefix = fam.prefix if any(k.startswith(fam.prefix) for k in where) else ""
    for row in fam.rows:
      if not row.when(cfg):
        continue
      for i in (range(cfg.num_layers) if row.scope == "layer" else (None,)):
        key = _key(fam, row, i, prefix)
        if key not in where:
          raise DataError(f"HF checkpoint {path!r}: tensor {key!r} is missing")
        w = get(key)
        try:
          arrays = row.tx.to_ours(w, cfg)
        except ValueError:
          arrays = [np.empty(0)] * len(row.ours)
        for p, x in zip(row.ours, arrays):
          need = _tree_get(want if i is None else want["layer_0"], p).shape
          if x.shape != need:
            raise DataError(f"HF checkpoint {path!r}: tensor {key!r} has shape {w.shape}, which "
                            f"does not give {p} the shape {need} the config needs")
          _tree_set(top if i is None else layers[i], p, np.asarray(x, store))
        used.add(key)
  ignore = fam.ignore + ((r"^lm_head\.weight$",) if cfg.tie_embeddings else ())
  extra = sorted(k for k in set(where) - used if not any(re.search(p, k) for p in ignore))
  if extra:
    raise DataError(f"HF checkpoint {path!r}: {len(extra)} unexpected tensor(s) the config does "
                    f"not account for: {extra[:20]}")
  if scan_layers:
    top["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
  else:
    top.update({f"layer_{i}": t for i, t in enumerate(layers)})
  return cfg, top


def _host(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:  # multi-host: gather everywhere
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(jax.device_get(x))


def hf_config(cfg: ModelConfig) -> dict:
  """The Hugging Face config.json (a dict) of the architecture that reproduces `cfg`."""
  model_type = _family_of(cfg)
  fam = _FAMILIES[model_type]
  return dict(architectures=[fam.arch], model_type=model_type, dtype=cfg.param_dtype,
              **fam.write_config(cfg, model_type))


def save_checkpoint(path: str | os.PathLike, cfg: ModelConfig, params,
                    *, max_shard_size_bytes: int | None = None,
                    token_ids: Mapping[str, int | None] | None = None) -> None:
  """Writes config.json and safetensors that `AutoModelForCausalLM.from_pretrained` loads.

  `params` may be jax arrays (sharded ones are gathered to host; on several hosts every process
  must call this, and only one should write) in either layer layout; a score head is dropped,
  and LoRA adapters are merged into their kernels. Over `max_shard_size_bytes`, weights go to
  numbered shards plus an index.
  Earlier model*.safetensors files in `path` are removed first. `token_ids`
  ({"bos_token_id", "eos_token_id", "pad_token_id"}) go into config.json.
  """
  path = os.fspath(path)
  model_type = _family_of(cfg)
  fam = _FAMILIES[model_type]
  params = nn.meta.unbox(params)
  if lora.has_adapters(params):  # LoRA adapters are folded into the kernels they adapt
    if not cfg.lora_rank:
      raise ConfigError("the params carry LoRA adapters but the config has lora_rank=0; pass "
                        "the config they were trained with")
    params, cfg = lora.merge(params, cfg)
  params = jax.tree.map(_host, params)
  scanned = "layers" in params
  tensors = {}
  for row in fam.rows:
    if not row.when(cfg):
      continue
    for i in (range(cfg.num_layers) if row.scope == "layer" else (None,)):
      if i is None:
        xs = tuple(_tree_get(params, p) for p in row.ours)
      elif scanned:
        xs = tuple(_tree_get(params["layers"], p)[i] for p in row.ours)
      else:
        xs = tuple(_tree_get(params[f"layer_{i}"], p) for p in row.ours)
      tensors[_key(fam, row, i, fam.prefix)] = np.ascontiguousarray(row.tx.to_hf(xs, cfg))

  os.makedirs(path, exist_ok=True)
  for old in glob.glob(os.path.join(path, "model*.safetensors")) + [os.path.join(path, _INDEX)]:
    if os.path.isfile(old):
      os.remove(old)
  hf_cfg = hf_config(cfg)
  hf_cfg.update({k: v for k, v in (token_ids or {}).items() if v is not None})
  with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
    json.dump(hf_cfg, f, indent=2, sort_keys=True)

  total = sum(t.nbytes for t in tensors.values())
  meta = {"format": "pt"}
  if max_shard_size_bytes is None or total <= max_shard_size_bytes:
    save_file(tensors, os.path.join(path, _SINGLE), metadata=meta)
    return
  shards, size = [{}], 0
  for k, t in tensors.items():
    if shards[-1] and size + t.nbytes > max_shard_size_bytes:
      shards.append({})
      size = 0
    shards[-1][k] = t
    size += t.nbytes
  weight_map = {}
  for n, shard in enumerate(shards, 1):
    name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(path, name), metadata=meta)
    weight_map.update({k: name for k in shard})
  with open(os.path.join(path, _INDEX), "w", encoding="utf-8") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
