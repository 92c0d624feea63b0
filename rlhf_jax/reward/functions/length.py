"""A length penalty: 0 up to `max_words` words, then falling linearly to −1 at twice that.

Rule rewards alone let answers grow (a longer chain of reasoning is never punished); a small
weight on this keeps them in bounds. Counted in whitespace-separated words of the decoded
response, so it means the same under any tokenizer.
"""

from __future__ import annotations

from typing import Mapping

from rlhf_jax.errors import ConfigError


def length_penalty(prompt: str, response: str, meta: Mapping, max_words: int = 200) -> float:
  """−min(1, max(0, words − max_words) / max_words): 0 within the limit, −1 at twice it."""
  del prompt, meta
  if max_words <= 0:
    raise ConfigError(f"length_penalty: max_words={max_words} must be positive")
  over = len(response.split()) - max_words
  return -min(1.0, max(0, over) / max_words)
