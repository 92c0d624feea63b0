"""The RL stage with reward functions: GRPO on the built-in checkable task with the checking
function alone (no reward model loaded, no normalisation file), its pass@k before and after in
the summary and the table, each function's mean and firing rate in the logs; a function that
raises inside the stage stops it with one error; reward-function scores mixed with a reward
model's inside the compiled scoring program."""

import contextlib
import io
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import config_base, stages
from rlhf_jax.models import ModelConfig, init_params
from rlhf_jax.reward import combine
from rlhf_jax.reward.function_runner import RewardFunctionError
from rlhf_jax.reward.model import RewardModel, normalized_rewards
from rlhf_jax.rl.rollout import sequence_scores

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "configs"))
import grpo  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

# configs/grpo.py:checkable at seconds-long sizes (rlhf_jax/smoke.py's spirit).
TINY = {"pipeline.sft.train.steps": 12, "pipeline.sft.train.eval_every": 100,
        "pipeline.sft.train.checkpoint_every": 100, "pipeline.sft.train.num_samples": 0,
        "pipeline.sft.data.builtin_train": 128, "pipeline.sft.data.builtin_eval": 8,
        "pipeline.sft.model.hidden": 32, "pipeline.sft.model.mlp_dim": 64,
        "pipeline.sft.model.num_layers": 1,
        "data.builtin_train": 64, "data.builtin_eval": 16, "rl.iterations": 2,
        "rl.rollout_batch": 16, "rl.group_size": 4, "reward.pass_n": 4, "reward.pass_k": "1,2,4",
        "train.eval_every": 2, "train.checkpoint_every": 2, "train.log_every": 1,
        "train.num_samples": 1}


def _config(root, **more):
  c = grpo.get_config("checkable")
  return config_base.apply_overrides(c, {**TINY, "pipeline.sft.workdir": f"{root}/sft", **more})


@pytest.fixture(scope="module")
def checkable_run(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("checkable"))
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    out = stages.run(_config(root), f"{root}/grpo")
  return root, out, printed.getvalue()


@pytest.mark.slow  # 100-180 s on the shared 2-core CPU (a tiny SFT, then 2 GRPO iterations)
def test_functions_only_grpo_reports_pass_at_k_before_and_after(checkable_run):
  root, out, printed = checkable_run
  assert "reward: checkable (function checkable) (weighted_sum)" in printed
  assert not os.path.exists(f"{root}/reward")  # no reward model was trained or read
  with open(f"{root}/grpo/summary.json") as f:
    summary = json.load(f)
  for ev in (summary["sft"], summary["final"]):
    assert {"eval_pass@1", "eval_pass@2", "eval_pass@4", "eval_fn_checkable",
            "eval_fn_checkable_rate"} <= set(ev) and ev["eval_pass_n"] == 4
    assert 0 <= ev["eval_pass@1"] <= ev["eval_pass@2"] <= ev["eval_pass@4"] <= 1
    # The combined reward is the function's score alone: its mean is the function's mean.
    assert ev["eval_rm_score"] == pytest.approx(ev["eval_fn_checkable"])
  assert "pass@1 (4 samples/prompt)" in printed and "checkable: firing rate" in printed
  with open(f"{root}/grpo/metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if '"grpo"' in line]
  its = [r for r in rows if "fn_checkable" in r]
  assert [r["step"] for r in its] == [1, 2]
  for r in its:
    assert 0 <= r["fn_checkable_rate"] <= 1 and r["time_functions"] >= 0
    # rm_score is the combined reward: the function's mean (no EOS penalty counted in it).
    assert r["rm_score"] == pytest.approx(r["fn_checkable"])
  # Rollouts and held-out evaluations each one program for generate and evaluate.
  assert out["compiled"]["generate"]._cache_size() == 1  # pylint: disable=protected-access
  assert out["compiled"]["evaluate"]._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.slow  # needs the finished SFT of the run above
def test_a_raising_function_stops_the_stage_with_one_error(checkable_run, tmp_path):
  root, _, _ = checkable_run
  c = _config(root, **{"reward.functions": "reward_fns_user:always_raises"})
  with pytest.raises(RewardFunctionError) as e:
    with contextlib.redirect_stdout(io.StringIO()):
      stages.run(c, str(tmp_path / "grpo"))
  msg = str(e.value)
  assert "'always_raises' (reward_fns_user:always_raises) raised RuntimeError" in msg
  assert "held-out prompts from 0 row 0" in msg and "Human:" in msg


def test_a_bad_function_spec_stops_before_any_work(tmp_path):
  c = _config(str(tmp_path), **{"reward.functions": "no_such_fn"})
  with pytest.raises(Exception, match="neither a built-in"):
    stages.run(c, str(tmp_path / "grpo"))
  assert not os.path.exists(tmp_path / "sft")  # the upstream SFT never started


def test_function_scores_mix_with_a_reward_model_in_the_scoring_program():
  cfg = ModelConfig(vocab_size=64, hidden=32, num_layers=1, num_heads=4, num_kv_heads=2,
                    mlp_dim=64, max_seq_len=16, tie_embeddings=False)
  params = init_params(cfg, jax.random.PRNGKey(0), heads="score")
  rm = RewardModel("helpful", "", cfg, params, 2.0, -0.5, "builtin")
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 64, (4, 12)), jnp.int32)
  mask = jnp.ones_like(tokens, bool)
  fn = jnp.array([1.0, 0.0, 1.0, 0.0])
  section = combine.rewards_section()
  section.update(models="helpful=unused", functions="gsm8k", weights="gsm8k=3.0,helpful=0.5")
  _, rule = combine.parse_rewards(section)
  total, each = jax.jit(lambda p, t, m, f: sequence_scores([rm], rule, [p], t, m, f))(
      params, tokens, mask, {"gsm8k": fn})
  want = 0.5 * normalized_rewards(rm, params, tokens, mask) + 3.0 * fn
  np.testing.assert_allclose(total, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(each["gsm8k"], fn)
