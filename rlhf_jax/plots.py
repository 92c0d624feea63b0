"""End-of-run plots, drawn from a run's `metrics.jsonl` (so a resumed run plots its whole
history). matplotlib is imported here only, with the non-interactive Agg backend.
"""

from __future__ import annotations

import json
import os


def read_metrics(path: str, stage: str) -> dict[int, dict]:
  """step -> merged metrics of `stage` (a later line for the same step wins: a resumed run
  re-logs the iterations after its last checkpoint)."""
  rows: dict[int, dict] = {}
  if not os.path.exists(path):
    return rows
  with open(path, encoding="utf-8") as f:
    for line in f:
      rec = json.loads(line)
      if rec.get("stage") == stage:
        rows.setdefault(rec["step"], {}).update(rec)
  return rows


def rl_curves(metrics_path: str, stage: str, out_path: str) -> str | None:
  """A 2×2 PNG: RM and gold score of the rollouts against KL and against iterations, with the
  held-out evaluations as markers. Returns the path, or None without matplotlib."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("matplotlib is not installed: no plot", flush=True)
    return None
  rows = read_metrics(metrics_path, stage)
  train = sorted((s, r) for s, r in rows.items() if "rm_score" in r)
  evals = sorted((s, r) for s, r in rows.items() if "eval_rm_score" in r)
  if not train:
    return None
  it = [s for s, _ in train]
  fig, axes = plt.subplots(2, 2, figsize=(11, 8))
  series = [("rm_score", "eval_rm_score", "RM score (normalised)")]
  if "gold" in train[0][1]:
    series.append(("gold", "eval_gold", "gold score"))
  for key, ekey, label in series:
    axes[0, 0].plot([r["kl"] for _, r in train], [r[key] for _, r in train], ".", alpha=0.5,
                    label=f"rollouts: {label}")
    axes[0, 0].plot([r["eval_kl"] for _, r in evals], [r[ekey] for _, r in evals], "o-",
                    label=f"held-out: {label}")
    axes[0, 1].plot(it, [r[key] for _, r in train], label=f"rollouts: {label}")
    axes[0, 1].plot([s for s, _ in evals], [r[ekey] for _, r in evals], "o-",
                    label=f"held-out: {label}")
  axes[0, 0].set(xlabel="KL to the reference (nats per response)", ylabel="score",
                 title="score against KL")
  axes[0, 1].set(xlabel="iteration", ylabel="score", title="score against iterations")
  axes[1, 0].plot(it, [r["kl"] for _, r in train], label="KL (rollouts)")
  axes[1, 0].set(xlabel="iteration", ylabel="nats per response", title="KL and β")
  ax2 = axes[1, 0].twinx()
  ax2.plot(it, [r["beta"] for _, r in train], color="gray", label="β")
  ax2.set_ylabel("β")
  axes[1, 1].plot(it, [r["length"] for _, r in train], label="response length")
  axes[1, 1].plot(it, [10 * r["eos_rate"] for _, r in train], label="EOS rate × 10")
  axes[1, 1].set(xlabel="iteration", title="responses")
  for ax in axes.flat:
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.suptitle(f"{stage}: {os.path.dirname(os.path.abspath(metrics_path))}")
  fig.tight_layout()
  fig.savefig(out_path, dpi=90)
  plt.close(fig)
  return out_path
