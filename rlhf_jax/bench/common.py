"""What every measurement shares: the clock discipline, the record format, the environment.

`time_calls(run, repeats)` calls `run()` once to warm up (compilation, allocator, autotuning),
excluded, then `repeats` times; `run` must block until its device work is done
(`jax.block_until_ready` / `torch.cuda.synchronize`) before it returns, so each clock read sees
finished work. The figure is the median. `record(...)` is one JSON-able measurement: what, which
implementation, the device, software versions, the setting and the figures.
Not for: what is measured (`ours`, `peers`, `hardware`).
"""

from __future__ import annotations

import importlib
import platform
import statistics
import time
from typing import Any, Callable


def time_calls(run: Callable[[], Any], repeats: int, warmup: int = 1) -> dict:
  """{"median_s", "min_s", "times_s", "warmup_s"}: `run()` timed `repeats` times after `warmup`
  untimed calls (the first of which compiles)."""
  if repeats < 1:
    raise ValueError(f"repeats={repeats} must be >= 1")
  t0 = time.perf_counter()
  for _ in range(warmup):
    run()
  warmup_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    run()
    times.append(time.perf_counter() - t0)
  return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times,
          "warmup_s": warmup_s}


def versions(*modules: str) -> dict:
  """{module: version} of what the figure depends on (missing modules are left out)."""
  out = {"python": platform.python_version()}
  for m in modules:
    try:
      out[m] = getattr(importlib.import_module(m), "__version__", "?")
    except ImportError:
      pass
  return out


def jax_device() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  d = jax.devices()[0]
  return f"{d.platform}:{d.device_kind} x{jax.device_count()}"


def jax_peak_memory_gib() -> float | None:
  """Peak bytes in use on device 0 since the process started (None where not reported: CPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  (backends without memory stats)
    return None
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else peak / 2**30


def jax_live_memory_gib() -> float:
  """Bytes of every live JAX array, over all devices (any backend): what a run holds between
  steps (params, optimizer state, frozen models), without a step's temporaries."""
  import jax  # pylint: disable=g-import-not-at-top
  return sum(a.nbytes for a in jax.live_arrays()) / 2**30


def record(what: str, impl: str, device: str, setting: dict, figures: dict,
           versions_: dict) -> dict:
  """One measurement. `key` is what a peer's record must share to be compared with ours."""
  key = f"{what} " + " ".join(f"{k}={setting[k]}" for k in sorted(setting)
                              if k in KEY_FIELDS)
  return {"what": what, "impl": impl, "key": key, "device": device, "setting": setting,
          "figures": figures, "versions": versions_, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                         time.gmtime())}


# The setting fields that make two records comparable (ours against a peer's).
KEY_FIELDS = ("shape", "batch", "prompt", "new", "seq", "loss", "sampled_tokens", "lora_rank",
              "dtype")

# For each measurement, the figure the report compares and whether higher is better.
HEADLINE = {
    "generate": ("tokens_per_s", True),
    "train": ("tokens_per_s", True),
    "rl_iteration": ("iteration_s", False),
    "matmul_peak": ("tflops", True),
    "copy_bandwidth": ("gb_per_s", True),
}
