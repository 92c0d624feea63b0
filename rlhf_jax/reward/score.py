"""Score a file with a trained reward model: per-record rewards and, for comparison files, the
same report the reward-model stage prints for its held-out split.

  python -m rlhf_jax.reward.score --workdir=runs/reward --source=test.jsonl \
      [--format=hh|pairs|ranked|prompt_response] [--out=rewards.jsonl] [--report=report.json]

Rows are rendered as the model's own training rendered them: the data settings stored in the
workdir's model.json (format, field names, template, max_len, truncation); a flag overrides one
(`--format`, `--max_len`, `--prompt_field`, ...). Comparison formats ("hh", "pairs", "ranked")
give one output line per kept record (raw and normalised rewards, ranks) and the report of
`rlhf_jax.reward.report` — the stage's code path, so scoring the stage's own held-out file gives
its eval_report.json. "prompt_response" scores single (prompt, response) records (the response
in `--response_field`). The whole file is scored: no split is held out.
Not for: training (`rlhf_jax.train.rm_stage`) or comparing policies (`rlhf_jax.compare`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import jax
import numpy as np

from rlhf_jax import config_base, workdir_model
from rlhf_jax.data import comparisons as cmp
from rlhf_jax.data.demonstrations import read_records
from rlhf_jax.data.tokenizer import load_tokenizer
from rlhf_jax.errors import ConfigError, DataError, UserError
from rlhf_jax.reward import model as rm_model
from rlhf_jax.reward import report as rm_report

FORMATS = cmp.FORMATS + ("prompt_response",)


def row_config(workdir: str, source: str, overrides: dict):
  """(ComparisonConfig, format) to read `source`: the workdir's stored settings, then
  `overrides` (None = keep)."""
  info = workdir_model.read_model_json(workdir)
  stored = dict(info.get("data") or {})
  if not stored:  # a workdir from before the settings were stored: the defaults, its length
    stored = {"max_len": int(info["model"]["max_seq_len"])}
  unknown = sorted(set(overrides) - set(cmp.ROW_SETTINGS))
  if unknown:
    raise ConfigError(f"unknown setting(s) {unknown}; known: {cmp.ROW_SETTINGS}")
  stored.update({k: v for k, v in overrides.items() if v is not None})
  fmt = stored.pop("format", "hh")
  if fmt not in FORMATS:
    raise ConfigError(f"--format={fmt!r} must be one of {FORMATS}")
  return cmp.ComparisonConfig(source=source, format=fmt if fmt in cmp.FORMATS else "pairs",
                              eval_fraction=0.0, **stored), fmt


def _reward_fn(rm):
  fn = jax.jit(lambda p, t, m: rm_model.raw_rewards(p, rm.model_cfg, t, m))
  return lambda tokens, mask: np.asarray(fn(rm.params, tokens, mask))


def score_comparisons(rm, comps, k: int, seq_len: int, pad_id: int, batch_size: int):
  """float32[N, K] raw rewards, in fixed-shape batches of `batch_size` comparisons."""
  reward = _reward_fn(rm)
  out = []
  for s in range(0, len(comps), batch_size):
    part = comps[s:s + batch_size]
    b = cmp.pad_comparisons(part, k, seq_len, pad_id, rows=batch_size)
    r = reward(b["tokens"].reshape(-1, seq_len), b["attention_mask"].reshape(-1, seq_len))
    out.append(r.reshape(batch_size, k)[:len(part)])
  return np.concatenate(out) if out else np.zeros((0, k), np.float32)


def score_rows(rm, rows, seq_len: int, pad_id: int, batch_size: int) -> np.ndarray:
  """float32[N] raw rewards of single rows (right-padded to seq_len)."""
  reward = _reward_fn(rm)
  out = []
  for s in range(0, len(rows), batch_size):
    part = rows[s:s + batch_size]
    tokens = np.full((batch_size, seq_len), pad_id, np.int32)
    mask = np.zeros((batch_size, seq_len), bool)
    for i, r in enumerate(part):
      tokens[i, :len(r)], mask[i, :len(r)] = r, True
    out.append(reward(tokens, mask)[:len(part)])
  return np.concatenate(out) if out else np.zeros((0,), np.float32)


def run(workdir: str, source: str, out: str | None = None, report: str | None = None,
        batch_size: int = 32, response_field: str | None = None, **overrides) -> dict:
  """Scores `source`; returns {"records": n, "report": metrics or None}."""
  cfg, fmt = row_config(workdir, source, overrides)
  config = config_base.base_config("reward")
  rm = rm_model.load_reward_model(workdir, config)
  tokenizer = load_tokenizer(rm.tokenizer)
  norm = {"gain": rm.gain, "bias": rm.bias}
  seq_len = cfg.max_len
  if fmt == "prompt_response":
    rows = cmp.response_rows(read_records(source), tokenizer, cfg, response_field or "response")
    raw = score_rows(rm, [r for _, r in rows], seq_len, tokenizer.pad_id, batch_size)
    records = ({"record": w, "reward": float(x), "normalized": rm.gain * float(x) + rm.bias}
               for (w, _), x in zip(rows, raw))
    ev, n = None, len(rows)
    print(f"[score] {source}: {n} records scored (raw mean {raw.mean():+.4f}, std "
          f"{raw.std():.4f})")
  else:
    comps, stats = cmp.load_comparisons(cfg, tokenizer, "train")
    if not comps:
      raise DataError(f"{source}: no usable comparisons ({stats})")
    print(f"[score] {source} ({fmt}): {stats}")
    k = max(c.k for c in comps)
    raw = score_comparisons(rm, comps, k, seq_len, tokenizer.pad_id, batch_size)
    ev, text = rm_report.comparison_report(raw, comps, k, what=source)
    print(text)
    records, n = rm_report.reward_records(comps, raw, norm), len(comps)
  if out:
    rm_report.write_rewards(out, records)
    print(f"[score] per-record rewards (raw and normalised) -> {out}")
  if report and ev is not None:
    with open(report, "w", encoding="utf-8") as f:
      json.dump(ev, f, indent=1)
  return {"records": n, "report": ev}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a finished reward-model workdir")
  p.add_argument("--source", required=True, help="a local file or folder of records")
  p.add_argument("--out", help="JSON lines: one line of rewards per record")
  p.add_argument("--report", help="JSON: the comparison report (comparison formats)")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--response_field", help="prompt_response: the response's field")
  for key in cmp.ROW_SETTINGS:
    kind = int if key == "max_len" else str
    p.add_argument(f"--{key}", type=kind, help="default: as the model was trained")
  args = vars(p.parse_args(argv))
  try:
    run(**args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
