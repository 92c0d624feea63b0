"""RL prompts with their records' metadata: what a reward function needs beside the text.

A prompt source (local JSON-lines / JSON / parquet, or a hub dataset name; `demonstrations.py`
reads and splits it) gives, per record, the prompt's token ids rendered as the SFT stage renders
them, and a metadata dict:
  "reference"  the record's response field (GSM8K's worked answer ending "#### 72"),
  "prompt"     the record's prompt text, as written (before any template),
  "source"     where the record is ("file.jsonl:12"), for error messages,
and every other scalar field of the record under its own name. GSM8K's fields are a preset
(`configs/grpo.py:gsm8k`: prompt_field="question", response_field="answer").
Not for: the built-in task's prompts (`rl_data.py` makes theirs), or SFT examples.
"""

from __future__ import annotations

from rlhf_jax.data import demonstrations
from rlhf_jax.errors import DataError

_SCALARS = (str, int, float, bool)


def metadata(rec: dict, cfg: demonstrations.DemoConfig, origin: str, index: int) -> dict:
  """The metadata of one prompt_response record (see the module doc)."""
  meta = {k: v for k, v in rec.items() if isinstance(v, _SCALARS)}
  meta["reference"] = str(demonstrations.get_field(rec, cfg.response_field, origin, index))
  meta["prompt"] = str(demonstrations.get_field(rec, cfg.prompt_field, origin, index))
  meta["source"] = demonstrations.where(origin, index)
  return meta


def load(cfg: demonstrations.DemoConfig, tokenizer, split: str) -> tuple[list, list[dict]]:
  """([prompt ids], [metadata]) of `split` ("train" or "eval"), in the source's order; records
  whose response field is empty are skipped (there is nothing to check against)."""
  if cfg.format != "prompt_response":
    raise DataError(f"prompts with metadata read data.format='prompt_response' records (a "
                    f"prompt and a reference answer field), not {cfg.format!r}")
  enc = demonstrations.Encoder(cfg, tokenizer)
  prompts, metas = [], []
  for origin, index, rec in demonstrations.split_records(cfg, split):
    if not isinstance(rec, dict):
      raise DataError(f"{demonstrations.where(origin, index)}: is a {type(rec).__name__}, not "
                      "an object")
    pair = enc.encode(rec, origin, index)
    if pair is None or not any(pair[1]):
      continue
    ids, mask = pair
    prompts.append([int(t) for t in ids[:mask.index(True)]])
    metas.append(metadata(rec, cfg, origin, index))
    if cfg.max_records and len(prompts) >= cfg.max_records:
      break
  return prompts, metas
