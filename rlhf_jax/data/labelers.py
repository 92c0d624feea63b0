"""Simulated labelers of the built-in task: pairwise comparisons and K-way rankings.

A labeler's utility for a response is its gold score plus an optional leaning,
length_bias × (response tokens) / 10, and it prefers a over b with Bradley–Terry probability
  P(a ≻ b) = sigmoid((utility(a) − utility(b)) / temperature).
Rankings are Plackett–Luce draws from the same utilities (Gumbel-max), so every pair inside a
ranking follows the same noise model; as temperature → 0 a labeler orders by utility exactly.

The default temperature is calibrated so two independent default labelers agree on ~73% of the
**standard comparison pairs** — two answers to one held-out prompt, each written at an
independent demonstration-like quality q ~ Beta(6, 2), ended with EOS — InstructGPT's measured
inter-labeler agreement. `gold_agreement_ceiling()` is how often such a labeler sides with the
higher gold score on those pairs: the best a reward model trained on its choices can expect.

Not for: building the reward model's dataset (the reward-model stage calls these).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np

from rlhf_jax.data import builtin_task as bt
from rlhf_jax.errors import ConfigError, ShapeError

# Calibrated by `calibrate_temperature()` (20,000 standard pairs, seed 0); a test re-measures it.
DEFAULT_TEMPERATURE = 0.777
INSTRUCTGPT_AGREEMENT = 0.73

Pair = tuple[list[int], list[int], list[int]]  # (prompt_ids, a_ids, b_ids)


def response_length(response_ids: Sequence[int]) -> int:
  """Tokens before the first EOS, pads not counted: the length a labeler sees."""
  ids = np.asarray(response_ids).reshape(-1)
  eos = np.flatnonzero(ids == bt.EOS_ID)
  ids = ids[:eos[0]] if eos.size else ids
  return int(np.sum(ids != bt.PAD_ID))


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


def _derived_rng(seed: int, *parts) -> np.random.Generator:
  # A labeler called without an rng still answers deterministically, from its seed and the ids.
  h = 0
  for part in parts:
    h = zlib.crc32(np.asarray(part, np.float64).tobytes(), h)
  return np.random.default_rng([seed, h])


@dataclasses.dataclass(frozen=True)
class Labeler:
  """A simulated human: gold score plus a leaning, seen through Bradley–Terry noise."""

  temperature: float = DEFAULT_TEMPERATURE
  length_bias: float = 0.0  # > 0 prefers longer answers: utility + length_bias per 10 tokens
  seed: int = 0  # used only when a method is called without an rng
  name: str = "labeler"

  def __post_init__(self):
    if not self.temperature >= 0:
      raise ConfigError(f"Labeler temperature={self.temperature}: must be >= 0")

  def utilities(self, prompts_B, responses_B) -> np.ndarray:
    """float[B]: gold score plus the length leaning, one per (prompt, response)."""
    gold = bt.gold_scores(prompts_B, responses_B).astype(np.float64)
    if self.length_bias:
      gold += self.length_bias * np.array([response_length(r) for r in responses_B]) / 10
    return gold

  def utility(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
    return float(self.utilities([prompt_ids], [response_ids])[0])

  def prefer_probs(self, prompts_B, a_B, b_B) -> np.ndarray:
    """float[B]: P(a preferred over b) for each row."""
    if not len(prompts_B) == len(a_B) == len(b_B):
      raise ShapeError(f"{len(prompts_B)} prompts, {len(a_B)} a's and {len(b_B)} b's")
    d = self.utilities(prompts_B, a_B) - self.utilities(prompts_B, b_B)
    if self.temperature == 0:
      return 0.5 + 0.5 * np.sign(d)
    return _sigmoid(d / self.temperature)

  def prefer_prob(self, prompt_ids, a_ids, b_ids) -> float:
    return float(self.prefer_probs([prompt_ids], [a_ids], [b_ids])[0])

  def compare_batch(self, prompts_B, a_B, b_B,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """int32[B]: 0 where a is preferred, 1 where b is."""
    p = self.prefer_probs(prompts_B, a_B, b_B)
    if rng is None:
      rng = _derived_rng(self.seed, *(x for row in zip(prompts_B, a_B, b_B) for x in row))
    return (rng.random(len(p)) >= p).astype(np.int32)

  def compare(self, prompt_ids, a_ids, b_ids, rng: np.random.Generator | None = None) -> int:
    """0 if a is preferred, 1 if b is."""
    return int(self.compare_batch([prompt_ids], [a_ids], [b_ids], rng)[0])

  def rank(self, prompt_ids, responses: Sequence[Sequence[int]],
           rng: np.random.Generator | None = None) -> list[int]:
    """Indices of the K responses, best first: a Plackett–Luce draw with weights
    exp(utility / temperature); the exact utility order (ties by index) at temperature 0."""
    u = self.utilities([prompt_ids] * len(responses), list(responses))
    if self.temperature == 0:
      return [int(i) for i in np.argsort(-u, kind="stable")]
    if rng is None:
      rng = _derived_rng(self.seed, prompt_ids, *responses)
    # Perturbing by Gumbel noise and sorting samples the whole Plackett–Luce order at once.
    return [int(i) for i in np.argsort(-(u / self.temperature + rng.gumbel(size=len(u))),
                                       kind="stable")]


def default_labelers(n: int = 3, seed: int = 0) -> list[Labeler]:
  """n labelers with different leanings: neutral, likes long answers, likes short ones, ...;
  any two agree on roughly 70-76% of standard pairs."""
  if n < 1:
    raise ConfigError(f"default_labelers n={n}: need at least one")
  biases = (0.0, 0.3, -0.3, 0.15, -0.15)
  return [Labeler(length_bias=biases[i % len(biases)], seed=seed * 1000 + i, name=f"labeler{i}")
          for i in range(n)]


def standard_comparison_pairs(n: int, seed: int = 0) -> list[Pair]:
  """n (prompt_ids, a_ids, b_ids): two answers to one held-out prompt, each written at an
  independent quality ~ Beta(6, 2) and ended with EOS. Agreement is calibrated on these."""
  tok = bt.tokenizer()
  rng = np.random.default_rng([seed, 7])
  out = []
  for p in bt.prompts(n, "eval", seed + 404):
    a, b = (tok.encode(bt.write_response(p, rng.beta(*bt.DEMO_QUALITY_BETA), rng)) + [tok.eos_id]
            for _ in range(2))
    out.append((p.ids, a, b))
  return out


def _columns(pairs: Sequence[Pair]) -> tuple[list, list, list]:
  if not pairs:
    raise ConfigError("no comparison pairs given")
  prompts, a, b = zip(*pairs)
  return list(prompts), list(a), list(b)


def agreement(labeler_a: Labeler, labeler_b: Labeler, pairs: Sequence[Pair],
              seed: int = 0) -> float:
  """Fraction of pairs on which two labelers' sampled, independent choices agree."""
  cols = _columns(pairs)
  rng = np.random.default_rng(seed)
  return float(np.mean(labeler_a.compare_batch(*cols, rng) == labeler_b.compare_batch(*cols, rng)))


