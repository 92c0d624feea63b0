"""Bytes per device, counted two ways: our own count from the shapes, and XLA's memory and cost
analysis of the compiled program; then a verdict against a device's memory and the levers that
would make an over-budget run fit.

Our count: parameters and optimizer state are summed leaf by leaf over their shard shapes on the
config's mesh (exact); the KV cache is [L, B, P+N, kv_heads, head_dim] twice in the compute
dtype, split over the batch axes; activations kept for the backward pass follow Korthikanti et
al. (2022): per layer and token about 34·d bytes at 16 bits (+ 5·heads·T for the attention
scores without a fused kernel), scaled by the compute dtype, only the layer inputs (2·d) under
full remat and the matmul outputs (about 16·d) under the "dots" policies. The float32 logits are
counted apart ("logits"): [rows, positions, V], and their gradient in a training program, or
[rows, C, V] with `model.logits_chunk = C`. XLA's figures are the compiled program's
arguments, outputs (less what aliases a donated argument) and temporaries; its peak is
arguments + outputs − aliased + temporaries.
Not for: building the programs (`programs.py`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

GIB = 1024 ** 3

# Memory per chip (GiB, as the vendors state them: GB for GPUs, GiB-ish HBM for TPUs).
DEVICES = {
    "h100": 80.0, "h200": 141.0, "a100-40": 40.0, "a100-80": 80.0, "a100": 80.0,
    "v4": 32.0, "v5e": 16.0, "v5p": 95.0, "v6e": 32.0,
}


def device_memory_gib(name: str) -> float:
  key = name.lower().replace("tpu", "").replace(" ", "").replace("_", "-").strip("-")
  if key not in DEVICES:
    raise SystemExit(f"--device={name!r}: unknown; choose one of {sorted(DEVICES)} or give "
                     "--memory_gib")
  return DEVICES[key]


def tree_bytes_per_device(abstract, shardings) -> int:
  """Bytes one device holds of `abstract` (ShapeDtypeStructs) placed by `shardings`."""
  total = 0
  for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    shape = s.shard_shape(x.shape) if hasattr(s, "shard_shape") else x.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
  return total


def kv_cache_bytes(cfg, batch_per_device: int, length: int) -> int:
  itemsize = np.dtype(cfg.compute_dtype).itemsize
  return 2 * cfg.num_layers * batch_per_device * length * cfg.num_kv_heads * cfg.dim_per_head * (
      itemsize)


def activation_bytes(cfg, tokens_per_device: int, seq_len: int) -> int:
  """Activations the layers keep for a training step's backward pass (the module docstring)."""
  scale = np.dtype(cfg.compute_dtype).itemsize / 2  # the formula counts 16-bit values
  per_token_layer = {"none": 34 * cfg.hidden + 5 * cfg.num_heads * seq_len,
                     "full": 2 * cfg.hidden, "dots": 16 * cfg.hidden,
                     "dots_no_batch": 16 * cfg.hidden}[cfg.remat]
  return int(tokens_per_device * cfg.num_layers * per_token_layer * scale)


def logits_bytes(cfg, rows: int, positions: int, backward: bool = True) -> int:
  """The float32 logits of `positions` per row held at once, and their gradient when
  `backward`: with `model.logits_chunk = C` only C positions' at a time."""
  held = min(cfg.logits_chunk, positions) if cfg.logits_chunk else positions
  return (2 if backward else 1) * 4 * rows * held * cfg.vocab_size


@dataclasses.dataclass
class ProgramPlan:
  """One compiled program: our count and XLA's, bytes per device."""

  name: str
  ours: dict  # params, optimizer, kv_cache, activations, ... -> bytes
  xla: dict = dataclasses.field(default_factory=dict)

  @property
  def xla_peak(self) -> int:
    x = self.xla
    return x["arguments"] + x["outputs"] - x["aliased"] + x["temporaries"]

  @property
  def ours_total(self) -> int:
    return sum(self.ours.values())


