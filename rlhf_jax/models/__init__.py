"""Models: the decoder transformer, its config and presets, the KV cache, HF interop (hf.py)."""

from rlhf_jax.models.config import PRESETS, ModelConfig
from rlhf_jax.models.transformer import HEADS, Decoder, KVCache, forward, init_params, lm_logits

__all__ = ["HEADS", "PRESETS", "ModelConfig", "Decoder", "KVCache", "forward", "init_params",
           "lm_logits"]
