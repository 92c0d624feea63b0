"""Checkable prompts in the built-in task's world: a function, not a reward model, tells a right
answer from a wrong one.

Two kinds of question, in the built-in vocabulary (`builtin_task.NUMBER_WORDS` and friends):
- sums written in words: "Human: what is three plus four ? Assistant:" (each term 0-9);
- counting named animals: "Human: how many animals are named in cat rose dog bread ?
  Assistant:" (2-5 nouns of any topic, the animals among them counted).
The answer is written "the answer is seven ." and checked by
`rlhf_jax.reward.functions.checkable.answer_match` against the record's "answer".

The SFT demonstrations are right only `DEMO_ACCURACY` of the time (otherwise a nearby wrong
number), so an SFT policy answers right often but not always: the headroom RL with the checking
function alone is meant to close. Train and held-out prompts are split by a hash of their text,
as the built-in task's are. The data source name is `SOURCE` ("builtin:checkable").
Not for: the chat prompts of the built-in task (`builtin_task.py`), or scoring (`reward/`).
"""

from __future__ import annotations

import zlib

import numpy as np

from rlhf_jax.data.builtin_task import NUMBER_WORDS, TOPICS
from rlhf_jax.errors import ConfigError

SOURCE = "builtin:checkable"
DEMO_ACCURACY = 0.6  # share of demonstrations whose answer is right
ANSWER_TEMPLATE = "the answer is {} ."
_ANIMALS = TOPICS["animals"]
_NOUNS = tuple(n for ns in TOPICS.values() for n in ns)
_WORD_VALUE = {w: i for i, w in enumerate(NUMBER_WORDS)}


def number_word(n: int) -> str:
  """The word of 0 <= n <= 18."""
  if not 0 <= n < len(NUMBER_WORDS):
    raise ConfigError(f"checkable task: {n} has no number word (0-{len(NUMBER_WORDS) - 1})")
  return NUMBER_WORDS[n]


def last_number_word(text: str) -> int | None:
  """The value of the last number word (or digit string) in `text`, or None."""
  for w in reversed(text.split()):
    if w in _WORD_VALUE:
      return _WORD_VALUE[w]
    if w.isdigit():
      return int(w)
  return None


def _sum_question(rng: np.random.Generator) -> tuple[str, int]:
  a, b = (int(x) for x in rng.integers(0, 10, size=2))
  return f"Human: what is {number_word(a)} plus {number_word(b)} ? Assistant:", a + b


def _count_question(rng: np.random.Generator) -> tuple[str, int]:
  k = int(rng.integers(2, 6))
  # Half the nouns animals on average, so every count from 0 to k shows up.
  words = [str(rng.choice(_ANIMALS if rng.random() < 0.5 else _NOUNS)) for _ in range(k)]
  answer = sum(w in _ANIMALS for w in words)
  return f"Human: how many animals are named in {' '.join(words)} ? Assistant:", answer


def _split_of(text: str) -> str:
  return "eval" if zlib.crc32(text.encode()) % 8 == 0 else "train"


def questions(n: int, split: str, seed: int = 0) -> list[dict]:
  """n records {"prompt", "answer" (int), "reference" (its word)} of one split (with repeats);
  no prompt text is in both splits."""
  if split not in ("train", "eval") or n < 0:
    raise ConfigError(f"checkable task: split={split!r} (train or eval), n={n} (>= 0)")
  rng = np.random.default_rng([seed, 404, 0 if split == "train" else 1])
  out = []
  while len(out) < n:
    text, answer = (_sum_question if rng.random() < 0.5 else _count_question)(rng)
    if _split_of(text) == split:
      out.append({"prompt": text, "answer": answer, "reference": number_word(answer)})
  return out


def demonstrations(n: int, split: str, seed: int = 0) -> list[dict]:
  """SFT records {"prompt", "response", "answer"}: right `DEMO_ACCURACY` of the time, else off
  by one or two (within 0-18)."""
  rng = np.random.default_rng([seed, 405, 0 if split == "train" else 1])
  out = []
  for q in questions(n, split, seed + 1):
    said = q["answer"]
    if rng.random() >= DEMO_ACCURACY:
      near = [said + d for d in (-2, -1, 1, 2) if 0 <= said + d < len(NUMBER_WORDS)]
      said = int(rng.choice(near))
    out.append({**q, "response": ANSWER_TEMPLATE.format(number_word(said))})
  return out
