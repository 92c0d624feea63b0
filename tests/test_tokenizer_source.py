"""A model from a Hugging Face checkpoint reads text with the checkpoint's own tokenizer, never the
built-in one; a policy, reference or reward model with another tokenizer is an error."""

import json
import os
import sys
import types

import pytest

pytest.importorskip("transformers")

import chat_tokenizers  # pylint: disable=g-import-not-at-top

from rlhf_jax.data import lm_data  # pylint: disable=g-import-not-at-top
from rlhf_jax.data.tokenizer import HFTokenizer  # pylint: disable=g-import-not-at-top
from rlhf_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
from rlhf_jax.reward import model as rm_model  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))


def _config(name, **init):
  mod = __import__(name)
  c = mod.get_config()
  c.init.from_workdir = ""
  c.init.update(init)
  return c


@pytest.fixture
def tok_dir(tmp_path):
  chat_tokenizers.save_tokenizer(str(tmp_path / "ckpt"))
  return str(tmp_path / "ckpt")


@pytest.mark.parametrize("stage", ["ppo", "sample", "best_of_n", "dpo", "reward"])
def test_hf_checkpoint_policy_uses_its_own_tokenizer_by_default(tok_dir, stage):
  c = _config(stage, hf_checkpoint=tok_dir)
  assert c.data.tokenizer == "builtin"  # the configs' default
  tok = lm_data.load_tokenizer(c)
  assert isinstance(tok, HFTokenizer) and tok.vocab_size == len(chat_tokenizers.SPECIAL) + 3 + (
      len(chat_tokenizers.WORDS))


def test_a_workdir_made_from_a_checkpoint_keeps_its_tokenizer(tok_dir, tmp_path):
  wd = tmp_path / "sft"
  wd.mkdir()
  (wd / "model.json").write_text(json.dumps({"model": {}, "heads": "lm", "tokenizer": tok_dir}))
  c = _config("sample", from_workdir=str(wd))
  assert isinstance(lm_data.load_tokenizer(c), HFTokenizer)
  assert lm_data.tokenizer_spec(c) == tok_dir


def test_another_tokenizer_than_the_checkpoints_is_an_error(tok_dir, tmp_path):
  chat_tokenizers.save_tokenizer(str(tmp_path / "other"), chat=False)
  c = _config("ppo", hf_checkpoint=tok_dir)
  c.data.tokenizer = str(tmp_path / "other")
  with pytest.raises(ConfigError, match="differs from the tokenizer of the model"):
    lm_data.load_tokenizer(c)


def test_the_builtin_task_keeps_the_builtin_tokenizer():
  c = _config("sft")
  assert lm_data.tokenizer_spec(c) == "builtin"


def test_reward_model_with_another_tokenizer_is_an_error(tok_dir):
  rm = types.SimpleNamespace(name="rm", workdir="runs/rm", tokenizer="builtin")
  with pytest.raises(ConfigError, match="tokenizer"):
    rm_model.check_tokenizers([rm], tok_dir)
  rm_model.check_tokenizers([types.SimpleNamespace(name="rm", workdir="x", tokenizer=tok_dir)],
                            tok_dir)
