"""Where metrics go: console lines, a JSONL file, TensorBoard event files; and a progress line.

Only process 0 writes (on other processes the writer is silent), so multi-host runs log once.
Values may be jax arrays: they are read here, on the host, after the step that made them was
dispatched, so the loop does not wait on the device to log.
A run that resumes from step S passes `resume_step=S`: the rows of its stage after S (written
by the interrupted run after its last checkpoint) are dropped from metrics.jsonl, and the
TensorBoard writer purges its events after S (tensorboardX's `purge_step`), so neither shows a
step twice.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np


def _scalar(v) -> float:
  return float(np.asarray(v))


def truncate_jsonl(path: str, prefix: str, last_step: int) -> int:
  """Drops the rows of stage `prefix` with step > last_step from `path`; returns how many."""
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue  # a line cut short by a kill mid-write
    if row.get("stage") != prefix or row.get("step", 0) <= last_step:
      kept.append(line if line.endswith("\n") else line + "\n")
  if len(kept) != len(lines):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return len(lines) - len(kept)


class MetricWriter:
  def __init__(self, workdir: str | None, prefix: str = "", tensorboard: bool = True,
               resume_step: int | None = None):
    self.prefix = prefix
    self.active = jax.process_index() == 0
    self._jsonl = self._tb = None
    if not self.active or workdir is None:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None:
      truncate_jsonl(path, prefix, resume_step)
    self._jsonl = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        purge = None if resume_step is None else resume_step + 1
        self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge)
      except ImportError:
        print("tensorboardX not installed: no TensorBoard event files", file=sys.stderr)

  def write(self, step: int, metrics: Mapping[str, Any], console: bool = True) -> dict:
    vals = {k: _scalar(v) for k, v in metrics.items()}
    if not self.active:
      return vals
    if self._jsonl:
      try:
        self._jsonl.write(json.dumps({"step": int(step), "stage": self.prefix, **vals}) + "\n")
        self._jsonl.flush()
      except OSError as e:  # a full disk names the file it could not write
        name, self._jsonl = self._jsonl.name, None
        raise OSError(e.errno, e.strerror, name) from None
    if self._tb:
      for k, v in vals.items():
        self._tb.add_scalar(f"{self.prefix}/{k}" if self.prefix else k, v, int(step))
      self._tb.flush()
    if console:
      parts = " ".join(f"{k}={_fmt(v)}" for k, v in vals.items())
      print(f"[{self.prefix}] step {step}: {parts}", flush=True)
    return vals

  def text(self, message: str) -> None:
    if self.active:
      print(message, flush=True)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()


def _fmt(v: float) -> str:
  if v == 0 or 1e-3 <= abs(v) < 1e5:
    return f"{v:.4g}"
  return f"{v:.3e}"


class Progress:
  """Rate and ETA for a phase of `total` units, for the console lines of long loops."""

  def __init__(self, total: int, start: int = 0):
    self.total, self.start, self.t0 = total, start, time.perf_counter()

  def eta(self, done: int) -> str:
    elapsed = time.perf_counter() - self.t0
    rate = (done - self.start) / max(elapsed, 1e-9)
    left = (self.total - done) / rate if rate > 0 else float("inf")
    pct = 100.0 * done / max(self.total, 1)
    return f"{done}/{self.total} ({pct:.0f}%) elapsed {_hms(elapsed)} eta {_hms(left)}"


def _hms(s: float) -> str:
  if s == float("inf"):
    return "?"
  s = int(s)
  return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else (
      f"{s // 60}m{s % 60:02d}s")


# Dense bf16 peak FLOP/s per chip, from the vendors' data sheets (no sparsity).
_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12,
              "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6": 918e12}


def peak_flops(override_tflops: float = 0.0) -> float:
  """Peak FLOP/s of all devices together: the override, else the data sheet, else 0 (unknown)."""
  n = jax.device_count()
  if override_tflops:
    return override_tflops * 1e12 * n
  kind = jax.devices()[0].device_kind
  for name, flops in _PEAK_BF16.items():
    if name.lower() in kind.lower():
      return flops * n
  return 0.0