def xla_figures(compiled) -> dict:
  """Memory (bytes per device) and cost of a compiled program."""
  m = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  cost = cost or {}
  return {"arguments": int(m.argument_size_in_bytes), "outputs": int(m.output_size_in_bytes),
          "aliased": int(m.alias_size_in_bytes), "temporaries": int(m.temp_size_in_bytes),
          "code": int(m.generated_code_size_in_bytes), "flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def gib(b: float) -> str:
  """Bytes as GiB, or MiB below 1 GiB (the planner's tables, per device)."""
  return f"{b / GIB:.2f}G" if b >= GIB else f"{b / 1024 ** 2:.1f}M"


def levers(plan, config, cfg, devices: int, budget: int) -> list[str]:
  """What would bring `plan`'s peak under `budget` bytes, largest saving first."""
  out = []
  mesh = dict(config.mesh)
  opt = plan.resident.get("optimizer", 0)
  params = plan.resident.get("params", 0)
  fsdp = mesh.get("fsdp", 1)
  if devices > 1 and fsdp not in (-1, devices):
    out.append(((params + opt) * (1 - 1 / devices),
               f"mesh.fsdp={devices} (mesh.data=1): parameters and optimizer state split over "
               f"all {devices} devices, about {gib((params + opt) * (1 - 1 / devices))} less per "
               "device"))
  if not cfg.lora_rank and opt:
    out.append((opt, f"model.lora_rank=16: the base frozen, no optimizer state for it "
                     f"(about {gib(opt)} less)"))
  act = max((p.ours.get("activations", 0) for p in plan.programs), default=0)
  if cfg.remat == "none" and act:
    out.append((act * 0.9, "model.remat=full: keep only each layer's input for the backward "
                           f"pass (activations about {gib(act)} -> {gib(act / 17)})"))
  if act:
    out.append((act / 2, "half the rows per optimizer step (rl.minibatches x2, or "
                         "train.batch_size / 2) halves activations"))
  logits = max((p.ours.get("logits", 0) for p in plan.programs), default=0)
  if not cfg.logits_chunk and logits:
    out.append((logits * 0.9, "model.logits_chunk=128: the LM head's log-probs 128 positions at "
                              f"a time; the whole float32 logits ({gib(logits)} now) never exist"))
  kv = max((p.ours.get("kv_cache", 0) for p in plan.programs), default=0)
  if kv:
    out.append((kv / 2, "a shorter generation (rl.max_new_tokens) or a smaller rl.rollout_batch "
                        f"shrinks the KV cache ({gib(kv)} now)"))
  out.sort(key=lambda x: -x[0])
  return [text for _, text in out]


@dataclasses.dataclass
class StagePlan:
  """Every program of a stage, plus what stays resident between them (RL: all four models)."""

  stage: str
  programs: list
  resident: dict  # bytes per device held across programs

  def peak(self) -> int:
    """Resident state + the largest program's own temporaries and fresh outputs."""
    resident = sum(self.resident.values())
    extra = max(p.xla["temporaries"] + max(p.xla["outputs"] - p.xla["aliased"], 0)
                for p in self.programs)
    return resident + extra


def verdict(plan: StagePlan, memory_gib: float) -> str:
  peak = plan.peak()
  budget = memory_gib * GIB
  frac = peak / budget
  if frac <= 0.9:
    return f"fits: peak {gib(peak)} of {memory_gib:g} GiB per device ({frac:.0%})"
  if frac <= 1.0:
    return (f"tight: peak {gib(peak)} of {memory_gib:g} GiB per device ({frac:.0%}); "
            "allocator fragmentation may push it over")
  return f"does not fit: peak {gib(peak)} > {memory_gib:g} GiB per device ({frac:.0%})"


def ceil_div(a: int, b: int) -> int:
  return -(-a // b) if b else a


def prod(xs) -> int:
  return int(math.prod(xs))
