"""The tokenizer protocol every stage uses, and a wrapper around a local Hugging Face tokenizer.

`load_tokenizer("builtin")` gives the built-in task's closed-vocabulary tokenizer; any other spec
is a directory with Hugging Face tokenizer files (usually the checkpoint directory). Not for:
formatting records into training examples (`demonstrations.py`).
"""

from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

from rlhf_jax.errors import DataError


class Tokenizer(Protocol):
  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int
  chat_template: Any

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, no special tokens added."""

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    ...


class HFTokenizer:
  """A `transformers` tokenizer read from a local directory, behind the `Tokenizer` protocol."""

  def __init__(self, path: str):
    if not os.path.isdir(path):
      raise DataError(f"tokenizer directory {path!r} does not exist")
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    try:
      self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
      raise DataError(f"no usable tokenizer files in {path!r}: {e}") from None
    tok = self._tok
    self.path = path
    self.vocab_size = len(tok)
    if tok.eos_token_id is None:
      raise DataError(f"the tokenizer in {path!r} has no eos token")
    self.eos_id = int(tok.eos_token_id)
    # No pad token (Llama, GPT-2): pad with eos; masks, not ids, say what is padding.
    self.pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_id
    self.bos_id = int(tok.bos_token_id) if tok.bos_token_id is not None else None
    self.chat_template = getattr(tok, "chat_template", None)

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False))

  def decode(self, ids, skip_special: bool = True) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def _render(self, messages, add_generation_prompt=False) -> list[int]:
    out = self._tok.apply_chat_template(list(messages), tokenize=True,
                                        add_generation_prompt=add_generation_prompt)
    if hasattr(out, "keys"):  # newer transformers return a BatchEncoding
      out = out["input_ids"]
    return [int(i) for i in out]

  def render_messages(self, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """Ids of the chat-template rendering and, per token, whether it is an assistant token.

    Rendered prefix by prefix: an assistant turn's tokens are those its message adds beyond the
    rendering of the turns before it with the generation prompt (so "<|im_start|>assistant" and
    the like stay prompt tokens, while the turn's end marker is learned).
    """
    if not self.chat_template:
      raise DataError(f"the tokenizer in {self.path!r} has no chat template")
    ids: list[int] = []
    mask: list[bool] = []
    for i, m in enumerate(messages):
      full = self._render(messages[:i + 1])
      start = len(ids)
      if m["role"] == "assistant":
        start = len(self._render(messages[:i], add_generation_prompt=True)) if i else 0
      if full[:len(ids)] != ids or start < len(ids) or full[:start][:len(ids)] != ids:
        raise DataError("the chat template does not render conversations prefix by prefix; "
                        "use data.prompt_template instead")
      mask += [False] * (start - len(ids)) + [m["role"] == "assistant"] * (len(full) - start)
      ids = full
    return ids, mask


def load_tokenizer(spec: str):
  if spec == "builtin":
    from rlhf_jax.data import builtin_task  # pylint: disable=g-import-not-at-top
    return builtin_task.tokenizer()
  return HFTokenizer(spec)