def expected_agreement(labeler_a: Labeler, labeler_b: Labeler, pairs: Sequence[Pair]) -> float:
  """The noise-free expectation of `agreement`: mean of pa·pb + (1 − pa)(1 − pb)."""
  cols = _columns(pairs)
  pa, pb = labeler_a.prefer_probs(*cols), labeler_b.prefer_probs(*cols)
  return float(np.mean(pa * pb + (1 - pa) * (1 - pb)))


def gold_agreement(labeler: Labeler, pairs: Sequence[Pair]) -> float:
  """Expected fraction of pairs where the labeler picks the higher-gold answer (ties: half)."""
  prompts, a, b = _columns(pairs)
  d = bt.gold_scores(prompts, a) - bt.gold_scores(prompts, b)
  p = labeler.prefer_probs(prompts, a, b)
  return float(np.mean(np.where(d > 0, p, np.where(d < 0, 1 - p, 0.5))))


def gold_agreement_ceiling(n: int = 20000, seed: int = 0) -> float:
  """How often a default labeler sides with gold on n standard pairs: a reward model trained
  on such labels should approach, not beat, this accuracy against gold."""
  return gold_agreement(Labeler(), standard_comparison_pairs(n, seed))


def calibrate_temperature(target: float = INSTRUCTGPT_AGREEMENT, n: int = 20000,
                          seed: int = 0) -> float:
  """Temperature at which two default labelers' expected agreement on n standard pairs hits
  target (bisection on a log scale: agreement falls monotonically with temperature)."""
  cols = _columns(standard_comparison_pairs(n, seed))
  d = bt.gold_scores(cols[0], cols[1]) - bt.gold_scores(cols[0], cols[2])
  lo, hi = 1e-3, 100.0
  for _ in range(60):
    t = (lo * hi) ** 0.5
    p = _sigmoid(d / t)
    if np.mean(p ** 2 + (1 - p) ** 2) > target:
      lo = t
    else:
      hi = t
  return float(t)
