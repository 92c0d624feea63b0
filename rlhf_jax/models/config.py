"""Model hyper-parameters: one frozen dataclass covering the Llama/Qwen2 and GPT-2 families.

Named shapes (`PRESETS`) give the sizes the configs and benchmarks refer to (`tiny`, `gpt2`,
`qwen05b`, `llama1b`, ...); `ModelConfig.from_dict` builds one from a config section and names the
bad field when a value is out of range. Not for: loading Hugging Face configs (see `hf.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from rlhf_jax.errors import ConfigError, reject_unknown_fields
from rlhf_jax.models import attention

_NORMS = ("rms", "layer")
_POSITIONS = ("rope", "learned")
_POOLINGS = ("last", "mean", "sum")
LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
_MLPS = ("swiglu", "gelu")
_REMAT = ("none", "full", "dots", "dots_no_batch")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only transformer.

  Llama family: norm="rms", position="rope", mlp="swiglu" (Qwen2 adds qkv_bias=True).
  GPT-2: norm="layer", position="learned", mlp="gelu", all biases, tied embeddings.
  """

  vocab_size: int = 512  # rows of the embedding table (and LM head columns)
  hidden: int = 64  # model width d
  num_layers: int = 2  # decoder blocks
  num_heads: int = 4  # query heads
  num_kv_heads: int = 4  # key/value heads (< num_heads: grouped-query attention)
  head_dim: int = 0  # 0 means hidden // num_heads
  mlp_dim: int = 256  # hidden width of the MLP
  max_seq_len: int = 128  # longest row (prompt + response) the model takes
  norm: str = "rms"  # "rms" (RMSNorm) or "layer" (LayerNorm)
  norm_eps: float = 1e-5  # epsilon inside the norms
  position: str = "rope"  # "rope" (rotary) or "learned" (absolute embeddings)
  rope_theta: float = 10_000.0  # RoPE base frequency
  # Llama-3 frequency scaling: (factor, low_freq_factor, high_freq_factor, original_max_len).
  rope_llama3_scaling: tuple[float, float, float, int] | None = None
  mlp: str = "swiglu"  # "swiglu" (Llama) or "gelu" (GPT-2)
  qkv_bias: bool = False  # biases on the q, k, v projections (Qwen2, GPT-2)
  out_bias: bool = False  # attention output projection bias (GPT-2)
  mlp_bias: bool = False  # biases in the MLP (GPT-2)
  tie_embeddings: bool = False  # the LM head is the embedding table transposed
  dtype: str = "float32"  # compute dtype of matmuls
  param_dtype: str = "float32"  # storage dtype of parameters (master weights)
  remat: str = "none"  # activation recomputation: none, full, dots, dots_no_batch
  scan_layers: bool = True  # layers as one lax.scan (fast compiles) or unrolled
  # The attention kernel of training, scoring and prefill (`rlhf_jax.models.attention`):
  # "einsum" (written out), "xla" (jax.nn.dot_product_attention), "cudnn" (its flash-attention
  # path: GPU, bf16/fp16) or "auto" (cudnn on a GPU where it can run, else xla). Compute only:
  # every choice reads the same weights; the decode step always runs the einsum.
  attention: str = "auto"
  # The LM head's log-probs of chosen tokens in scoring and training losses, this many positions
  # at a time (`rlhf_jax.models.chunked_head`): the [B, T, V] float32 logits never exist whole,
  # and the backward pass recomputes one chunk at a time. 0 = all positions at once. Compute
  # only; same values up to float rounding.
  logits_chunk: int = 0
  # The sampler's decode loop runs the layers unrolled, on per-layer weights cut from the scanned
  # stack once before the loop. A scanned decode slices every layer's weights out of the stack
  # again at each step (XLA copies them): 82 ms a step against 51 unrolled, bf16 gpt2 on the
  # 2-core CPU (issue 18). False keeps the scan: faster compiles, and no per-layer copy of the
  # weights while sampling when they are stored in the compute dtype. Compute only.
  unroll_decode: bool = True
  # How a score head (reward model) turns per-token scores [B, T] into one number per row:
  # "last" (the last real token: InstructGPT), "mean" or "sum" over the row's real tokens ("sum"
  # divided by max_seq_len, a constant that keeps rewards of order one). With "sum" the reward is
  # additive over tokens, so length is a feature the model gets for free and the context decides
  # its sign; the prompt's own terms cancel between two responses to the same prompt.
  score_pooling: str = "last"
  # Low-rank adapters (LoRA): rank r of the adapters on the `lora_targets` projections; 0 = off.
  # With r > 0 only the adapters (and a score head) train, the base weights are frozen.
  lora_rank: int = 0
  lora_alpha: float = 16.0  # the adapters' output is scaled by lora_alpha / lora_rank
  # Comma-separated projections that get adapters: q, k, v, o (attention), gate, up, down (MLP;
  # GPT-2's MLP has no gate).
  lora_targets: str = "q,k,v,o,gate,up,down"

  def __post_init__(self):
    def need(cond, field, why):
      if not cond:
        raise ConfigError(f"model.{field}={getattr(self, field)!r}: {why}")

    for f in ("vocab_size", "hidden", "num_layers", "num_heads", "num_kv_heads", "mlp_dim",
              "max_seq_len"):
      need(getattr(self, f) > 0, f, "must be a positive integer")
    need(self.head_dim >= 0, "head_dim", "must be >= 0 (0 means hidden // num_heads)")
    need(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
         f"must divide num_heads={self.num_heads} (grouped-query attention)")
    if self.head_dim == 0:
      need(self.hidden % self.num_heads == 0, "num_heads",
           f"must divide hidden={self.hidden} when head_dim is 0")
    need(self.norm in _NORMS, "norm", f"must be one of {_NORMS}")
    need(self.position in _POSITIONS, "position", f"must be one of {_POSITIONS}")
    need(self.mlp in _MLPS, "mlp", f"must be one of {_MLPS}")
    need(self.remat in _REMAT, "remat", f"must be one of {_REMAT}")
    need(self.dtype in _DTYPES, "dtype", f"must be one of {_DTYPES}")
    need(self.attention in attention.IMPLEMENTATIONS, "attention",
         f"must be one of {attention.IMPLEMENTATIONS}")
    if self.attention == "cudnn":
      why = attention.cudnn_refusal(self.dtype, self.dim_per_head)
      need(why is None, "attention", f"cuDNN flash attention {why} (or use 'xla' or 'auto')")
    need(self.logits_chunk >= 0, "logits_chunk", "must be >= 0 (0: all positions at once)")
    need(self.param_dtype in _DTYPES, "param_dtype", f"must be one of {_DTYPES}")
    need(self.score_pooling in _POOLINGS, "score_pooling", f"must be one of {_POOLINGS}")
    need(self.norm_eps > 0, "norm_eps", "must be positive")
    need(self.lora_rank >= 0, "lora_rank", "must be >= 0 (0: no adapters)")
    need(self.lora_alpha > 0, "lora_alpha", "must be positive")
    targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
    need(targets and all(t in LORA_TARGETS for t in targets), "lora_targets",
         f"must be a comma-separated subset of {','.join(LORA_TARGETS)}")
    if self.rope_llama3_scaling is not None:
      need(len(self.rope_llama3_scaling) == 4, "rope_llama3_scaling",
           "must be (factor, low_freq_factor, high_freq_factor, original_max_len)")

  @property
  def dim_per_head(self) -> int:
    return self.head_dim or self.hidden // self.num_heads

  def lora_on(self, projection: str) -> bool:
    """Whether `projection` (q, k, v, o, gate, up, down) carries LoRA adapters."""
    return self.lora_rank > 0 and projection in {
        t.strip() for t in self.lora_targets.split(",")}

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def storage_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    """Builds from a config mapping; a preset name under key `preset` fills unset fields."""
    d = dict(d)
    base = {}
    preset = d.pop("preset", None)
    if preset:
      if preset not in PRESETS:
        raise ConfigError(f"model.preset={preset!r}: unknown; choose one of {sorted(PRESETS)}")
      base = dataclasses.asdict(PRESETS[preset])
    reject_unknown_fields(cls, d, "model")
    # None in the config section means "keep the preset's value".
    base.update({k: v for k, v in d.items() if v is not None})
    if isinstance(base.get("rope_llama3_scaling"), list):
      base["rope_llama3_scaling"] = tuple(base["rope_llama3_scaling"])
    return cls(**base)

  def num_params(self, include_embeddings: bool = True) -> int:
    """Parameter count (no score head)."""
    d, l, dh = self.hidden, self.num_layers, self.dim_per_head
    attn = d * dh * (self.num_heads * 2 + self.num_kv_heads * 2)
    if self.qkv_bias:
      attn += dh * (self.num_heads + 2 * self.num_kv_heads)
    if self.out_bias:
      attn += d
    n_mat = 3 if self.mlp == "swiglu" else 2
    mlp = n_mat * d * self.mlp_dim + ((n_mat - 1) * self.mlp_dim + d if self.mlp_bias else 0)
    norms = (2 if self.norm == "layer" else 1) * d
    per_layer = attn + mlp + 2 * norms
    total = l * per_layer + norms
    if include_embeddings:
      total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
      if self.position == "learned":
        total += self.max_seq_len * d
    elif not self.tie_embeddings:
      total += self.vocab_size * d  # the LM head is a matmul, embeddings are a lookup
    return total

  def flops_per_token(self, seq_len: int, lm_head: bool = True) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), PaLM appendix B convention:
    6 per matmul weight (the LM head counted, tied or not, when `lm_head`) plus attention."""
    n = self.num_params(include_embeddings=False)
    if lm_head and self.tie_embeddings:
      n += self.vocab_size * self.hidden  # the tied table is a real matmul as the LM head
    elif not lm_head and not self.tie_embeddings:
      n -= self.vocab_size * self.hidden  # a reward model or critic has no LM head
    attn = 2 * self.num_layers * self.num_heads * self.dim_per_head * seq_len
    if self.lora_rank:  # frozen weights: forward and input gradients only (4 per weight)
      return 4.0 * n + 6.0 * self.num_lora_params() + 6.0 * attn
    return 6.0 * n + 6.0 * attn

  def num_lora_params(self) -> int:
    """Parameters of the LoRA adapters (0 without them)."""
    if not self.lora_rank:
      return 0
    d, f, q, kv = (self.hidden, self.mlp_dim, self.num_heads * self.dim_per_head,
                   self.num_kv_heads * self.dim_per_head)
    sizes = {"q": d + q, "k": d + kv, "v": d + kv, "o": q + d, "up": d + f, "down": f + d,
             "gate": d + f if self.mlp == "swiglu" else 0}
    return self.num_layers * self.lora_rank * sum(
        n for t, n in sizes.items() if self.lora_on(t))


_LLAMA = dict(norm="rms", position="rope", mlp="swiglu")
_GPT2 = dict(norm="layer", norm_eps=1e-5, position="learned", mlp="gelu", qkv_bias=True,
             out_bias=True, mlp_bias=True, tie_embeddings=True)

PRESETS: dict[str, ModelConfig] = {
    # The built-in task's policy: small enough for a CPU run in minutes.
    "tiny": ModelConfig(vocab_size=512, hidden=128, num_layers=2, num_heads=4, num_kv_heads=2,
                        mlp_dim=384, max_seq_len=128, tie_embeddings=True, **_LLAMA),
    "small": ModelConfig(vocab_size=512, hidden=256, num_layers=4, num_heads=8, num_kv_heads=4,
                         mlp_dim=768, max_seq_len=256, tie_embeddings=True, **_LLAMA),
    "gpt2": ModelConfig(vocab_size=50257, hidden=768, num_layers=12, num_heads=12,
                        num_kv_heads=12, mlp_dim=3072, max_seq_len=1024, **_GPT2),
    "qwen05b": ModelConfig(vocab_size=151936, hidden=896, num_layers=24, num_heads=14,
                           num_kv_heads=2, mlp_dim=4864, max_seq_len=32768, norm_eps=1e-6,
                           rope_theta=1_000_000.0, qkv_bias=True, tie_embeddings=True,
                           dtype="bfloat16", **_LLAMA),
    "llama1b": ModelConfig(vocab_size=128256, hidden=2048, num_layers=16, num_heads=32,
                           num_kv_heads=8, mlp_dim=8192, max_seq_len=131072, norm_eps=1e-5,
                           rope_theta=500_000.0, rope_llama3_scaling=(32.0, 1.0, 4.0, 8192),
                           tie_embeddings=True, dtype="bfloat16", **_LLAMA),
    # Llama-3.1-8B's shape: for the planner's tables and benchmarks on big accelerators.
    "llama8b": ModelConfig(vocab_size=128256, hidden=4096, num_layers=32, num_heads=32,
                           num_kv_heads=8, mlp_dim=14336, max_seq_len=131072, norm_eps=1e-5,
                           rope_theta=500_000.0, rope_llama3_scaling=(8.0, 1.0, 4.0, 8192),
                           dtype="bfloat16", **_LLAMA),
}
