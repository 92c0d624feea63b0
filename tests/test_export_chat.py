"""`python -m rlhf_jax.export` of a model from a chat checkpoint writes what transformers needs to
use it as the source is used: tokenizer files with the chat template, bos/eos/pad ids in
config.json, and a generation_config.json that stops at the end-of-turn token."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import chat_tokenizers  # pylint: disable=g-import-not-at-top

from rlhf_jax import export  # pylint: disable=g-import-not-at-top


def _ids(tok, msgs):
  out = tok.apply_chat_template(msgs, add_generation_prompt=True)
  return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_export_writes_tokenizer_chat_template_and_generation_config(tmp_path):
  ckpt = chat_tokenizers.save_checkpoint(str(tmp_path / "ckpt"))
  wd = chat_tokenizers.workdir_from_checkpoint(ckpt, str(tmp_path / "sft"))
  out = str(tmp_path / "export")
  export.export(wd, out)
  src_tok = transformers.AutoTokenizer.from_pretrained(ckpt)
  tok = transformers.AutoTokenizer.from_pretrained(out)
  assert tok.chat_template == src_tok.chat_template == chat_tokenizers.CHATML
  msgs = [{"role": "user", "content": "tell me a joke"}]
  assert _ids(tok, msgs) == _ids(src_tok, msgs)
  im_end = tok.convert_tokens_to_ids("<|im_end|>")
  with open(f"{out}/config.json") as f:
    cfg = json.load(f)
  assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (1, im_end, 0)
  gen = transformers.GenerationConfig.from_pretrained(out)
  assert gen.eos_token_id == im_end and gen.pad_token_id == 0
  # The export generates what the source generates (defaults only: no eos passed by hand).
  a = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
  b = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
  ids = torch.tensor([_ids(tok, msgs)])
  with torch.no_grad():
    ga = a.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)
    gb = b.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)
  np.testing.assert_array_equal(ga.numpy(), gb.numpy())
