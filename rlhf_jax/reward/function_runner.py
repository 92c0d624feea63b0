"""Running reward functions on sampled answers: on the host, batched, in a thread pool, each call
with a timeout, one process's rows at a time.

A reward function is `fn(prompt: str, response: str, meta: Mapping) -> float` on decoded text
and the prompt record's metadata (the reference answer, ...); `rlhf_jax.reward.functions` has
the built-ins. The RL stage calls `FunctionScorer.score` between the compiled sampling and
scoring programs: every (function, row) call is submitted to a pool of `workers` threads, and
a call that raises, returns something other than a finite number, or runs past `timeout_s`
stops the run with one `RewardFunctionError` naming the function and the record. The pool's
threads are daemons, so a call that hangs for good does not keep the process from exiting with
that error (a `concurrent.futures.ThreadPoolExecutor` joins its threads at exit).

Under several processes each scores only its own rows (`process_rows`: the same contiguous
slice `parallel.put_batch` places from that process), so every row is scored exactly once.
`function_stats` gives each function's mean and firing rate (share of rows scored nonzero).
Not for: combining the scores with reward models (`combine.py`, inside the compiled program).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import queue
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from rlhf_jax.errors import ConfigError, UserError


class RewardFunctionError(UserError):
  """A reward function raised, returned a non-number, or hung, on one record."""


@dataclasses.dataclass(frozen=True)
class RewardFunction:
  name: str  # its name in reward.weights, the logs and the combine rule
  spec: str  # as the config wrote it: a built-in name or "module:function"
  fn: Callable
  kwargs: tuple[tuple[str, Any], ...] = ()  # from reward.function_kwargs

  def __call__(self, prompt: str, response: str, meta: Mapping) -> float:
    return self.fn(prompt, response, meta, **dict(self.kwargs))


def function_specs(spec: str) -> list[tuple[str, str]]:
  """[(name, spec)] of a `reward.functions` string: comma-separated "spec" or "name=spec"; a bare
  spec is named by itself (a built-in) or by its function ("module:fn" -> "fn")."""
  from rlhf_jax.reward.combine import _pairs  # pylint: disable=g-import-not-at-top
  out = []
  for name, value in _pairs(spec or "", "reward.functions"):
    out.append((name or value.rsplit(":", 1)[-1].strip(), value.strip()))
  return out


def _kwargs(section) -> dict:
  text = section.get("function_kwargs", "") or ""
  if not text.strip():
    return {}
  try:
    kw = json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"reward.function_kwargs is not JSON ({e.msg}): {text!r}") from None
  if not isinstance(kw, dict) or not all(isinstance(v, dict) for v in kw.values()):
    raise ConfigError("reward.function_kwargs must be a JSON object {name: {arg: value}}, got "
                      f"{text!r}")
  return kw


def load_functions(section) -> list[RewardFunction]:
  """The reward functions a `reward` config section names, resolved and checked."""
  from rlhf_jax.reward.functions import resolve  # pylint: disable=g-import-not-at-top
  specs = function_specs(section.get("functions", ""))
  kwargs = _kwargs(section)
  unknown = sorted(set(kwargs) - {n for n, _ in specs})
  if unknown:
    raise ConfigError(f"reward.function_kwargs names {unknown}, not among reward.functions "
                      f"{[n for n, _ in specs]}")
  return [RewardFunction(name, spec, resolve(spec), tuple(sorted(kwargs.get(name, {}).items())))
          for name, spec in specs]


def process_rows(rows: int, process_index: int, process_count: int) -> slice:
  """The rows of a [rows] batch that process `process_index` of `process_count` owns: the
  contiguous slice it places on the mesh (`parallel.put_batch`, `sampling.put_prompts`)."""
  if rows % process_count:
    raise ConfigError(f"a batch of {rows} rows does not split over {process_count} processes")
  per = rows // process_count
  return slice(process_index * per, (process_index + 1) * per)


def function_stats(scores: Mapping[str, np.ndarray], prefix: str = "") -> dict[str, float]:
  """{prefix + "fn_<name>": mean, prefix + "fn_<name>_rate": share of rows scored nonzero}."""
  out = {}
  for name, s in scores.items():
    s = np.asarray(s, np.float64)
    out[f"{prefix}fn_{name}"] = float(s.mean()) if s.size else 0.0
    out[f"{prefix}fn_{name}_rate"] = float(np.mean(s != 0)) if s.size else 0.0
  return out


class _DaemonPool:
  """A fixed set of daemon threads running submitted calls into `concurrent.futures.Future`s."""

  def __init__(self, workers: int):
    self._jobs: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(workers):
      threading.Thread(target=self._work, daemon=True, name="reward-fn").start()
    self._workers = workers

  def _work(self):
    while True:
      job = self._jobs.get()
      if job is None:
        return
      fut, fn, args = job
      if not fut.set_running_or_notify_cancel():
        continue
      try:
        fut.set_result(fn(*args))
      except BaseException as e:  # pylint: disable=broad-except  # handed to the waiter
        fut.set_exception(e)

  def submit(self, fn, *args) -> cf.Future:
    fut: cf.Future = cf.Future()
    self._jobs.put((fut, fn, args))
    return fut

  def close(self, futures):
    for f in futures:
      f.cancel()  # the ones not started yet
    for _ in range(self._workers):
      self._jobs.put(None)


def _describe(row: int, prompt: str, where: Sequence[str] | None) -> str:
  short = prompt if len(prompt) <= 120 else prompt[:60] + " ... " + prompt[-55:]
  at = f"{where[row]}, " if where is not None else f"row {row}, "
  return f"{at}prompt {short!r}"


class FunctionScorer:
  """Scores rows with every function; see the module doc."""

  def __init__(self, functions: Sequence[RewardFunction], timeout_s: float = 10.0,
               workers: int = 8):
    if timeout_s <= 0 or workers < 1:
      raise ConfigError(f"reward.function_timeout={timeout_s} must be > 0 and "
                        f"reward.function_workers={workers} >= 1")
    self.functions, self.timeout_s, self.workers = list(functions), float(timeout_s), workers

  @property
  def names(self) -> list[str]:
    return [f.name for f in self.functions]

  def score(self, prompts: Sequence[str], responses: Sequence[str], metas: Sequence[Mapping],
            where: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{name: float32[rows]}: every function on every row; RewardFunctionError on the first
    call (in row order) that raises, returns a non-finite or non-number value, or hangs."""
    rows = len(responses)
    if not (len(prompts) == len(metas) == rows):
      raise ValueError(f"{len(prompts)} prompts, {rows} responses, {len(metas)} metadata")
    jobs = [(f, i) for f in self.functions for i in range(rows)]
    if not jobs:
      return {f.name: np.zeros((0,), np.float32) for f in self.functions}
    starts: list[float | None] = [None] * len(jobs)

    def call(j):
      starts[j] = time.monotonic()
      f, i = jobs[j]
      return f(prompts[i], responses[i], metas[i])

    pool = _DaemonPool(min(self.workers, len(jobs)))
    futures = [pool.submit(call, j) for j in range(len(jobs))]
    try:
      values = [self._result(futures[j], starts, j, jobs[j], prompts, where)
                for j in range(len(jobs))]
    finally:
      pool.close(futures)
    out = {f.name: np.zeros((rows,), np.float32) for f in self.functions}
    for (f, i), v in zip(jobs, values):
      out[f.name][i] = v
    return out

  def _result(self, fut, starts, j, job, prompts, where) -> float:
    """The call's float; waits at most timeout_s from when the call started."""
    f, i = job
    what = f"reward function {f.name!r} ({f.spec})"
    while not fut.done():
      started = starts[j]
      if started is None:  # queued behind running calls: it starts as soon as one ends
        cf.wait([fut], timeout=0.05)
        continue
      left = started + self.timeout_s - time.monotonic()
      if left <= 0:
        raise RewardFunctionError(f"{what} ran past reward.function_timeout="
                                  f"{self.timeout_s:g}s on {_describe(i, prompts[i], where)}")
      cf.wait([fut], timeout=left)
    err = fut.exception()
    if err is not None:
      raise RewardFunctionError(f"{what} raised {type(err).__name__}: {err} on "
                                f"{_describe(i, prompts[i], where)}") from None
    value = fut.result()
    if not isinstance(value, (int, float, np.number)):
      raise RewardFunctionError(f"{what} returned {value!r} (a {type(value).__name__}, not a "
                                f"number) on {_describe(i, prompts[i], where)}")
    if not math.isfinite(float(value)):
      raise RewardFunctionError(f"{what} returned {value!r}, not a finite number, on "
                                f"{_describe(i, prompts[i], where)}")
    return float(value)
