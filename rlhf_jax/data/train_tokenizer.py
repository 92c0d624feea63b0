"""A byte-level BPE tokenizer trained on a stage's own training text, for models from scratch.

A config names it as `data.tokenizer = "bpe:N"` (N = vocabulary size): the stage trains it on the
training split only (never on held-out text), saves it as a Hugging Face tokenizer directory
`<workdir>/tokenizer` (tokenizer.json + config, loadable by `transformers`), and a resumed run
reads that directory back instead of training again. Special tokens: <pad> 0, <eos> 1, <bos> 2.
Not for: tokenizers of pretrained checkpoints (`tokenizer.HFTokenizer` reads those).
"""

from __future__ import annotations

import os
from typing import Iterable

from rlhf_jax.errors import ConfigError

SPECIAL = ("<pad>", "<eos>", "<bos>")


def parse_spec(spec: str) -> int | None:
  """"bpe:N" -> N; anything else -> None."""
  if not spec.startswith("bpe:"):
    return None
  try:
    n = int(spec[4:])
  except ValueError:
    raise ConfigError(f"data.tokenizer={spec!r}: expected bpe:<vocabulary size>") from None
  if n < 300:
    raise ConfigError(f"data.tokenizer={spec!r}: a byte-level BPE needs at least 300 tokens")
  return n


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str) -> str:
  """Trains on `texts`, saves to out_dir (atomically), returns out_dir."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(texts, trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                 bos_token="<bos>")
  tmp = out_dir.rstrip("/") + ".tmp"
  fast.save_pretrained(tmp)
  if os.path.exists(out_dir):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(out_dir)
  os.replace(tmp, out_dir)
  return out_dir
