"""Synthetic comparison rules for reward-model tests: each needs the prompt and the response read
together (the response alone, its length or its surface words say nothing), and each holds its
pairs' lengths equal in words, so the length baselines sit at 0.5.

- "colour": the prompt asks the colour of a fruit among filler words; the preferred response
  gives its true colour, the other a wrong one;
- "echo": the prompt asks to repeat one word among filler words; the preferred response is that
  word, the other another word of the prompt or the vocabulary.
Written for these tests (no outside source); `write_rules(folder, n)` writes one subset folder
per rule as "pairs" JSON lines, so the stage reports each rule as its own group.
"""

import json
import os

import numpy as np

COLOURS = {"apple": "red", "banana": "yellow", "lime": "green", "plum": "purple",
           "coconut": "brown", "blueberry": "blue", "cherry": "red", "lemon": "yellow",
           "kiwi": "green", "grape": "purple", "date": "brown", "raspberry": "pink"}
PALETTE = sorted(set(COLOURS.values()) | {"white", "black", "orange"})
FILLER = ("the a this that my your some big small old new quick slow happy sad today now "
          "here there very really just also then").split()
ECHO_WORDS = ("river stone cloud tiger pencil garden window candle rocket violin meadow "
              "anchor basket castle dragon engine forest harbor island jacket kettle ladder "
              "mirror needle orchard parrot quilt saddle tunnel valley wagon").split()


def _fill(rng, n):
  return " ".join(rng.choice(FILLER, n))


def colour_pair(rng):
  fruit = rng.choice(sorted(COLOURS))
  wrong = rng.choice([c for c in PALETTE if c != COLOURS[fruit]])
  prompt = f"{_fill(rng, rng.integers(0, 4))} what colour is the {fruit} {_fill(rng, 2)}?"
  return {"prompt": prompt, "chosen": f"it is {COLOURS[fruit]}", "rejected": f"it is {wrong}"}


def echo_pair(rng):
  words = list(rng.choice(ECHO_WORDS, 3, replace=False))
  target, other = words[0], words[1]
  if rng.random() < 0.5:  # the other answer is a word the prompt does not contain
    other = rng.choice([w for w in ECHO_WORDS if w not in words])
  prompt = (f"{_fill(rng, rng.integers(0, 3))} {words[1]} {words[2]} please repeat {target} "
            f"{_fill(rng, 2)}")
  return {"prompt": prompt, "chosen": f"{target}", "rejected": f"{other}"}


RULES = {"colour": colour_pair, "echo": echo_pair}


def write_rules(folder: str, n: int, seed: int = 0) -> str:
  """Writes folder/<rule>/train.jsonl with n pairs per rule; returns folder."""
  for i, (name, make) in enumerate(sorted(RULES.items())):
    rng = np.random.default_rng([seed, i])
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    with open(os.path.join(folder, name, "train.jsonl"), "w", encoding="utf-8") as f:
      for _ in range(n):
        f.write(json.dumps(make(rng)) + "\n")
  return folder
