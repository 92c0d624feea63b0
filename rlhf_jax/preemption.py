"""Stopping cleanly when the machine is taken away: SIGTERM (what TPU VMs, GCE spot VMs,
Kubernetes and SLURM send before they kill a job) and SIGINT (Ctrl-C).

Inside `watch(stage)` a training loop asks `requested(step)` after each step. A signal does not
interrupt the step in flight: the loop finishes it, writes a checkpoint, waits until the
checkpoint is on disk, and raises `errors.Preempted`, which `main` turns into exit status 75; the
same command then resumes from that step bitwise. A second SIGINT stops at once.

With several processes every one must stop at the same step, or their checkpoints would not
fit together. JAX's preemption service (started by `jax.distributed.initialize`) catches
SIGTERM on any process, agrees with the others on a step every process has yet to reach, and
`multihost_utils.reached_preemption_sync_point(step)` answers True at that step on all of
them. There SIGTERM is left to JAX's own handler, and SIGINT is passed on to it as SIGTERM.
Not for: the checkpoint itself (`checkpoint.py`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Watch:
  """What a loop asks after each step."""

  def __init__(self, stage: str, multi_process: bool):
    self.stage = stage
    self.multi_process = multi_process
    self.signal_name: str | None = None

  def requested(self, step: int) -> bool:
    """True when the loop should checkpoint `step` and stop (the same step on every process)."""
    if self.multi_process:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or "SIGTERM"
        return True
      return False
    return self.signal_name is not None


@contextlib.contextmanager
def watch(stage: str):
  """Installs the handlers for the duration of a loop (outside, signals act as usual)."""
  w = Watch(stage, jax.process_count() > 1)
  if threading.current_thread() is not threading.main_thread():
    yield w  # Python delivers signals to the main thread only; nothing to install here
    return

  def on_signal(signum, frame):  # pylint: disable=unused-argument
    name = signal.Signals(signum).name
    if w.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    w.signal_name = name
    print(f"[{stage}] {name} received: finishing the current step, then a checkpoint and exit",
          flush=True)
    if w.multi_process:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier

  mine = (signal.SIGINT,) if w.multi_process else SIGNALS
  previous = {s: signal.signal(s, on_signal) for s in mine}
  try:
    yield w
  finally:
    for s, h in previous.items():
      signal.signal(s, h)
