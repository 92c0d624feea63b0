"""The checking function of the built-in checkable task (`rlhf_jax.data.checkable_task`): the
last number word of the response against the record's answer."""

from __future__ import annotations

from typing import Mapping

from rlhf_jax.data.checkable_task import last_number_word


def answer_match(prompt: str, response: str, meta: Mapping) -> float:
  """1.0 when the last number word (or digit string) of the response is meta["answer"]."""
  del prompt
  return 1.0 if last_number_word(response) == int(meta["answer"]) else 0.0
