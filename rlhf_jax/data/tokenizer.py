"""The tokenizer protocol every stage uses, and a wrapper around a local Hugging Face tokenizer.

`load_tokenizer("builtin")` gives the built-in task's closed-vocabulary tokenizer (and
"builtin:checkable" the checkable task's, the same words and its number words); any other spec
is a local directory with Hugging Face tokenizer files (usually the checkpoint directory); the hub
is never contacted. `HFTokenizer.render_messages` gives a chat-template rendering plus a per-token
mask of assistant tokens.

Where a response ends is one rule for every stage: at `eos_id`, the token that closes an assistant
turn. For a chat template that is the template's end-of-turn token (ChatML's `<|im_end|>`, found
by rendering a probe conversation; the tokenizer's EOS when the template does not show one); for a
plain rendering it is the tokenizer's EOS appended after the reply. SFT trains it (and nothing
after it: ChatML's "\n" after `<|im_end|>` is neither a target nor part of a trained row's end),
reward-model and DPO rows end with it (so the reward is read at it), and the sampler stops at it
(so PPO, GRPO and best-of-n read their rewards at the same token). Not for: formatting records into training examples
(`demonstrations.py`) or batching (`batching.py`).
"""

from __future__ import annotations

import os
from typing import Protocol, Sequence

from rlhf_jax.errors import DataError

# Any one of these makes a directory worth handing to AutoTokenizer; without any, we say so
# plainly instead of surfacing transformers' long "could not instantiate the backend" message.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                    "vocab.txt", "spiece.model")


class Tokenizer(Protocol):
  """What the stages need of a tokenizer (the built-in task's and `HFTokenizer` both fit)."""

  vocab_size: int
  pad_id: int
  bos_id: int | None
  eos_id: int
  chat_template: str | None  # the Hugging Face Jinja template, or None

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, no special tokens added."""
    ...

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    """Text of `ids`; special tokens (pad, bos, eos, ...) dropped when `skip_special`."""
    ...


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
  n = min(len(a), len(b))
  for i in range(n):
    if a[i] != b[i]:
      return i
  return n


class HFTokenizer:
  """A `transformers` tokenizer read from a local directory, behind the `Tokenizer` protocol."""

  def __init__(self, path: str):
    path = os.path.expanduser(str(path))
    if not os.path.isdir(path):
      raise DataError(f"tokenizer directory {path!r} does not exist")
    if not any(os.path.exists(os.path.join(path, f)) for f in _TOKENIZER_FILES):
      raise DataError(f"tokenizer directory {path!r} has no tokenizer files (expected one of "
                      f"{', '.join(_TOKENIZER_FILES)})")
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    try:
      self._tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, TypeError, ... here
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
      raise DataError(f"no usable tokenizer files in {path!r}: {first}") from None
    tok = self._tok
    self.path = path
    self.vocab_size = len(tok)  # includes added tokens, unlike tok.vocab_size
    if tok.eos_token_id is None:
      raise DataError(f"the tokenizer in {path!r} has no eos token")
    self.eos_id = int(tok.eos_token_id)
    # No pad token (Llama, GPT-2): pad with eos; masks, not ids, say what is padding.
    self.pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else self.eos_id
    self.bos_id = int(tok.bos_token_id) if tok.bos_token_id is not None else None
    self.chat_template = getattr(tok, "chat_template", None) or None
    self.eos_id = self._end_of_turn_id()

  def _end_of_turn_id(self) -> int:
    """The token closing an assistant turn in the chat template (else the tokenizer's EOS)."""
    if not self.chat_template:
      return self.eos_id
    probe = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]
    try:
      head = self.apply_chat_template(probe[:1], add_generation_prompt=True)
      full = self.apply_chat_template(probe)
    except DataError:
      return self.eos_id
    reply = self.encode("pong")
    n = _common_prefix_len(head, full)
    tail = full[n:]
    # The first special token after the reply's text closes the turn.
    for k in range(len(tail) - len(reply) + 1):
      if tail[k:k + len(reply)] == reply:
        special = set(self._tok.all_special_ids) | set(
            getattr(self._tok, "added_tokens_decoder", {}) or {})
        for t in tail[k + len(reply):]:
          if t == self.eos_id or t in special:
            return int(t)
        break
    return self.eos_id

  def encode(self, text: str) -> list[int]:
    return [int(i) for i in self._tok.encode(text, add_special_tokens=False)]

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special)

  def apply_chat_template(self, messages: Sequence[dict],
                          add_generation_prompt: bool = False) -> list[int]:
    """Token ids of the chat-template rendering of `messages`."""
    if not self.chat_template:
      raise DataError(f"the tokenizer in {self.path!r} has no chat template")
    try:
      out = self._tok.apply_chat_template(list(messages), tokenize=True,
                                          add_generation_prompt=add_generation_prompt)
    except Exception as e:  # jinja2 errors, or the template's own raise_exception(...)
      raise DataError(f"the chat template of {self.path!r} failed on a conversation of "
                      f"{len(messages)} messages: {e}") from None
    if hasattr(out, "keys"):  # newer transformers return a BatchEncoding
      out = out["input_ids"]
    return [int(i) for i in out]

  def render_messages(self, messages: Sequence[dict],
                      loss_turns: Sequence[bool] | None = None) -> tuple[list[int], list[bool]]:
    """Ids of the chat-template rendering and, per token, whether it belongs to a trained turn.

    `loss_turns[i]` says whether message i is trained (default: every assistant message).
    Instead of trusting `{% generation %}` tags (few templates have them), the conversation is
    rendered prefix by prefix: assistant turn i spans from the end of the rendering of
    messages[:i] with the generation prompt (so headers like "<|im_start|>assistant\\n" stay
    prompt tokens) to its end-of-turn token `eos_id` included (so the turn's end marker is
    learned, and what the template puts after it, ChatML's "\\n", is not). When the last
    message is trained, the rendering stops at its end-of-turn token: the row ends where a
    sampled response ends (the module doc's rule). Positions are common prefixes with the full
    rendering, so a template whose tokenization merges a token or two across a boundary costs a
    token of mask, not an error.
    """
    if loss_turns is None:
      loss_turns = [m.get("role") == "assistant" for m in messages]
    if len(loss_turns) != len(messages):
      raise ValueError(f"{len(loss_turns)} loss_turns for {len(messages)} messages")
    ids = self.apply_chat_template(messages)
    mask = [False] * len(ids)
    for i, train in enumerate(loss_turns):
      if not train:
        continue
      start = (_common_prefix_len(self.apply_chat_template(messages[:i], True), ids)
               if i else 0)
      end = _common_prefix_len(self.apply_chat_template(messages[:i + 1]), ids)
      end = _through_end_of_turn(ids, start, end, self.eos_id)
      if end <= start and str(messages[i].get("content", "")).strip():
        raise DataError(f"the chat template of {self.path!r} does not render conversations "
                        f"prefix by prefix (message {i} gets no tokens of its own); set "
                        "data.prompt_template to use a plain rendering instead")
      mask[start:end] = [True] * max(end - start, 0)
      if i == len(messages) - 1 and end > start:
        ids, mask = ids[:end], mask[:end]
    return ids, mask


