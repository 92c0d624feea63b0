"""RL prompts with their records' metadata: GSM8K's question/answer fields by the
configs/grpo.py:gsm8k preset (real lines of ../shared/data/gsm8k), a local JSON-lines file with
a prompt suffix, and the built-in checkable prompts with their answers."""

import json
import os
import sys

import pytest

import chat_tokenizers  # tests/, on sys.path under pytest
from rlhf_jax import config_base
from rlhf_jax.data import builtin_task, checkable_task, demonstrations, lm_data, prompt_records
from rlhf_jax.data.tokenizer import load_tokenizer
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.reward.functions import gsm8k
from rlhf_jax.train import rl_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import grpo  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tok"))
  chat_tokenizers.save_tokenizer(path, chat=True)
  return path, load_tokenizer(path)


def test_gsm8k_preset_reads_questions_with_their_reference_answers(shared_data, chatml):
  path, tok = chatml
  c = grpo.get_config("gsm8k")
  c.data.update(source=str(shared_data / "gsm8k" / "train.jsonl"),
                eval_split=str(shared_data / "gsm8k" / "test.jsonl"), tokenizer=path,
                max_records=40, max_prompt_len=1024)
  data = rl_data.build(c, tok)
  with open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
    first = json.loads(f.readline())
  assert len(data.train_prompts) == len(data.train_meta) == 40
  assert len(data.eval_prompts) == len(data.eval_meta) == 40
  meta = data.eval_meta[0]
  assert meta["reference"] == first["answer"] and meta["prompt"] == first["question"]
  assert meta["source"].endswith("test.jsonl:1") and meta["question"] == first["question"]
  assert gsm8k.answer_match("", "So she makes $18.", meta) == 1.0
  # Rendered with the chat template: the user turn, then the assistant's generation prompt.
  ids = data.eval_prompts[0]
  assert ids[:2] == tok.encode("<|im_start|>user")[:2]
  assert ids[-3:] == tok.encode("<|im_start|>assistant\n")[-3:]


def test_gsm8k_prompt_holds_the_question_and_the_instruction(shared_data):
  from rlhf_jax.models import fetch  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(fetch.default_dir()):
    pytest.skip(f"{fetch.default_dir()} is absent: `python -m rlhf_jax.models.fetch` makes it")
  c = grpo.get_config("gsm8k_smollm2")
  c.data.update(source=str(shared_data / "gsm8k" / "test.jsonl"), eval_split="",
                eval_fraction=0.5, max_records=5)
  tok = load_tokenizer(fetch.default_dir())
  data = rl_data.build(c, tok)
  text = tok.decode(data.eval_prompts[0])
  assert data.eval_meta[0]["question"] in text and grpo.GSM8K_SUFFIX.strip() in text
  assert text.rstrip().endswith("assistant")


def test_local_prompts_carry_their_fields_and_the_suffix(tmp_path, chatml):
  _, tok = chatml
  src = tmp_path / "q.jsonl"
  src.write_text("\n".join(json.dumps(r) for r in (
      {"q": "hello world", "a": "good", "level": 3},
      {"q": "how are you", "a": ""},  # no reference: nothing to check against, skipped
      {"q": "tell me a joke", "a": "no"})) + "\n")
  cfg = demonstrations.DemoConfig(source=str(src), prompt_field="q", response_field="a",
                                  prompt_suffix=" thanks", eval_fraction=0.0)
  prompts, metas = prompt_records.load(cfg, tok, "train")
  assert [m["reference"] for m in metas] == ["good", "no"]
  assert metas[0]["level"] == 3 and metas[0]["source"] == f"{src}:1"
  assert tok.decode(prompts[0]).split() == ["user", "hello", "world", "thanks", "assistant"]
  bad = dict(cfg.__dict__, format="dialogue")
  with pytest.raises(DataError, match="prompt_response"):
    prompt_records.load(demonstrations.DemoConfig(**bad), tok, "train")


def test_missing_answer_field_is_named(tmp_path, chatml):
  _, tok = chatml
  src = tmp_path / "q.jsonl"
  src.write_text(json.dumps({"question": "hello"}) + "\n")
  cfg = demonstrations.DemoConfig(source=str(src), prompt_field="question",
                                  response_field="answer", eval_fraction=0.0)
  with pytest.raises(DataError, match=r"q.jsonl:1: has no field 'answer'"):
    prompt_records.load(cfg, tok, "train")


def test_checkable_rl_data_has_answers_row_for_row():
  c = grpo.get_config("checkable")
  c.data.update(builtin_train=64, builtin_eval=16)
  assert lm_data.tokenizer_spec(c) == "builtin:checkable"  # data.tokenizer "builtin" means it
  tok = lm_data.load_tokenizer(c)
  data = rl_data.build(c, tok)
  assert len(data.train_meta) == 64 and len(data.eval_meta) == 16
  for p, m in zip(data.eval_prompts, data.eval_meta):
    assert tok.decode(p) == m["prompt"] and m["reference"] == checkable_task.number_word(
        m["answer"])
  idx = data.indices_for(3, 8, seed=0)
  assert data.prompts_for(3, 8, 0) == [data.train_prompts[i] for i in idx]
  assert data.meta_for(3, 8, 0) == [data.train_meta[i] for i in idx]
  assert config_base  # the presets build through config_base
  assert "<unk>" not in " ".join(tok.decode(p) for p in data.train_prompts)


def test_the_chat_tasks_vocabulary_is_not_the_checkable_tasks():
  """The checkable words extend only "builtin:checkable": under "builtin" an id past the chat
  task's 260 words still reads as <unk>, so a chat policy's samples (and every figure measured
  on the chat task) are what they were before the checkable task existed."""
  chat, check = load_tokenizer("builtin"), load_tokenizer("builtin:checkable")
  assert chat.vocab_size == 260 and chat.vocab == builtin_task.VOCAB
  assert check.vocab[:260] == chat.vocab and check.vocab_size > 260
  seven = check.encode("seven")[0]
  assert seven >= 260 and chat.decode([seven]) == "<unk>" and check.decode([seven]) == "seven"
  assert chat.encode("what is seven plus one ?") != check.encode("what is seven plus one ?")
  with pytest.raises(ConfigError, match="builtin:nope"):
    load_tokenizer("builtin:nope")
