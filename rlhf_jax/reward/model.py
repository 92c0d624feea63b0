"""A trained reward model as a frozen scorer: its params, its normalisation, and the score of a
(prompt + response) row — what PPO reads.

The reward-model stage ends by choosing a gain and a bias so that rewards of samples from the SFT
policy have mean 0 and std 1 (`fit_normalization`); they are saved beside the checkpoint as
`reward_norm.json` and applied by `normalized_rewards`. `load_reward_model(workdir, ...)`
reads model.json, the latest params and the normalisation onto a mesh.
Not for: training (`rlhf_jax.train.rm_stage`), combining several models
(`rlhf_jax.reward.combine`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from rlhf_jax import workdir_model
from rlhf_jax.errors import DataError
from rlhf_jax.models import ModelConfig, forward
from rlhf_jax.reward.losses import row_rewards

NORM_FILE = "reward_norm.json"


def fit_normalization(rewards: np.ndarray) -> dict:
  """{"gain", "bias", "n", "raw_mean", "raw_std"}: gain·r + bias has mean 0 and std 1 on these."""
  r = np.asarray(rewards, np.float64).reshape(-1)
  if r.size < 2:
    raise DataError(f"normalisation needs at least 2 rewards, got {r.size}")
  mean, std = float(r.mean()), float(r.std())
  if not std > 0:
    raise DataError("every normalisation sample got the same reward (std 0): the reward model "
                    "is constant; it cannot be normalised")
  return {"gain": 1.0 / std, "bias": -mean / std, "n": int(r.size), "raw_mean": mean,
          "raw_std": std}


def save_normalization(workdir: str, norm: dict) -> None:
  with open(os.path.join(workdir, NORM_FILE), "w", encoding="utf-8") as f:
    json.dump(norm, f, indent=1)


def read_normalization(workdir: str) -> dict:
  path = os.path.join(workdir, NORM_FILE)
  if not os.path.exists(path):
    raise DataError(f"{workdir!r} has no {NORM_FILE}: the reward-model stage writes it when it "
                    "finishes training; run it to the end first")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


@dataclasses.dataclass(frozen=True)
class RewardModel:
  name: str
  workdir: str
  model_cfg: ModelConfig
  params: Any  # a "score"-head pytree on the mesh
  gain: float
  bias: float
  tokenizer: str  # the spec the model was trained with


def raw_rewards(params, model_cfg: ModelConfig, tokens_BxT, mask_BxT):
  """float32[B]: the scalar head pooled over each row (model_cfg.score_pooling; default: the
  last real token)."""
  scores = forward(model_cfg, params, tokens_BxT, mask_BxT, outputs=("scores",),
                   heads="score")["scores"]
  return row_rewards(scores, mask_BxT, model_cfg)


def normalized_rewards(rm: RewardModel, params, tokens_BxT, mask_BxT):
  """float32[B]: gain · raw + bias, the reward PPO sees; jit-able (params passed explicitly)."""
  return rm.gain * raw_rewards(params, rm.model_cfg, tokens_BxT, mask_BxT) + rm.bias


def normalized_head(params, gain: float, bias: float):
  """A score model's params whose head gives gain·score + bias at every position: the reward
  model's normalisation folded into score_kernel and score_bias (a linear head, so exact up to
  rounding). A critic that starts from the reward model starts from these: its first values are
  then on the scale of the rewards it predicts (with "last" pooling, the normalised reward of
  the prefix ending at each position), not the raw head's."""
  out = dict(params)
  k, b = params["score_kernel"], params["score_bias"]
  out["score_kernel"] = (k * gain).astype(k.dtype)
  out["score_bias"] = (b * gain + bias).astype(b.dtype)
  return out


def load_reward_model(workdir: str, config, name: str | None = None) -> RewardModel:
  """The latest params of a reward-model workdir on `config.mesh`, with its normalisation."""
  info = workdir_model.read_model_json(workdir)
  if "score" not in info.get("heads", "lm").split("+"):
    raise DataError(f"{workdir!r} holds a {info.get('stage', '?')} model with heads "
                    f"{info.get('heads', 'lm')!r}, not a reward model")
  norm = read_normalization(workdir)
  model_cfg, params = workdir_model.load_workdir_params(workdir, config, heads="score")
  return RewardModel(name or os.path.basename(os.path.normpath(workdir)), workdir, model_cfg,
                     params, float(norm["gain"]), float(norm["bias"]),
                     info.get("tokenizer", ""))



def check_tokenizers(models, policy_tokenizer: str) -> None:
  """ConfigError unless every reward model was trained with the policy's tokenizer spec (the
  policy's token ids are fed to the reward models as they are)."""
  from rlhf_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top

  def norm(s):
    return os.path.abspath(s) if s and os.path.isdir(s) else s

  for rm in models:
    if rm.tokenizer and policy_tokenizer and norm(rm.tokenizer) != norm(policy_tokenizer):
      raise ConfigError(f"reward model {rm.name!r} ({rm.workdir}) was trained with tokenizer "
                        f"{rm.tokenizer!r} but the policy uses {policy_tokenizer!r}; the "
                        "policy's tokens are fed to the reward model, so they must match")


def load_reward_models(section, config):
  """([RewardModel], combine.CombineRule): every reward model a `reward` config section names,
  and the rule that combines them."""
  from rlhf_jax.reward import combine  # pylint: disable=g-import-not-at-top
  specs, rule = combine.parse_rewards(section)
  return [load_reward_model(workdir, config, name) for name, workdir in specs], rule


def combined_rewards(models, rule, params_list, tokens_BxT, mask_BxT, unsafe_prompt_B=None):
  """(float32[B] combined reward, {name: [B] normalised reward}) for one batch of rows; params
  are passed explicitly (one pytree per model) so the whole thing jits."""
  from rlhf_jax.reward import combine  # pylint: disable=g-import-not-at-top
  each = {rm.name: normalized_rewards(rm, p, tokens_BxT, mask_BxT)
          for rm, p in zip(models, params_list)}
  return combine.combine_rewards(each, rule, unsafe_prompt_B), each
