"""ILQL's hyper-parameters (`config.ilql`), as one frozen dataclass checked on construction."""

from __future__ import annotations

import dataclasses

from rlhf_jax.errors import ConfigError, reject_unknown_fields


@dataclasses.dataclass(frozen=True)
class ILQLConfig:
  tau: float = 0.7  # the expectile V learns of Q (0.5: the mean; toward 1: the best action)
  gamma: float = 1.0  # discount per token; the reward comes only at the last one
  cql_coef: float = 0.1  # weight of the conservative (CQL) term of each Q head
  lm_coef: float = 1.0  # weight of the language-modelling (AWAC-style) term on the data
  polyak: float = 0.005  # target Q heads move this fraction toward the online heads each step
  head_hidden: int = 0  # width of each head's MLP; 0 = twice the model's hidden size
  beta: float = 1.0  # decoding: logits + beta·(Q − V); 0 is the LM head's own policy
  top_k: int = 0  # decoding: sample among the k best shaped logits; 0 disables
  max_response_len: int = 40  # response slots of a training row (longer responses are skipped)
  eval_betas: str = ""  # more β to evaluate at the end, e.g. "2,4" (one compiled sampler)

  def __post_init__(self):
    checks = (("tau", 0 < self.tau < 1, "must be in (0, 1)"),
              ("gamma", 0 <= self.gamma <= 1, "must be in [0, 1]"),
              ("cql_coef", self.cql_coef >= 0, "must be >= 0"),
              ("lm_coef", self.lm_coef >= 0, "must be >= 0"),
              ("polyak", 0 < self.polyak <= 1, "must be in (0, 1]"),
              ("head_hidden", self.head_hidden >= 0, "must be >= 0"),
              ("beta", self.beta >= 0, "must be >= 0"),
              ("top_k", self.top_k >= 0, "must be >= 0"),
              ("max_response_len", self.max_response_len >= 1, "must be >= 1"))
    for name, ok, why in checks:
      if not ok:
        raise ConfigError(f"ilql.{name}={getattr(self, name)!r} {why}")
    self.betas()

  def betas(self) -> list[float]:
    """ilql.beta, then every β of ilql.eval_betas not equal to it."""
    try:
      more = [float(x) for x in str(self.eval_betas).split(",") if x.strip()]
    except ValueError:
      raise ConfigError(f"ilql.eval_betas={self.eval_betas!r}: expected numbers separated by "
                        "commas") from None
    if any(b < 0 for b in more):
      raise ConfigError(f"ilql.eval_betas={self.eval_betas!r}: every beta must be >= 0")
    return [self.beta] + [b for b in dict.fromkeys(more) if b != self.beta]

  @classmethod
  def from_dict(cls, d) -> "ILQLConfig":
    reject_unknown_fields(cls, d, "ilql")
    return cls(**dict(d))
