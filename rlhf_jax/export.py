"""Exports a stage's latest policy as a Hugging Face checkpoint directory.

  python -m rlhf_jax.export --workdir=runs/sft --out=/tmp/sft_hf

Reads the workdir's model.json and newest checkpoint, folds LoRA adapters into the kernels they
adapt (a stage trained with `model.lora_rank > 0`), and writes config.json + safetensors that
`transformers.AutoModelForCausalLM.from_pretrained` loads (Llama/Qwen2 or GPT-2 layouts; the
LM only, a score head is not exported). The tokenizer is not written: a built-in or BPE tokenizer
of this repo has no Hugging Face form.
Not for: the format itself (`rlhf_jax.models.hf.save_checkpoint`).
"""

from __future__ import annotations

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
  hf.save_checkpoint(out, model_cfg, params)
  return {"model": model_cfg, "lora_merged": bool(info["model"].get("lora_rank"))}


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
        + (" (LoRA adapters merged)" if got["lora_merged"] else ""))


if __name__ == "__main__":
  app.run(main)
