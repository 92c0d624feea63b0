"""Compiled generation from a policy's params: prefill, then one `lax.while_loop` over a KV cache.

Prompts come left-padded ([B, P], real tokens at the right) so every row's next token lands in the
same cache slot; RoPE positions count only real tokens, so padding never shifts them. The loop
stops when every row has emitted EOS or `max_new_tokens` is reached; there is no host round trip
per token. Returned log-probs are those of the sampled tokens under the temperature-scaled,
unfiltered distribution (what an RL loss compares against a teacher-forced pass).
`sample_batch` / `sample_chunks` are how every stage samples: left-pad a batch of prompts (a
chunk of a longer list, filled to a fixed batch size), place it on the mesh, generate, and bring
the tokens, mask and log-probs back to the host; each caller keeps its own PRNG keys.
Not for: scoring with other models, or rollouts bookkeeping (the RL stages build on this).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import parallel
from rlhf_jax.errors import ConfigError, ShapeError
from rlhf_jax.models import Decoder, KVCache, ModelConfig, lm_logits
from rlhf_jax.models.param_kinds import is_weight_matrix, leaf_name


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  max_new_tokens: int = 32
  temperature: float = 1.0  # 0 means greedy
  top_k: int = 0  # 0 disables
  top_p: float = 1.0  # 1 disables

  def __post_init__(self):
    if self.max_new_tokens <= 0:
      raise ConfigError(f"sampling.max_new_tokens={self.max_new_tokens} must be positive")
    if self.temperature < 0:
      raise ConfigError(f"sampling.temperature={self.temperature} must be >= 0")
    if self.top_k < 0:
      raise ConfigError(f"sampling.top_k={self.top_k} must be >= 0")
    if not 0 < self.top_p <= 1:
      raise ConfigError(f"sampling.top_p={self.top_p} must be in (0, 1]")


def _filter_logits(logits_BxV, top_k: int, top_p: float):
  if top_k:
    kth = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
    cutoff_idx = jnp.sum(cum - jax.nn.softmax(sorted_logits, axis=-1) < top_p, axis=-1) - 1
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_idx[:, None], axis=-1)
    logits_BxV = jnp.where(logits_BxV < cutoff, -jnp.inf, logits_BxV)
  return logits_BxV


def _pick(logits_BxV, rng, cfg: SamplingConfig):
  """(token [B], log-prob [B]) at the configured temperature."""
  if cfg.temperature == 0:
    tok = jnp.argmax(logits_BxV, axis=-1)
    logp = jax.nn.log_softmax(logits_BxV, axis=-1)
  else:
    scaled = logits_BxV / cfg.temperature
    tok = jax.random.categorical(rng, _filter_logits(scaled, cfg.top_k, cfg.top_p), axis=-1)
    logp = jax.nn.log_softmax(scaled, axis=-1)
  return tok.astype(jnp.int32), jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def compute_copy(params, model_cfg: ModelConfig):
  """params with every weight matrix already in the compute dtype (bf16 when the master copy is
  fp32): a decode step then reads half the bytes. Each matrix is cast at its use anyway, so the
  values the model computes with are unchanged. Which leaves are matrices is read from their
  names (`param_kinds.is_weight_matrix`), not their rank: under scan_layers the norm scales and
  biases are [L, D], and the norms compute in float32 with them, as the trainer does. A score
  head (computed in float32) keeps its dtype too.
  """
  cd = model_cfg.compute_dtype
  if model_cfg.storage_dtype == cd:
    return params

  def cast(path, x):
    if (is_weight_matrix(path) and jnp.issubdtype(x.dtype, jnp.floating)
        and not leaf_name(path).startswith("score")):
      return x.astype(cd)
    return x

  return jax.tree_util.tree_map_with_path(cast, params)


def unrolled_copy(params, model_cfg: ModelConfig):
  """(params, config) for an unrolled layer loop: the scanned stack `layers` [L, ...] cut into
  `layer_0` ... `layer_{L-1}` once, so a decode step reads each layer's weights where they lie
  instead of slicing them out of the stack again (`ModelConfig.unroll_decode`)."""
  if not (model_cfg.scan_layers and model_cfg.unroll_decode):
    return params, model_cfg
  out = {k: v for k, v in params.items() if k != "layers"}
  for i in range(model_cfg.num_layers):
    out[f"layer_{i}"] = jax.tree.map(lambda x, i=i: x[i], params["layers"])
  return out, model_cfg.replace(scan_layers=False)


@functools.partial(jax.jit, static_argnames=("model_cfg", "cfg", "eos_id", "pad_id", "hook"))
def generate(params, prompt_BxP, prompt_mask_BxP, rng, *, model_cfg: ModelConfig,
             cfg: SamplingConfig, eos_id: int, pad_id: int, hook=None):
  """Samples up to N=cfg.max_new_tokens tokens after each left-padded prompt.

  Returns dict: tokens [B, N] int32 (pad after EOS), mask [B, N] bool (True for generated tokens,
  the EOS included), logprobs [B, N] float32 (0 where mask is False).
  hook: None, or a hashable logits transform with `split(params) -> (decoder params, extra)`
  and `hook(extra, hidden_BxD, logits_BxV) -> logits_BxV`, applied to the logits of every step
  before temperature and filtering (ILQL's advantage-shaped decoding, `rlhf_jax.ilql.decode`):
  `params` is then the pytree `split` reads, and the log-probs are the transformed policy's.
  """
  b, p = prompt_BxP.shape
  n = cfg.max_new_tokens
  params, extra = (params, None) if hook is None else hook.split(params)
  params = compute_copy(params, model_cfg)  # cast once, not once per decode step
  params, model_cfg = unrolled_copy(params, model_cfg)
  model = Decoder(model_cfg)
  step_outputs = ("logits",) if hook is None else ("hidden", "logits")

  def shape(out_hidden_Bx1xD, logits_BxV):
    return logits_BxV if hook is None else hook(extra, out_hidden_Bx1xD[:, 0], logits_BxV)
  prompt_mask = prompt_mask_BxP.astype(bool)
  positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)
  prompt_len = jnp.sum(prompt_mask, axis=1)
  cache = KVCache.init(model_cfg, b, p + n)
  out, cache = model.apply({"params": params}, prompt_BxP, prompt_mask, positions, cache,
                           outputs=("hidden",))
  # The LM head on the last column only: [B, P, V] float32 logits would be the largest array
  # of the program (19 GB at V = 152K, B = 64, P = 512) for one column read.
  logits = shape(out["hidden"][:, -1:], lm_logits(model_cfg, params, out["hidden"][:, -1:])[:, 0])

  def cond(carry):
    i, _, _, _, done, *_ = carry
    return (i < n) & ~jnp.all(done)

  def body(carry):
    i, tokens, logps, masks, done, cache, logits, rng = carry
    rng, sub = jax.random.split(rng)
    tok, logp = _pick(logits, sub, cfg)
    live = ~done
    tok = jnp.where(live, tok, pad_id)
    tokens = tokens.at[:, i].set(tok)
    logps = logps.at[:, i].set(jnp.where(live, logp, 0.0))
    masks = masks.at[:, i].set(live)
    out, cache = model.apply({"params": params}, tok[:, None], live[:, None],
                             (prompt_len + i)[:, None], cache, step_outputs)
    return (i + 1, tokens, logps, masks, done | (tok == eos_id), cache,
            shape(out.get("hidden"), out["logits"][:, 0]), rng)

  init = (jnp.zeros((), jnp.int32), jnp.full((b, n), pad_id, jnp.int32),
          jnp.zeros((b, n), jnp.float32), jnp.zeros((b, n), bool), jnp.zeros((b,), bool), cache,
          logits, rng)
  _, tokens, logps, masks, *_ = jax.lax.while_loop(cond, body, init)
  return {"tokens": tokens, "mask": masks, "logprobs": logps}


def left_pad(prompts: list[list[int]], pad_id: int, max_len: int | None = None):
  """Host-side: list of token lists -> (tokens [B, P] int32, mask [B, P] bool), left-padded."""
  longest = max(len(x) for x in prompts)
  p = max_len or longest
  if longest > p:
    raise ShapeError(f"a prompt of {longest} tokens is longer than the prompt limit {p}")
  tokens = np.full((len(prompts), p), pad_id, np.int32)
  mask = np.zeros((len(prompts), p), bool)
  for i, x in enumerate(prompts):
    if x:
      tokens[i, p - len(x):] = x
      mask[i, p - len(x):] = True
  return tokens, mask


# ---- sampling a list of prompts on a mesh --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Samples:
  """One sampled batch of B rows: rows [0, `rows`) answer prompts [start, start + rows) of the
  caller's list; the rest repeat the last prompt, to fill the batch to its fixed size."""
  start: int
  rows: int
  prompt_BxP: np.ndarray  # host, left-padded (pad_id where prompt_mask_BxP is False)
  prompt_mask_BxP: np.ndarray
  tokens_BxN: np.ndarray  # host copies of generate's outputs
  mask_BxN: np.ndarray
  logprobs_BxN: np.ndarray
  on_mesh: dict  # "prompt", "prompt_mask", "tokens", "mask", "logprobs": global jax.Arrays

  def rows_on_mesh(self):
    """(tokens [B, P+N], attention mask [B, P+N]) on the mesh: prompt and response, for the
    models that score them."""
    m = self.on_mesh
    return (jnp.concatenate([m["prompt"], m["tokens"]], axis=1),
            jnp.concatenate([m["prompt_mask"], m["mask"]], axis=1))

  def response_ids(self, i: int) -> list[int]:
    """Row i's response tokens (up to and including EOS when one was emitted)."""
    return [int(t) for t in self.tokens_BxN[i][self.mask_BxN[i]]]


def generator(model_cfg: ModelConfig, cfg: SamplingConfig, eos_id: int, pad_id: int,
              hook=None) -> Callable:
  """generate_fn(params, prompt_BxP, prompt_mask_BxP, rng) -> `generate`'s dict, for
  `sample_batch` (the RL stage passes its own compiled one instead); `hook` as in `generate`."""
  return functools.partial(generate, model_cfg=model_cfg, cfg=cfg, eos_id=eos_id, pad_id=pad_id,
                           hook=hook)


def put_prompts(prompts: list[list[int]], pad_id: int, width: int, mesh, rules):
  """(host tokens [B, P], host mask [B, P], {"prompt", "prompt_mask"} on the mesh): the prompts
  left-padded to `width`; each process places its own slice of the B rows (`put_batch`)."""
  tok, mask = left_pad(prompts, pad_id, width)
  pid, rows = jax.process_index(), len(prompts) // jax.process_count()
  local = {"prompt": tok[pid * rows:(pid + 1) * rows],
           "prompt_mask": mask[pid * rows:(pid + 1) * rows]}
  return tok, mask, parallel.put_batch(local, mesh, rules)


def sample_batch(generate_fn: Callable, params, prompts: list[list[int]], rng, *, pad_id: int,
                 width: int, mesh, rules, start: int = 0, rows: int | None = None) -> Samples:
  """One batch: `prompts` (B token lists, B dividing over the mesh's batch axes) left-padded to
  `width`, placed on the mesh, sampled with `generate_fn` and key `rng` (placed replicated, so
  every key gives one compiled program), and brought back to the host."""
  tok, mask, dev = put_prompts(prompts, pad_id, width, mesh, rules)
  gen = generate_fn(params, dev["prompt"], dev["prompt_mask"],
                    jax.device_put(rng, parallel.replicated(mesh)))
  host = {k: parallel.to_host(gen[k]) for k in ("tokens", "mask", "logprobs")}
  return Samples(start=start, rows=len(prompts) if rows is None else rows, prompt_BxP=tok,
                 prompt_mask_BxP=mask, tokens_BxN=host["tokens"], mask_BxN=host["mask"],
                 logprobs_BxN=host["logprobs"], on_mesh={**dev, **gen})


def sample_chunks(generate_fn: Callable, params, prompts: list[list[int]],
                  key_of: Callable[[int], jax.Array], *, batch_size: int, pad_id: int,
                  width: int, mesh, rules) -> Iterator[Samples]:
  """`sample_batch` over `prompts` in chunks of `batch_size` rows, the last chunk filled with
  copies of its last prompt (one batch shape, one compiled program); chunk `start` (the index
  of its first prompt) is sampled with key `key_of(start)`."""
  for start in range(0, len(prompts), batch_size):
    part = prompts[start:start + batch_size]
    filled = part + [part[-1]] * (batch_size - len(part))
    yield sample_batch(generate_fn, params, filled, key_of(start), pad_id=pad_id, width=width,
                       mesh=mesh, rules=rules, start=start, rows=len(part))
