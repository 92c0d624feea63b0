"""The from-scratch reward-model preset learns content, not length: on synthetic comparison
rules that need the prompt and the response read together (`reward_rules`: a fruit's true
colour; repeating the word the prompt asks for), with equal-length responses, the
`configs/reward.py:hh_scratch` defaults reach >= 95% held-out accuracy on every rule. Only what
the data dictates is changed: the source, a tokenizer sized to this small vocabulary, and
max_len (no row is cut)."""

import os
import sys
import time

import pytest

from rlhf_jax import stages

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "configs"))
sys.path.insert(0, HERE)
import reward  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import reward_rules  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_hh_scratch_defaults_learn_rules_that_need_prompt_and_response(tmp_path):
  src = reward_rules.write_rules(str(tmp_path / "rules"), 1000)
  c = reward.get_config("hh_scratch")
  c.data.update(source=src, format="pairs", tokenizer="bpe:1024", max_len=40)
  c.model.update(vocab_size=1024, max_seq_len=40)
  c.train.update(log_every=100, eval_every=200)
  t0 = time.perf_counter()
  rep = stages.run(c, str(tmp_path / "rm"))["report"]
  print(f"RULES wall {time.perf_counter() - t0:.0f}s accuracy {rep['accuracy']:.4f} " +
        " ".join(f"{g} {v['accuracy']:.4f} ({v['pairs']} pairs)"
                 for g, v in rep["by_group"].items()))
  assert rep["truncated_fraction"] == 0
  assert rep["longer_wins"] == pytest.approx(0.5)  # equal lengths: length says nothing
  assert set(rep["by_group"]) == set(reward_rules.RULES)
  for rule, ev in rep["by_group"].items():
    assert ev["pairs"] >= 150, rule
    assert ev["accuracy"] >= 0.95, (rule, ev["accuracy"])