def _through_end_of_turn(ids: Sequence[int], start: int, end: int, eos_id: int) -> int:
  """`end` moved back to just after the last `eos_id` in ids[start:end] (unchanged without)."""
  for k in range(end - 1, start - 1, -1):
    if ids[k] == eos_id:
      return k + 1
  return end


def prompt_ids(tokenizer, text: str) -> list[int]:
  """Ids of a prompt a user typed: a plain question is rendered as one user turn of the chat
  template with its generation prompt (when the tokenizer has a template); text that already
  holds the tokenizer's special tokens (a rendered conversation) is encoded as it is."""
  tok = getattr(tokenizer, "_tok", None)
  if not getattr(tokenizer, "chat_template", None) or tok is None:
    return tokenizer.encode(text.strip())
  if any(s and s in text for s in tok.all_special_tokens):
    return tokenizer.encode(text)
  return tokenizer.apply_chat_template([{"role": "user", "content": text.strip()}],
                                       add_generation_prompt=True)


def is_builtin(spec: str) -> bool:
  """Whether `spec` names a built-in task's tokenizer ("builtin", "builtin:checkable")."""
  return spec == "builtin" or spec.startswith("builtin:")


def load_tokenizer(spec: str) -> Tokenizer:
  """"builtin" / "builtin:checkable": the built-in tasks' tokenizers; anything else: a local HF
  tokenizer directory."""
  if is_builtin(spec):
    # Lazy: the built-in task is only needed (and only imported) when asked for.
    from rlhf_jax.data import builtin_task  # pylint: disable=g-import-not-at-top
    return builtin_task.tokenizer(spec)
  return HFTokenizer(spec)
