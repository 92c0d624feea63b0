"""The sample stage: generate from any policy checkpoint (an SFT or RL workdir, or a Hugging
Face checkpoint) with the compiled sampler, and write the samples as JSON lines.

Prompts are `prompts` (texts separated by "|"; the "|" inside special tokens such as
`<|im_start|>` does not split), the lines of `prompts_file` (a .txt file, one per line, or .jsonl
records with a "prompt" field), or the held-out prompts of `data` (the built-in task's, or a
dataset's prompt field). A plain typed prompt is rendered with the tokenizer's chat template as
one user turn (`tokenizer.prompt_ids`). The policy is `init.hf_checkpoint`, else
`init.from_workdir` ("" = runs/ppo). Each record has the prompt, the response, its token count,
whether it ended with EOS, the sum of its log-probs at the sampling temperature, the policy's
workdir and checkpoint step, and on the built-in task its gold score. Output:
`<workdir>/samples.jsonl`, and the first few on the console.
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np

from rlhf_jax import checkpoint, parallel, sampling
from rlhf_jax.data import lm_data
from rlhf_jax.data.tokenizer import prompt_ids
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.train import model_init, rl_data


DEFAULT_POLICY = "runs/ppo"
# "|" separates prompts, except inside a special token such as <|im_start|>.
_SEPARATOR = re.compile(r"(?<!<)\|(?!>)")


def _prompt_texts(config) -> list[str]:
  """The typed prompts: `prompts` split on "|", then the lines of `prompts_file`."""
  texts = _SEPARATOR.split(config.prompts or "")
  path = config.prompts_file
  if path:
    if not os.path.isfile(path):
      raise DataError(f"prompts_file={path!r} does not exist")
    with open(path, encoding="utf-8") as f:
      lines = [ln.rstrip("\n") for ln in f]
    if path.endswith(".jsonl"):
      try:
        texts += [str(json.loads(ln)["prompt"]) for ln in lines if ln.strip()]
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"prompts_file={path!r}: each line must be a JSON object with a "
                        f"'prompt' field ({e!r})") from None
    else:
      texts += [ln.replace("\\n", "\n") for ln in lines]
  return [t for t in texts if t.strip()]


def _origin(config) -> dict:
  """Which policy answered: its workdir (or checkpoint) and step, so a feedback app comparing
  two checkpoints' samples can credit each answer (and an Elo table can be fitted)."""
  if not config.init.from_workdir:
    return {"workdir": config.init.hf_checkpoint, "step": None}
  ckpt = checkpoint.Checkpointer(os.path.join(config.init.from_workdir, "checkpoints"))
  step = ckpt.latest_step()
  ckpt.close()
  return {"workdir": os.path.abspath(config.init.from_workdir), "step": step}


def sample_records(params, model_cfg, tokenizer, prompts: list[list[int]], gold_fn, scfg,
                   width: int, batch_size: int, seed: int, mesh, rules) -> list[dict]:
  """One record per prompt: prompt, response, token count, EOS, summed log-prob (and gold).
  Chunks of `batch_size` prompts, chunk `start` sampled with key PRNGKey(seed + start)."""
  pad = tokenizer.pad_id
  generate_fn = sampling.generator(model_cfg, scfg, tokenizer.eos_id, pad)
  records = []
  with jax.set_mesh(mesh):
    for smp in sampling.sample_chunks(generate_fn, params, prompts,
                                      lambda start: jax.random.PRNGKey(seed + start),
                                      batch_size=batch_size, pad_id=pad, width=width, mesh=mesh,
                                      rules=rules):
      gold = (gold_fn(np.where(smp.prompt_mask_BxP, smp.prompt_BxP, pad),
                      np.where(smp.mask_BxN, smp.tokens_BxN, pad)) if gold_fn else None)
      for i, p in enumerate(prompts[smp.start:smp.start + smp.rows]):
        ids = smp.response_ids(i)
        rec = {"prompt": tokenizer.decode(p), "response": tokenizer.decode(ids),
               "tokens": len(ids), "eos": bool(ids and ids[-1] == tokenizer.eos_id),
               "logprob": float(smp.logprobs_BxN[i].sum())}
        if gold is not None:
          rec["gold"] = float(gold[i])
        records.append(rec)
  return records


def run(config, workdir: str) -> dict:
  if config.stage != "sample":
    raise ConfigError(f"stage={config.stage!r}: this loop runs 'sample'")
  if not config.init.hf_checkpoint and not config.init.from_workdir:
    config.init.from_workdir = DEFAULT_POLICY
  s = config.sampling
  tokenizer = lm_data.load_tokenizer(config)
  model_cfg, params = model_init.build(config, tokenizer, heads="lm")
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  gold_fn = None
  texts = _prompt_texts(config)
  if texts:
    prompts = [prompt_ids(tokenizer, t) for t in texts]
  else:
    data = rl_data.build(config, tokenizer)
    prompts, gold_fn = data.eval_prompts, data.gold_fn
  if s.num_prompts:
    prompts = prompts[:s.num_prompts]
  if not prompts:
    raise ConfigError("sample: no prompts (set prompts='text|text' or a data source)")
  scfg = sampling.SamplingConfig(max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                 top_k=s.top_k, top_p=s.top_p)
  width = max(len(p) for p in prompts)
  if width + s.max_new_tokens > model_cfg.max_seq_len:
    raise ConfigError(f"the longest prompt ({width} tokens) + sampling.max_new_tokens="
                      f"{s.max_new_tokens} exceeds the model's max_seq_len={model_cfg.max_seq_len}")
  b = s.batch_size
  div = parallel.batch_divisor(mesh, rules)
  if b % div:
    raise ConfigError(f"sampling.batch_size={b} does not divide over the mesh's batch axes "
                      f"(size {div})")
  records = sample_records(params, model_cfg, tokenizer, prompts, gold_fn, scfg, width, b,
                           config.seed, mesh, rules)
  origin = _origin(config)
  records = [{**rec, **origin} for rec in records]
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "samples.jsonl"), "w", encoding="utf-8") as f:
      for rec in records:
        f.write(json.dumps(rec) + "\n")
    for rec in records[:s.show]:
      extra = f"  [gold {rec['gold']:+.2f}]" if "gold" in rec else ""
      print(f"{rec['prompt']!r} -> {rec['response']!r}{extra}", flush=True)
    summary = f"[sample] {len(records)} samples -> {os.path.join(workdir, 'samples.jsonl')}"
    if gold_fn:
      summary += f"; mean gold score {np.mean([r['gold'] for r in records]):.3f}"
    print(summary, flush=True)
  return {"records": records}
