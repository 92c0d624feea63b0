"""GSM8K's rule rewards: is the final number right, and is it marked where the prompt asked.

A GSM8K reference answer is worked reasoning ending in a line "#### 72"; the number after the
last "####" is the answer. `answer_match` compares it with the last number of the response
(`numbers.last_number`: commas, "$", units, a trailing "." and 18.0 vs 18 normalised).
`format_reward` checks the response marks its answer as the prompt asks: `\\boxed{N}` when the
prompt mentions "\\boxed", else a "#### N" line. Both return 1.0 or 0.0.
Not for: loading the dataset (`rlhf_jax.data.prompt_records`).
"""

from __future__ import annotations

import re
from typing import Mapping

from rlhf_jax.errors import DataError
from rlhf_jax.reward.functions import numbers

_BOXED = re.compile(r"\\boxed\{\s*([^{}]*?)\s*\}")
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
# A marked answer is a number and nothing else: a sign, "$", thousands commas, a final ".".
_JUST_A_NUMBER = re.compile(r"-?\s*\$?\s*-?\d[\d,]*(?:\.\d+)?\s*\.?")


def reference_answer(reference: str):
  """The number after the last "####" of a GSM8K answer (Decimal); DataError without one."""
  if "####" not in (reference or ""):
    raise DataError(f"the reference answer has no '####' line: {reference[-80:]!r}")
  value = numbers.first_number(reference.rsplit("####", 1)[1])
  if value is None:
    raise DataError(f"no number after '####' in the reference answer: {reference[-80:]!r}")
  return value


def answer_match(prompt: str, response: str, meta: Mapping) -> float:
  """1.0 when the last number of the response equals the reference's "####" number."""
  del prompt
  ref = reference_answer(str(meta["reference"]))
  return 1.0 if numbers.same_number(numbers.last_number(response), ref) else 0.0


def marked_answer(prompt: str, response: str):
  """The number the response marks as its answer in the prompt's style (the last such mark,
  holding a number and nothing else), or None."""
  if "\\boxed" in prompt:
    found = _BOXED.findall(response)
  else:
    found = _HASHES.findall(response)
  if not found or not _JUST_A_NUMBER.fullmatch(found[-1]):
    return None
  return numbers.first_number(found[-1])


def format_reward(prompt: str, response: str, meta: Mapping) -> float:
  """1.0 when the response marks a number as its answer the way the prompt asks
  (`\\boxed{N}` if the prompt mentions \\boxed, else a "#### N" line); right or wrong."""
  del meta
  return 1.0 if marked_answer(prompt, response) is not None else 0.0
