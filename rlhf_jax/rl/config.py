"""The settings of an RL fine-tuning run (PPO, A2C, GRPO or RLOO), checked once at start.

Built from the `rl` section of configs/ppo.py / configs/a2c.py by `RLConfig.from_dict`; a
misspelt key or a value out of range stops the run with the key named.
"""

from __future__ import annotations

import dataclasses

from rlhf_jax.errors import ConfigError, reject_unknown_fields
from rlhf_jax.rl.kl import KL_ESTIMATORS

ALGORITHMS = ("ppo", "a2c", "grpo", "rloo")
GROUP_ALGORITHMS = ("grpo", "rloo")  # critic-free: baselines from a group of responses


@dataclasses.dataclass(frozen=True)
class RLConfig:
  # "ppo"; "a2c": one on-policy pass, no ratio clipping; "grpo" / "rloo": no critic, the
  # advantage is a response's reward against its group (group_size responses per prompt).
  algorithm: str = "ppo"
  iterations: int = 100  # sample-score-update rounds
  rollout_batch: int = 64  # responses sampled per iteration: rollout_batch / group_size prompts
  group_size: int = 1  # responses per prompt (G); grpo and rloo need at least 2
  group_scale: str = "group"  # grpo: divide by the group's std, the batch's, or "none"
  # Where β·KL to the reference goes: "reward" (per token, as in PPO; RLOO) or "loss" (a k3
  # term in the policy loss, as in GRPO; the reward is then the RM score alone).
  kl_penalty: str = "reward"
  max_new_tokens: int = 32  # longest sampled response
  temperature: float = 1.0  # the policy's log-probs in the loss use the same temperature
  # Kept at "off" (checked): RL samples the policy it trains. A top-k / nucleus filter samples
  # another distribution, while the log-probs PPO's ratio and the KL read are the unfiltered
  # policy's, so the update would correct for the wrong sampler.
  top_k: int = 0  # must stay 0
  top_p: float = 1.0  # must stay 1
  epochs: int = 4  # passes over the rollout batch per iteration
  minibatches: int = 4  # per epoch
  clip_eps: float = 0.2  # PPO ratio clipping (A2C: none)
  value_clip_eps: float = 0.2  # 0 = unclipped value loss
  vf_coef: float = 0.5  # weight of the value loss when the value head shares the policy trunk
  entropy_coef: float = 0.0  # weight of the entropy bonus in the policy loss
  gamma: float = 1.0  # discount of GAE
  lam: float = 0.95  # λ of GAE
  whiten_advantages: bool = True  # advantages to mean 0, std 1 over the batch's tokens
  kl_estimator: str = "k1"  # in the reward: k1, k2 or k3
  kl_coef: float = 0.1  # β, initial value (fixed when adaptive_kl is False)
  # Ziegler et al.'s controller moves β towards kl_target; it scales β, so it needs kl_coef > 0
  adaptive_kl: bool = True
  kl_target: float = 6.0  # nats per sequence
  kl_horizon: float = 10000.0  # samples
  reward_scale: float = 1.0  # applied to the (normalised) RM score
  reward_clip: float = 0.0  # |score| limit after scaling; 0 = none
  # Responses that hit max_new_tokens without EOS: "penalty" gives them missing_eos_score
  # instead of the RM score; "score" keeps the RM score.
  missing_eos: str = "penalty"
  missing_eos_score: float = -3.0  # the score such a response gets
  ptx_coef: float = 0.0  # InstructGPT's PPO-ptx: γ · LM loss on SFT batches in the policy loss
  ptx_batch: int = 16  # rows of SFT data per minibatch when ptx_coef > 0
  critic: str = "separate"  # "shared": a value head on the policy trunk; "none" (grpo, rloo)
  critic_init: str = "reward"  # separate critic: from the reward model (normalised head) or "sft"

  def __post_init__(self):
    checks = (
        ("algorithm", self.algorithm in ALGORITHMS),
        ("iterations", self.iterations > 0), ("rollout_batch", self.rollout_batch > 0),
        ("max_new_tokens", self.max_new_tokens > 0), ("temperature", self.temperature > 0),
        ("top_k", self.top_k >= 0), ("top_p", 0 < self.top_p <= 1),
        ("epochs", self.epochs > 0), ("minibatches", self.minibatches > 0),
        ("clip_eps", self.clip_eps >= 0), ("value_clip_eps", self.value_clip_eps >= 0),
        ("vf_coef", self.vf_coef >= 0), ("entropy_coef", self.entropy_coef >= 0),
        ("gamma", 0 <= self.gamma <= 1), ("lam", 0 <= self.lam <= 1),
        ("kl_estimator", self.kl_estimator in KL_ESTIMATORS),
        ("kl_coef", self.kl_coef >= 0), ("kl_target", self.kl_target > 0),
        ("kl_horizon", self.kl_horizon > 0), ("reward_clip", self.reward_clip >= 0),
        ("missing_eos", self.missing_eos in ("penalty", "score")),
        ("ptx_coef", self.ptx_coef >= 0), ("ptx_batch", self.ptx_batch > 0),
        ("critic", self.critic in ("separate", "shared", "none")),
        ("group_size", self.group_size >= 1),
        ("group_scale", self.group_scale in ("group", "batch", "none")),
        ("kl_penalty", self.kl_penalty in ("reward", "loss")),
        ("critic_init", self.critic_init in ("reward", "sft")))
    for name, ok in checks:
      if not ok:
        raise ConfigError(f"rl.{name}={getattr(self, name)!r} is out of range")
    for name, off in (("top_k", 0), ("top_p", 1.0)):
      if getattr(self, name) != off:
        raise ConfigError(f"rl.{name}={getattr(self, name)!r}: RL samples the policy it trains, "
                          f"unfiltered; top-k / top-p sampling draws from another distribution "
                          f"than the one PPO's ratio and the KL read. Set rl.{name}={off!r}")
    if self.adaptive_kl and self.kl_coef == 0:
      raise ConfigError("rl.adaptive_kl=True with rl.kl_coef=0: the controller multiplies β, so "
                        "from 0 it never moves; set rl.kl_coef > 0 or rl.adaptive_kl=False")
    group = self.algorithm in GROUP_ALGORITHMS
    if group and self.group_size < 2:
      raise ConfigError(f"rl.algorithm={self.algorithm!r} needs rl.group_size >= 2 (responses "
                        f"per prompt), got {self.group_size}")
    if group != (self.critic == "none"):
      raise ConfigError(f"rl.critic={self.critic!r} with rl.algorithm={self.algorithm!r}: grpo "
                        "and rloo use critic='none'; ppo and a2c need 'separate' or 'shared'")
    if self.rollout_batch % self.group_size:
      raise ConfigError(f"rl.rollout_batch={self.rollout_batch} is not a whole number of groups "
                        f"of rl.group_size={self.group_size}")
    if self.rollout_batch % self.minibatches:
      raise ConfigError(f"rl.rollout_batch={self.rollout_batch} does not split into "
                        f"rl.minibatches={self.minibatches} equal minibatches")

  @classmethod
  def from_dict(cls, d) -> "RLConfig":
    reject_unknown_fields(cls, d, "rl")
    return cls(**dict(d))

  @property
  def prompts_per_iteration(self) -> int:
    return self.rollout_batch // self.group_size

  @property
  def minibatch_size(self) -> int:
    return self.rollout_batch // self.minibatches

  @property
  def policy_clip(self) -> float:
    return 0.0 if self.algorithm == "a2c" else self.clip_eps
