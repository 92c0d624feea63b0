"""RL and sample prompts: every cut is counted and said, the SFT row length never cuts a prompt,
a file of prompts is read, plain prompts get the chat template, and configs/sample.py's
documented Hugging Face command runs."""

import json
import os
import sys

import pytest

pytest.importorskip("transformers")

import chat_tokenizers  # pylint: disable=g-import-not-at-top

from rlhf_jax import stages  # pylint: disable=g-import-not-at-top
from rlhf_jax.data.tokenizer import HFTokenizer  # pylint: disable=g-import-not-at-top
from rlhf_jax.train import rl_data  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
LONG = " ".join(["tell me a joke"] * 4)  # longer than the SFT rows below (data.max_len=16)


def _full(tok):
  """Tokens of the chat rendering of the long prompts."""
  return len(tok.apply_chat_template([{"role": "user", "content": LONG + " ok"}], True))


def _rl_config(tmp_path, tok_dir, max_prompt_len, truncation="truncate_prompt_left"):
  import ppo  # pylint: disable=g-import-not-at-top
  with open(tmp_path / "demos.jsonl", "w") as f:
    for i, w in enumerate(chat_tokenizers.WORDS[:20]):
      f.write(json.dumps({"prompt": f"{LONG} {w}" if i % 2 else w, "response": "ok good"}) +
              "\n")
  c = ppo.get_config()
  c.init.from_workdir = ""
  c.init.hf_checkpoint = tok_dir
  c.data.update(source=str(tmp_path / "demos.jsonl"), max_len=16, eval_fraction=0.3,
                max_prompt_len=max_prompt_len, truncation=truncation, builtin_eval=0)
  return c


def test_rl_prompts_are_not_cut_by_the_sft_row_length(tmp_path):
  tok_dir = str(tmp_path / "tok")
  chat_tokenizers.save_tokenizer(tok_dir)
  tok = HFTokenizer(tok_dir)
  full = _full(tok)
  assert full > 16
  data = rl_data.build(_rl_config(tmp_path, tok_dir, full + 8), tok)
  assert max(len(p) for p in data.train_prompts + data.eval_prompts) == full
  assert "(0 truncated" in data.summary, data.summary


def test_prompt_cuts_are_counted_or_skipped(tmp_path):
  tok_dir = str(tmp_path / "tok")
  chat_tokenizers.save_tokenizer(tok_dir)
  tok = HFTokenizer(tok_dir)
  full = _full(tok)
  data = rl_data.build(_rl_config(tmp_path, tok_dir, full - 1), tok)
  assert "(10 truncated from the left" in data.summary, data.summary
  data = rl_data.build(_rl_config(tmp_path, tok_dir, full - 1, truncation="skip"), tok)
  assert "(10 longer ones skipped" in data.summary, data.summary
  assert len(data.train_prompts) + len(data.eval_prompts) == 10


def test_sample_py_documented_hf_command_with_a_prompts_file(tmp_path):
  import sample  # pylint: disable=g-import-not-at-top
  ckpt = chat_tokenizers.save_checkpoint(str(tmp_path / "ckpt"))
  (tmp_path / "prompts.txt").write_text("tell me a joke\nhow are you\n")
  c = sample.get_config()
  c.init.hf_checkpoint = ckpt  # as the module doc says; no init.from_workdir to clear
  c.prompts = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n|why"
  c.prompts_file = str(tmp_path / "prompts.txt")
  c.sampling.update(max_new_tokens=4, batch_size=8, temperature=0.0)
  recs = stages.run(c, str(tmp_path / "sample"))["records"]
  tok = HFTokenizer(ckpt)
  assert len(recs) == 4
  # The "|" inside <|im_start|> does not split; typed prompts get the chat template.
  assert recs[0]["prompt"] == tok.decode(tok.encode(
      "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"))
  want = tok.apply_chat_template([{"role": "user", "content": "tell me a joke"}], True)
  assert recs[2]["prompt"] == tok.decode(want)
