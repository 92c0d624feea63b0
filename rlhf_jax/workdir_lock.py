"""One writer per workdir: a second run on a workdir another live run is using stops at once.

`hold(workdir)` takes an exclusive `fcntl.flock` on `<workdir>/.lock` and writes the holder's
host, pid, start time and command line into it. The kernel drops a flock when its process dies,
however it dies, so a lock file left by a crashed or killed run is not held: the next run takes
it over (and says whose it was). Where the file system has no flock (some network mounts), the
holder's record decides instead: a lock of a dead process on this host is stale and taken over,
one of another host is respected.
Only process 0 of a multi-process run takes the lock; the others learn its answer, so a refused
run stops on every process.
Not for: locking inside a run (the processes of one run share the workdir by design).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time

import jax

from rlhf_jax.errors import DataError, WorkdirBusy

LOCK_FILE = ".lock"


def _record() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}


def _read(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _alive(holder: dict) -> bool:
  """Whether the recorded holder may still run (True when that cannot be known)."""
  if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
    return bool(holder)
  try:
    os.kill(holder["pid"], 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _busy(workdir: str, holder: dict) -> WorkdirBusy:
  who = (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
         f"{holder.get('started')} ({holder.get('command')})" if holder else "another process")
  return WorkdirBusy(f"workdir {workdir} is in use by {who}: one run per workdir. Wait for it to "
                     f"finish, stop it, or choose another --workdir (lock file "
                     f"{os.path.join(workdir, LOCK_FILE)})")


def _acquire(workdir: str):
  """The open lock file (held until closed); raises WorkdirBusy."""
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise DataError(f"cannot create workdir {workdir}: {e.strerror}") from None
  path = os.path.join(workdir, LOCK_FILE)
  before = _read(path)
  try:
    f = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  except OSError as e:
    raise DataError(f"workdir {workdir} is not writable: {e.strerror}") from None
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.close()
    raise _busy(workdir, _read(path)) from None
  except OSError as e:
    if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
      raise
    if before and before.get("pid") != os.getpid() and _alive(before):
      f.close()
      raise _busy(workdir, before) from None
  if before and before.get("pid") != os.getpid():
    print(f"[lock] {workdir}: took over the lock of pid {before.get('pid')} on host "
          f"{before.get('host')}, which no longer runs", flush=True)
  f.seek(0)
  f.truncate()
  json.dump(_record(), f)
  f.flush()
  return f


@contextlib.contextmanager
def hold(workdir: str):
  """Holds `workdir`'s lock for the block (process 0 takes it; every process learns the
  outcome)."""
  workdir = os.path.abspath(workdir)
  handle, refusal = None, None
  if jax.process_index() == 0:
    try:
      handle = _acquire(workdir)
    except (WorkdirBusy, DataError) as e:
      refusal = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    refused = multihost_utils.broadcast_one_to_all(int(refusal is not None))
    if int(refused) and refusal is None:
      raise WorkdirBusy(f"workdir {workdir}: process 0 could not take its lock (see its "
                        "message)")
  if refusal is not None:
    raise refusal
  try:
    yield
  finally:
    if handle is not None:
      handle.close()  # drops the flock; the record stays for the curious
