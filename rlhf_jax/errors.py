"""User-facing errors: one clear message naming the bad thing, no XLA trace.

Every check on user input (config keys, files, records, mesh shapes, sequence lengths) raises one
of these. `rlhf_jax.main` catches `UserError` and prints only its message, so a user sees what to
fix instead of a stack of frames.
"""

import dataclasses

# Exit statuses of `python -m rlhf_jax.main`, so a scheduler or a wrapper script can tell them
# apart: 0 done, 1 a crash (a bug: please report it), and these.
EXIT_USER_ERROR = 2  # bad input: the message says what to fix
EXIT_NONFINITE = 3  # the loss or a gradient went NaN/Inf; the last good checkpoint is kept
EXIT_PREEMPTED = 75  # SIGTERM/SIGINT: a checkpoint was written; rerun the command to resume


class UserError(Exception):
  """Base class: something the user gave us is wrong; the message says what and where."""


class ConfigError(UserError):
  """A config key is unknown, missing, or has a value out of range."""


class DataError(UserError):
  """A file is missing or unreadable, or a record lacks a field or is malformed."""


class ShapeError(UserError):
  """A sequence is longer than the model allows, or a mesh does not fit the devices."""


class WorkdirBusy(UserError):
  """Another live run holds the workdir's lock."""


class NonFiniteError(UserError):
  """A training step produced a NaN/Inf loss or gradient; the run stopped before saving it."""

  exit_status = EXIT_NONFINITE


class Preempted(Exception):
  """SIGTERM or SIGINT stopped the run after a checkpoint; not an error in the user's input.

  `step` is the checkpointed step and `directory` where it is; a rerun of the same command
  resumes there."""

  exit_status = EXIT_PREEMPTED

  def __init__(self, stage: str, step: int, directory: str, signal_name: str):
    super().__init__(f"[{stage}] {signal_name}: stopped at step {step} with a checkpoint in "
                     f"{directory}; run the same command again to resume")
    self.stage, self.step, self.directory = stage, step, directory


def reject_unknown_fields(cls, fields, section: str) -> None:
  """ConfigError naming every key of `fields` that dataclass `cls` does not have."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(fields) - names)
  if unknown:
    raise ConfigError(f"{section}: unknown field(s) {unknown}; known: {sorted(names)}")
