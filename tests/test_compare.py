"""The comparison table reads what each method's stage wrote, and states each sample budget."""

import json
import os

import pytest

from rlhf_jax import compare

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(obj, f)


def test_collect_builds_one_row_per_method(tmp_path):
  configs = compare.build_configs(REPO, compare.METHODS, {})
  for m, cs in configs.items():
    for i, c in enumerate(cs):
      c.workdir = str(tmp_path / f"{m}{i}")
  _write(str(tmp_path / "ppo0" / "eval_sft.json"), {"eval_gold": 1.5})
  for i, m in enumerate(("ppo", "a2c", "grpo", "rloo")):
    _write(str(tmp_path / f"{m}0" / "summary.json"),
           {"final": {"eval_gold": 3.0 + i, "eval_kl": 4.0}, "samples": 640, "iteration": 10})
  _write(str(tmp_path / "dpo0" / "eval_policy.json"), {"DPO": {"gold": 2.5, "kl": 6.0}})
  _write(str(tmp_path / "best_of_n0" / "best_of_n.json"),
         {"1": {"gold": 1.5, "kl_upper_bound": 0.0, "kl_estimate": 0.0},
          "4": {"gold": 2.0, "kl_upper_bound": 0.636, "kl_estimate": 0.41},
          "16": {"gold": 2.4, "kl_upper_bound": 1.835, "kl_estimate": 1.27}})
  _write(str(tmp_path / "ilql0" / "eval_policy.json"),
         {"SFT (reference)": {"gold": 1.5, "kl": 0.0}, "ILQL LM head": {"gold": 1.6, "kl": 0.2},
          "ILQL (beta 1)": {"gold": 2.1, "kl": 0.9}, "ILQL (beta 4)": {"gold": 2.4, "kl": 1.7}})
  _write(str(tmp_path / "rejection_sampling1" / "eval_policy.json"),
         {"start (reference)": {"gold": 1.5, "kl": 0.0}, "SFT": {"gold": 2.2, "kl": 1.1}})
  _write(str(tmp_path / "grpo_checkable0" / "summary.json"),
         {"sft": {"eval_pass@1": 0.46, "eval_kl": 0.0},
          "final": {"eval_pass@1": 0.61, "eval_kl": 0.7, "eval_pass_n": 8}, "samples": 3840,
          "iteration": 60})
  rows = compare.collect(configs)
  names = [r["method"] for r in rows]
  assert names == ["SFT (reference)", "best-of-4", "best-of-16", "PPO", "A2C", "GRPO", "RLOO",
                   "SFT, checkable prompts", "GRPO, check function only",
                   "DPO (dpo, beta 0.1)", "ILQL (beta 1)", "ILQL (beta 4)",
                   "rejection sampling (RS-FT)"]
  ilql = rows[names.index("ILQL (beta 1)")]  # the shaped policy's figures, not the LM head's
  assert ilql["gold"] == 2.1 and ilql["kl"] == 0.9
  assert rows[names.index("ILQL (beta 4)")]["kl"] == 1.7  # every decoding beta has its row
  assert ilql["samples"].startswith("8,192 scored SFT samples (2,048 train prompts x 4)")
  checked = rows[names.index("GRPO, check function only")]
  assert checked["pass@1"] == 0.61 and checked["gold"] is None and checked["kl"] == 0.7
  assert "60 iterations x 8 prompts x 8" in checked["samples"]
  assert rows[names.index("SFT, checkable prompts")]["pass@1"] == 0.46
  rs = rows[-1]
  assert rs["gold"] == 2.2 and rs["samples"].startswith("32,000 (2,000 train prompts x 16")
  grpo = rows[names.index("GRPO")]
  assert grpo["gold"] == 5.0 and "8 prompts x 8" in grpo["samples"]
  assert "64 prompts" in rows[names.index("PPO")]["samples"]
  bo16 = rows[names.index("best-of-16")]  # the estimate in the KL column, the bound beside it
  assert bo16["kl"] == 1.27 and "upper bound 1.83" in bo16["samples"]
  table = compare.format_table(rows)
  assert "best-of-16" in table and "1.27" in table
  line = next(t for t in table.splitlines() if t.startswith("GRPO, check function only"))
  assert line.split()[4:7] == ["-", "0.70", "0.610"]


def test_cli_rejects_unknown_methods():
  with pytest.raises(SystemExit):
    compare.main(["--only=ppo,kto"])
