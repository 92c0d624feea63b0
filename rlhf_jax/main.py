"""Entry point: `python -m rlhf_jax.main --config=configs/<stage>.py[:preset] [--config.a.b=v]`.

Reads the ml_collections config, starts JAX's distributed runtime when this is one of several
processes, and runs the stage the config names. All logic lives in importable modules, so a
notebook can call `rlhf_jax.stages.run(config, workdir)` directly.

What goes wrong ends in one line on stderr, no traceback, and an exit status that says what
happened (`rlhf_jax.errors`): 2 bad input (a config key, a file, a record), 3 a NaN/Inf in
training (the last good checkpoint kept), 75 stopped by SIGTERM/SIGINT after a checkpoint (run the
same command to resume), and 2 for a disk that is full or not writable, naming the path.
"""

from __future__ import annotations

import errno
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from rlhf_jax.errors import EXIT_USER_ERROR, Preempted, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config file[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints and logs go "
                               "(default: the config's `workdir`).")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0, for "
                                   "multi-process runs (auto-detected on TPU VMs, SLURM and "
                                   "Open MPI; env RLHF_JAX_COORDINATOR).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run "
                                      "(env RLHF_JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index "
                                   "(env RLHF_JAX_PROCESS_ID).")
_ALLOW_CHANGE = flags.DEFINE_bool("allow_config_change", False, "Resume a workdir whose "
                                  "checkpoints were written with a different config (the "
                                  "differing keys are printed).")


def _init_distributed():
  from rlhf_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize(distributed.plan(_COORDINATOR.value, _NUM_PROCESSES.value,
                                          _PROCESS_ID.value))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    raise app.UsageError("--config=configs/<stage>.py is required")
  # Orbax and JAX log every checkpoint step at INFO; the stages print what a user needs.
  logging.set_verbosity(logging.WARNING)
  from rlhf_jax import stages  # pylint: disable=g-import-not-at-top
  try:
    config = _CONFIG.value
    config.stage  # pylint: disable=pointless-statement  (ml_collections raises on first use)
  except OSError as e:  # the file is missing or unreadable (ml_collections defers the error)
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    print(f"error: --config: {lines[-1] if lines else e}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
  workdir = _WORKDIR.value or config.workdir
  try:
    _init_distributed()
    stages.run(config, workdir, allow_config_change=_ALLOW_CHANGE.value)
  except Preempted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(e.exit_status)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(getattr(e, "exit_status", EXIT_USER_ERROR))
  except OSError as e:
    if e.errno not in _STORAGE_ERRNOS:
      raise
    print(f"error: {_storage_message(e)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


# Errors of the storage a run writes to, which the user fixes (not bugs).
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                   errno.ENOTDIR)


def _storage_message(e: OSError) -> str:
  """One line naming what happened to which path."""
  where = e.filename or "a file of the run"
  if e.filename2:
    where = f"{where} -> {e.filename2}"
  what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "read-only file system"}.get(e.errno, e.strerror or str(e))
  return f"cannot write {where}: {what}"


def _parse_flags(argv):
  """absl's parsing, with config errors (a misspelt key, a bad value) as one line, no trace."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, ValueError, TypeError, flags.Error) as e:
    text = str(e).replace("\\n", "\n").replace("\\'", "'")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # A config file that raised comes wrapped with its traceback: keep the exception's line.
    msg = lines[-1] if "Traceback" in text else " ".join(lines)
    if len(msg) > 1 and msg[0] == msg[-1] and msg[0] in "'\"":
      msg = msg[1:-1]
    print(f"error: bad flag or config override: {msg}", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
