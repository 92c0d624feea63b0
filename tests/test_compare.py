"""The comparison table reads what each method's stage wrote, and states each sample budget."""

import json
import os

import pytest

from rlhf_jax import compare, config_base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f)


def test_collect_builds_one_row_per_method(tmp_path):
  configs = {}
  for m in compare.METHODS:
    c = config_base.from_file(os.path.join(REPO, "configs", f"{m}.py"))
    c.workdir = str(tmp_path / m)
    configs[m] = c
  _write(str(tmp_path / "ppo" / "eval_sft.json"), {"eval_gold": 1.5})
  for i, m in enumerate(("ppo", "a2c", "grpo", "rloo")):
    _write(str(tmp_path / m / "summary.json"),
           {"final": {"eval_gold": 3.0 + i, "eval_kl": 4.0}, "samples": 640, "iteration": 10})
  _write(str(tmp_path / "dpo" / "eval_policy.json"), {"DPO": {"gold": 2.5, "kl": 6.0}})
  _write(str(tmp_path / "best_of_n" / "best_of_n.json"),
         {"1": {"gold": 1.5, "kl": 0.0}, "4": {"gold": 2.0, "kl": 0.636},
          "16": {"gold": 2.4, "kl": 1.835}})
  rows = compare.collect(configs)
  names = [r["method"] for r in rows]
  assert names == ["SFT (reference)", "best-of-4", "best-of-16", "PPO", "A2C", "GRPO", "RLOO",
                   "DPO (dpo, beta 0.1)"]
  grpo = rows[names.index("GRPO")]
  assert grpo["gold"] == 5.0 and "8 prompts x 8" in grpo["samples"]
  assert "64 prompts" in rows[names.index("PPO")]["samples"]
  table = compare.format_table(rows)
  assert "best-of-16" in table and "1.83" in table


def test_cli_rejects_unknown_methods():
  with pytest.raises(SystemExit):
    compare.main(["--only=ppo,kto"])
