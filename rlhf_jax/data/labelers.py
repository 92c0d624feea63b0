"""Simulated labelers of the built-in task: pairwise comparisons and K-way rankings.

A labeler prefers response a over b with Bradley–Terry probability
sigmoid((gold(a) − gold(b) + length_bias·(len(a) − len(b))/10) / temperature). The default
temperature is calibrated so two independent default labelers agree on about 73% of the task's
standard comparison pairs (two demonstration-quality answers to one prompt), InstructGPT's measured
inter-labeler agreement. Rankings are Plackett–Luce draws from the same scores. Not for: the
reward-model stage's data handling (it calls these).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from rlhf_jax.data import builtin_task as bt

# Calibrated by `calibrate_temperature()` on 20,000 standard pairs (seed 0); a test checks it.
DEFAULT_TEMPERATURE = 0.708


def _length(ids) -> int:
  ids = np.asarray(ids).reshape(-1)
  eos = np.flatnonzero(ids == bt.EOS_ID)
  ids = ids[:eos[0]] if eos.size else ids
  return int(np.sum(ids != bt.PAD_ID))


@dataclasses.dataclass(frozen=True)
class Labeler:
  temperature: float = DEFAULT_TEMPERATURE
  length_bias: float = 0.0  # > 0 prefers longer answers, per 10 tokens of difference
  name: str = "labeler"

  def utility(self, prompt_ids, response_ids) -> float:
    return bt.gold_score(prompt_ids, response_ids) + self.length_bias * _length(response_ids) / 10

  def prefer_prob(self, prompt_ids, a_ids, b_ids) -> float:
    """P(a preferred over b)."""
    d = self.utility(prompt_ids, a_ids) - self.utility(prompt_ids, b_ids)
    if self.temperature <= 0:
      return 1.0 if d > 0 else (0.0 if d < 0 else 0.5)
    return float(1.0 / (1.0 + np.exp(-d / self.temperature)))

  def compare(self, prompt_ids, a_ids, b_ids, rng: np.random.Generator) -> int:
    """0 if a is preferred, 1 if b is."""
    return int(rng.random() >= self.prefer_prob(prompt_ids, a_ids, b_ids))

  def compare_batch(self, prompts, a_list, b_list, rng: np.random.Generator) -> np.ndarray:
    return np.array([self.compare(p, a, b, rng) for p, a, b in zip(prompts, a_list, b_list)],
                    np.int32)

  def rank(self, prompt_ids, responses, rng: np.random.Generator) -> list[int]:
    """Indices of `responses`, best first: a Plackett–Luce draw (exact order as T -> 0)."""
    u = np.array([self.utility(prompt_ids, r) for r in responses]) / max(self.temperature, 1e-9)
    g = rng.gumbel(size=len(u)) if self.temperature > 1e-6 else np.zeros(len(u))
    return [int(i) for i in np.argsort(-(u + g), kind="stable")]


def standard_comparison_pairs(n: int, seed: int = 0):
  """n (prompt_ids, a_ids, b_ids): two demonstration-quality answers (each ending in EOS) to one
  held-out prompt — the distribution the labelers' agreement is calibrated on."""
  tok = bt.tokenizer()
  rng = np.random.default_rng([seed, 7])
  out = []
  for p in bt.prompts(n, "eval", seed + 404):
    a, b = (tok.encode(bt.write_response(p, rng.beta(6, 2), rng)) + [tok.eos_id]
            for _ in range(2))
    out.append((tok.encode(p.text), a, b))
  return out


def agreement(a: Labeler, b: Labeler, pairs, seed: int = 0) -> float:
  """Fraction of pairs on which two labelers' sampled choices agree."""
  rng = np.random.default_rng(seed)
  same = [a.compare(p, x, y, rng) == b.compare(p, x, y, rng) for p, x, y in pairs]
  return float(np.mean(same))


def gold_agreement(labeler: Labeler, pairs, seed: int = 0) -> float:
  """Fraction of pairs where the labeler picks the answer with the higher gold score: the ceiling
  a reward model trained on this labeler's choices can hope to match (ties count half)."""
  rng = np.random.default_rng(seed)
  hits = []
  for p, x, y in pairs:
    gx, gy = bt.gold_score(p, x), bt.gold_score(p, y)
    if gx == gy:
      hits.append(0.5)
    else:
      hits.append(float(labeler.compare(p, x, y, rng) == (0 if gx > gy else 1)))
  return float(np.mean(hits))


def calibrate_temperature(target: float = 0.73, n: int = 20000, seed: int = 0) -> float:
  """Temperature at which two labelers' EXPECTED agreement, mean(p² + (1−p)²), hits target."""
  pairs = standard_comparison_pairs(n, seed)
  d = np.array([bt.gold_score(p, x) - bt.gold_score(p, y) for p, x, y in pairs])
  lo, hi = 1e-3, 100.0
  for _ in range(60):
    t = (lo * hi) ** 0.5
    prob = 1 / (1 + np.exp(-d / t))
    if np.mean(prob ** 2 + (1 - prob) ** 2) > target:
      lo = t
    else:
      hi = t
  return float(t)


def default_labelers(n: int = 3) -> list[Labeler]:
  """Several labelers with different leanings: neutral, likes long answers, likes short ones."""
  biases = (0.0, 0.3, -0.3, 0.15, -0.15)
  return [Labeler(length_bias=biases[i % len(biases)], name=f"labeler{i}") for i in range(n)]
