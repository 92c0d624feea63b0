"""The :smollm2 presets: every stage has one, all read the converted SmolLM2 with its own
tokenizer and LoRA, lengths fit real chat answers, and a missing model or data folder stops
with one message naming it (a user's clone has neither)."""

import os

import pytest

from rlhf_jax import config_base, stages
from rlhf_jax.data import lm_data
from rlhf_jax.errors import DataError
from rlhf_jax.models import fetch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("sft", "reward", "dpo", "ppo", "grpo", "best_of_n", "sample")


def _cfg(stage):
  return config_base.from_file(os.path.join(REPO, "configs", f"{stage}.py:smollm2"))


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_a_smollm2_preset(stage):
  c = _cfg(stage)
  assert c.data.tokenizer == ""  # the checkpoint's own (lm_data.tokenizer_spec)
  assert c.init.hf_checkpoint == fetch.default_dir() or "smollm2" in c.init.from_workdir
  assert c.model.lora_rank == (0 if stage == "sample" else 8)
  assert "smollm2" in c.workdir
  assert os.path.basename(c.data.source) in ("seed_tasks.jsonl", "test.jsonl.gz")


@pytest.mark.parametrize("stage", ["ppo", "grpo", "best_of_n", "sample"])
def test_lengths_fit_real_answers(stage):
  """40 new tokens (the built-in task's) cut most real chat answers; prompts are skipped, not
  cut, so no system prompt is lost."""
  c = _cfg(stage)
  n = {"ppo": lambda: c.rl.max_new_tokens, "grpo": lambda: c.rl.max_new_tokens,
       "best_of_n": lambda: c.best_of_n.max_new_tokens,
       "sample": lambda: c.sampling.max_new_tokens}[stage]()
  assert n >= 160 and c.data.max_prompt_len >= 256 and c.data.truncation == "skip"


def test_ppo_smollm2_pipeline_is_sft_then_reward_then_ppo():
  c = _cfg("ppo")
  assert [k for k in ("pretrain", "sft", "reward") if k in c.pipeline] == ["sft", "reward"]
  assert c.init.from_workdir == c.pipeline.sft.workdir == c.pipeline.reward.init.from_workdir
  assert c.reward.models == c.pipeline.reward.workdir


def test_missing_model_names_the_fetch_command(tmp_path, monkeypatch):
  monkeypatch.setenv(fetch.ENV, str(tmp_path / "nowhere"))
  c = _cfg("sft")
  with pytest.raises(DataError, match="rlhf_jax.models.fetch"):
    lm_data.load_tokenizer(c)


def test_missing_data_names_data_source(tmp_path, monkeypatch):
  import chat_tokenizers  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("RLHF_JAX_DATA", str(tmp_path / "no_data"))
  c = _cfg("sft")
  c.init.hf_checkpoint = chat_tokenizers.save_checkpoint(str(tmp_path / "ckpt"))
  c.data.max_len = 64  # the tiny checkpoint's context is 128
  c.train.batch_size = 8  # the tests' 8 fake devices
  with pytest.raises(DataError, match=r"data.source=.*no_data.*does not exist"):
    stages.run(c, str(tmp_path / "run"))


@pytest.mark.slow  # about 3 minutes on a loaded 2-core machine
def test_ppo_smollm2_runs_sft_reward_ppo_end_to_end(shared_data, tmp_path, monkeypatch):
  """`configs/ppo.py:smollm2` with no flag but sizes runs SFT -> RM -> PPO on the real data; a
  tiny ChatML checkpoint stands in for SmolLM2 (same tokenizer rules, seconds not hours)."""
  import chat_tokenizers  # pylint: disable=g-import-not-at-top
  ckpt = chat_tokenizers.save_checkpoint(str(tmp_path / "ckpt"))
  monkeypatch.setenv(fetch.ENV, ckpt)
  monkeypatch.chdir(tmp_path)
  c = _cfg("ppo")
  small = dict(steps=2, eval_every=2, checkpoint_every=2, eval_batches=1, batch_size=8)
  c.pipeline.sft.data.max_len = 96
  c.pipeline.sft.train.update(num_samples=0, **small)
  c.pipeline.reward.data.update(max_len=96, max_records=40)
  c.pipeline.reward.train.update(**small)
  c.data.update(max_len=96, max_prompt_len=64, builtin_eval=8)
  c.rl.update(iterations=1, rollout_batch=8, minibatches=1, max_new_tokens=16)
  c.train.update(eval_every=1, checkpoint_every=1, num_samples=0)
  out = stages.run(c, c.workdir)
  assert os.path.isfile(tmp_path / "runs/pipeline_smollm2/reward/reward_norm.json")
  assert out is not None
