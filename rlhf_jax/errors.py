"""User-facing errors: one clear message naming the bad thing, no XLA trace.

Every check on user input (config keys, files, records, mesh shapes, sequence lengths) raises one
of these. `rlhf_jax.main` catches `UserError` and prints only its message, so a user sees what to
fix instead of a stack of frames.
"""

import dataclasses


class UserError(Exception):
  """Base class: something the user gave us is wrong; the message says what and where."""


class ConfigError(UserError):
  """A config key is unknown, missing, or has a value out of range."""


class DataError(UserError):
  """A file is missing or unreadable, or a record lacks a field or is malformed."""


class ShapeError(UserError):
  """A sequence is longer than the model allows, or a mesh does not fit the devices."""


def reject_unknown_fields(cls, fields, section: str) -> None:
  """ConfigError naming every key of `fields` that dataclass `cls` does not have."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(fields) - names)
  if unknown:
    raise ConfigError(f"{section}: unknown field(s) {unknown}; known: {sorted(names)}")
