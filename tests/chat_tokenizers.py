"""Small Hugging Face tokenizers for tests: a ChatML one (end of turn `<|im_end|>` followed by
"\\n", as SmolLM2 and Qwen render) and one without a chat template; plus a tiny random Llama
checkpoint that uses either."""

import os

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
WORDS = ("hello world how are you i am fine thanks tell me a joke no why ok good bye "
         "user assistant system").split()
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def save_tokenizer(path: str, chat: bool = True, eos: str | None = None):
  """A word-level tokenizer ("\\n" and " " are tokens) saved to `path`; ChatML when `chat`;
  EOS `eos` (default: `<|im_end|>` with ChatML, else `<|endoftext|>`)."""
  import transformers  # pylint: disable=g-import-not-at-top
  from tokenizers import Regex, Tokenizer, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  vocab = {w: i for i, w in enumerate(SPECIAL + ["<unk>", "\n", " "] + WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n| "), behavior="isolated")
  fast = transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
      eos_token=eos or ("<|im_end|>" if chat else "<|endoftext|>"), pad_token="<|endoftext|>",
      additional_special_tokens=SPECIAL)
  if chat:
    fast.chat_template = CHATML
  fast.save_pretrained(path)
  return len(vocab)


def save_checkpoint(path: str, chat: bool = True, seed: int = 0):
  """A tiny random Llama checkpoint directory with that tokenizer (vocabulary 32)."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  os.makedirs(path, exist_ok=True)
  save_tokenizer(path, chat)
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=128,
                                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=0)
  transformers.LlamaForCausalLM(cfg).save_pretrained(path)
  return path


def workdir_from_checkpoint(ckpt: str, workdir: str) -> str:
  """A stage workdir (model.json + an Orbax checkpoint of the params) holding `ckpt`'s model,
  as an SFT run from it would leave (tokenizer recorded as the checkpoint's)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top

  from rlhf_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from rlhf_jax.models import hf  # pylint: disable=g-import-not-at-top
  cfg, params = hf.load_checkpoint(ckpt)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "model.json"), "w", encoding="utf-8") as f:
    json.dump({"model": dataclasses.asdict(cfg), "heads": "lm", "stage": "sft",
               "tokenizer": ckpt}, f)
  ck = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  from flax import struct  # pylint: disable=g-import-not-at-top

  @struct.dataclass
  class State:
    params: dict
    step: int

  ck.save(1, State(params, 1), {})
  ck.close()
  return workdir
