"""Exports a stage's latest policy as a Hugging Face checkpoint directory.

  python -m rlhf_jax.export --workdir=runs/sft --out=/tmp/sft_hf

Reads the workdir's model.json and newest checkpoint, folds LoRA adapters into the kernels they
adapt (a stage trained with `model.lora_rank > 0`), and writes config.json + safetensors that
`transformers.AutoModelForCausalLM.from_pretrained` loads (Llama/Qwen2 or GPT-2 layouts; the
LM only, a score head is not exported). A model that came from a Hugging Face checkpoint also gets
that checkpoint's tokenizer files (chat template included), its bos/eos/pad ids in config.json,
and a generation_config.json (the source's, if it has one) whose eos is the end-of-turn token the
stages stop at, so `generate` on the export stops where it does on the source. The built-in or a
BPE tokenizer of this repo has no Hugging Face form and is not written.
Not for: the format itself (`rlhf_jax.models.hf.save_checkpoint`).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from rlhf_jax import config_base
from rlhf_jax.errors import UserError

_WORKDIR = flags.DEFINE_string("workdir", None, "A stage's workdir (model.json + checkpoints).")
_OUT = flags.DEFINE_string("out", None, "The directory to write the checkpoint to.")


def export(workdir: str, out: str) -> dict:
  """Writes the checkpoint; returns {"model": ModelConfig, "lora_merged": bool}."""
  from rlhf_jax.models import hf  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import model_init  # pylint: disable=g-import-not-at-top
  info = model_init.read_model_json(workdir)
  if "lm" not in info.get("heads", "lm").split("+"):
    raise UserError(f"{workdir!r} holds a {info['heads']!r} model (no LM head): only policies "
                    "export as a causal LM")
  config = config_base.base_config("export")
  model_cfg, params = model_init.load_workdir_params(workdir, config, heads="lm")
  tok_dir = info.get("tokenizer") or ""
  tok = None
  if tok_dir not in ("", "builtin") and os.path.isdir(os.path.expanduser(tok_dir)):
    from rlhf_jax.data.tokenizer import HFTokenizer  # pylint: disable=g-import-not-at-top
    tok = HFTokenizer(tok_dir)
  ids = (None if tok is None else
         {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id})
  hf.save_checkpoint(out, model_cfg, params, token_ids=ids)
  if tok is not None:
    _write_tokenizer_files(tok, out, ids)
  return {"model": model_cfg, "lora_merged": bool(info["model"].get("lora_rank")),
          "tokenizer": tok.path if tok is not None else None}


def _write_tokenizer_files(tok, out: str, ids: dict) -> None:
  """The source's tokenizer files and a generation_config.json that stops at `eos_token_id`."""
  tok._tok.save_pretrained(out)  # pylint: disable=protected-access
  gen = {}
  src = os.path.join(tok.path, "generation_config.json")
  if os.path.isfile(src):
    with open(src, encoding="utf-8") as f:
      gen = json.load(f)
  gen.update({k: v for k, v in ids.items() if v is not None})
  with open(os.path.join(out, "generation_config.json"), "w", encoding="utf-8") as f:
    json.dump(gen, f, indent=2, sort_keys=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("--workdir and --out are required")
  try:
    got = export(_WORKDIR.value, _OUT.value)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"wrote {_OUT.value}: {got['model'].num_params() / 1e6:.2f}M params"
        + (" (LoRA adapters merged)" if got["lora_merged"] else "")
        + (f", tokenizer of {got['tokenizer']}" if got["tokenizer"] else ", no tokenizer"))


if __name__ == "__main__":
  app.run(main)
