"""Reward functions: the built-ins on real GSM8K lines and hand-written edge cases, a user's
function by `module:function`, one clear error for a function that raises, hangs or returns a
non-number, the thread pool's results in row order, each process scoring only its own rows,
and reward-function scores mixed with reward-model scores by the combination rules."""

import json
import time

import jax.numpy as jnp
import ml_collections as mc
import numpy as np
import pytest

import reward_fns_user  # tests/, on sys.path under pytest
from rlhf_jax.data import checkable_task
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.reward import combine, function_runner
from rlhf_jax.reward.functions import BUILTINS, gsm8k, length, resolve
from rlhf_jax.reward.functions.numbers import numbers_in

BOXED = "Put the final answer in \\boxed{}."


def _gsm8k_lines(shared_data, n=None):
  with open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
    recs = [json.loads(line) for line in f]
  return recs[:n] if n else recs


def test_gsm8k_reference_answers_match_themselves_and_not_a_wrong_number(shared_data):
  recs = _gsm8k_lines(shared_data)
  assert len(recs) == 1319
  for r in recs:
    meta = {"reference": r["answer"]}
    assert gsm8k.answer_match(r["question"], r["answer"], meta) == 1.0, r["answer"][-40:]
    assert gsm8k.format_reward(r["question"], r["answer"], meta) == 1.0
    ref = gsm8k.reference_answer(r["answer"])
    wrong = r["answer"].rsplit("####", 1)[0] + f"#### {ref + 1}"
    assert gsm8k.answer_match(r["question"], wrong, meta) == 0.0
    stripped = r["answer"].rsplit("####", 1)[0]  # the reasoning without its marked answer
    assert gsm8k.format_reward(r["question"], stripped, meta) == 0.0


def test_gsm8k_real_lines_written_the_ways_models_write_them(shared_data):
  recs = {gsm8k.reference_answer(r["answer"]): r for r in _gsm8k_lines(shared_data, 200)}
  r = recs[70000]  # "#### 70000" in the file; a model writes it with commas and a dollar sign
  meta = {"reference": r["answer"]}
  assert gsm8k.answer_match(r["question"], "So the profit is $70,000.", meta) == 1.0
  assert gsm8k.answer_match(r["question"], "The profit is 70,000.00 dollars", meta) == 1.0
  assert gsm8k.answer_match(r["question"], "70000 ... or maybe 7000", meta) == 0.0
  r = recs[18]
  meta = {"reference": r["answer"]}
  assert gsm8k.answer_match(r["question"], "She makes 9 * 2 = $18 every day.\n#### 18", meta) == 1
  assert gsm8k.answer_match(r["question"], "She makes 18.0 dollars", meta) == 1.0


@pytest.mark.parametrize("text, want", [
    ("1,000 and $1,234.50", ["1000", "1234.50"]),
    ("16-3-4=9 eggs", ["16", "3", "4", "9"]),  # subtraction, not negative numbers
    ("it was -5 degrees, then - 3", ["-5", "-3"]),
    ("18. Then 40% of 12km", ["18", "40", "12"]),
    ("a list 1,2,3", ["1", "2", "3"]),
    ("no digits at all", []),
])
def test_numbers_are_read_as_values(text, want):
  assert numbers_in(text) == [type(numbers_in("1")[0])(w) for w in want]


@pytest.mark.parametrize("response, score", [
    ("#### 18", 1.0), ("the answer is 18.0", 1.0), ("18.00 dollars.", 1.0), ("$18", 1.0),
    ("it is 18.5", 0.0), ("-18", 0.0), ("eighteen", 0.0), ("", 0.0), ("18 or 19", 0.0),
])
def test_gsm8k_answer_match_edge_cases(response, score):
  assert gsm8k.answer_match("q", response, {"reference": "reasoning\n#### 18"}) == score


def test_gsm8k_negative_and_comma_references():
  assert gsm8k.answer_match("q", "It drops to -10.", {"reference": "x\n#### -10"}) == 1.0
  assert gsm8k.answer_match("q", "It drops to 10.", {"reference": "x\n#### -10"}) == 0.0
  assert gsm8k.answer_match("q", "1450000", {"reference": "x\n#### 1,450,000"}) == 1.0


def test_gsm8k_reference_without_an_answer_line_is_a_data_error():
  with pytest.raises(DataError, match="no '####'"):
    gsm8k.answer_match("q", "5", {"reference": "the answer is 5"})
  with pytest.raises(DataError, match="no number after"):
    gsm8k.answer_match("q", "5", {"reference": "x\n#### five"})


def test_format_reward_follows_what_the_prompt_asks():
  assert gsm8k.format_reward("Solve it. End with '#### N'.", "so\n#### 42", {}) == 1.0
  assert gsm8k.format_reward("Solve it.", "so the answer is 42", {}) == 0.0
  assert gsm8k.format_reward("Solve it.", "#### 42 apples", {}) == 0.0  # not the form asked
  assert gsm8k.format_reward(BOXED, "so \\boxed{42}", {}) == 1.0
  assert gsm8k.format_reward(BOXED, "so\n#### 42", {}) == 0.0
  assert gsm8k.format_reward(BOXED, "\\boxed{}", {}) == 0.0


def test_length_penalty():
  words = lambda n: " ".join(["w"] * n)  # noqa: E731
  assert length.length_penalty("", words(10), {}, max_words=10) == 0.0
  assert length.length_penalty("", words(15), {}, max_words=10) == pytest.approx(-0.5)
  assert length.length_penalty("", words(50), {}, max_words=10) == -1.0
  assert length.length_penalty("", words(200), {}) == 0.0
  with pytest.raises(ConfigError, match="max_words"):
    length.length_penalty("", "w", {}, max_words=0)


def test_checkable_answer_match_and_its_records():
  fn = BUILTINS["checkable"]
  assert fn("p", "the answer is seven .", {"answer": 7}) == 1.0
  assert fn("p", "the answer is 7 .", {"answer": 7}) == 1.0
  assert fn("p", "the answer is seven . no eight", {"answer": 7}) == 0.0
  assert fn("p", "the cat is happy .", {"answer": 0}) == 0.0
  train = checkable_task.questions(400, "train", seed=3)
  evals = checkable_task.questions(100, "eval", seed=3)
  assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}
  for r in train[:50]:
    if "plus" in r["prompt"]:
      a, b = (checkable_task.last_number_word(w) for w in r["prompt"].split(" plus "))
      assert r["answer"] == a + b
    else:
      listed = r["prompt"].split(" in ")[1].split(" ?")[0].split()
      assert r["answer"] == sum(w in checkable_task.TOPICS["animals"] for w in listed)
  demos = checkable_task.demonstrations(2000, "train", seed=3)
  right = np.mean([fn(d["prompt"], d["response"], d) for d in demos])
  assert abs(right - checkable_task.DEMO_ACCURACY) < 0.04


def test_user_function_by_module_and_function():
  section = mc.ConfigDict({"functions": "mine=reward_fns_user:says_answer,gsm8k",
                           "function_kwargs": ""})
  fns = function_runner.load_functions(section)
  assert [f.name for f in fns] == ["mine", "gsm8k"] and fns[0].fn is reward_fns_user.says_answer
  scorer = function_runner.FunctionScorer(fns[:1])
  out = scorer.score(["p", "p"], ["the answer is 3", "3"], [{"scale": 2.0}, {}])
  assert out["mine"].tolist() == [2.0, 0.0]
  assert function_runner.load_functions(
      mc.ConfigDict({"functions": "reward_fns_user:counted"}))[0].name == "counted"


def test_function_kwargs_reach_the_function():
  section = mc.ConfigDict({"functions": "length_penalty",
                           "function_kwargs": '{"length_penalty": {"max_words": 2}}'})
  scorer = function_runner.FunctionScorer(function_runner.load_functions(section))
  assert scorer.score(["p"], ["a b c d"], [{}])["length_penalty"].tolist() == [-1.0]


@pytest.mark.parametrize("spec, match", [
    ("nope", "neither a built-in"), ("no_such_module_xyz:f", "cannot be imported"),
    ("reward_fns_user:missing", "has no function 'missing'"),
])
def test_bad_function_specs_are_named(spec, match):
  with pytest.raises(ConfigError, match=match):
    function_runner.load_functions(mc.ConfigDict({"functions": spec}))


def test_bad_function_kwargs_are_named():
  with pytest.raises(ConfigError, match="not JSON"):
    function_runner.load_functions(mc.ConfigDict({"functions": "gsm8k", "function_kwargs": "{"}))
  with pytest.raises(ConfigError, match=r"names \['other'\]"):
    function_runner.load_functions(mc.ConfigDict({"functions": "gsm8k",
                                                  "function_kwargs": '{"other": {}}'}))


def _scorer(name, timeout=5.0, workers=4):
  section = mc.ConfigDict({"functions": f"reward_fns_user:{name}"})
  return function_runner.FunctionScorer(function_runner.load_functions(section), timeout,
                                        workers)


def test_a_raising_function_gives_one_error_naming_it_and_the_record():
  rows = ["the answer is two", "the answer is seven", "three"]
  with pytest.raises(function_runner.RewardFunctionError) as e:
    _scorer("raises").score(["Human: what is three plus four ?"] * 3, rows, [{}] * 3,
                            ["iteration 4 row 0", "iteration 4 row 1 (gsm8k.jsonl:12)",
                             "iteration 4 row 2"])
  msg = str(e.value)
  assert "'raises' (reward_fns_user:raises) raised ValueError: cannot parse this answer" in msg
  assert "iteration 4 row 1 (gsm8k.jsonl:12)" in msg and "what is three plus four" in msg
  assert "\n" not in msg


def test_a_hanging_function_gives_one_error_after_its_timeout():
  t0 = time.monotonic()
  with pytest.raises(function_runner.RewardFunctionError) as e:
    _scorer("hangs", timeout=0.3).score(["p0", "p1"], ["a", "b"], [{}, {}])
  elapsed = time.monotonic() - t0
  assert 0.3 <= elapsed < 5, elapsed  # not the 30 s the call would take
  assert "'hangs' (reward_fns_user:hangs) ran past reward.function_timeout=0.3s" in str(e.value)
  assert "row 0, prompt 'p0'" in str(e.value)


def test_a_non_number_is_refused():
  with pytest.raises(function_runner.RewardFunctionError, match="returned 'yes'"):
    _scorer("not_a_number").score(["p"], ["a"], [{}])


def test_results_come_back_in_row_order_from_many_threads():
  scorer = function_runner.FunctionScorer(
      function_runner.load_functions(mc.ConfigDict({"functions": "gsm8k"})), workers=8)
  rows = [f"#### {i}" for i in range(200)]
  metas = [{"reference": f"x\n#### {i if i % 3 else i + 1}"} for i in range(200)]
  got = scorer.score(["p"] * 200, rows, metas)["gsm8k"]
  assert got.tolist() == [0.0 if i % 3 == 0 else 1.0 for i in range(200)]


def test_each_process_scores_only_its_rows_and_every_row_once():
  """Host-side: what `RLRun.function_scores` does in each of P processes (its rows by
  `process_rows`, as `parallel.put_batch` places them); every row is called exactly once.
  The stage test runs it in one process; a 2-process run of the RL stage is in
  test_multiprocess.py's slow tests."""
  scorer = _scorer("counted")
  rows = [f"response {i}" for i in range(24)]
  for procs in (1, 2, 4):
    reward_fns_user.CALLS.clear()
    parts = []
    for pid in range(procs):
      own = function_runner.process_rows(len(rows), pid, procs)
      parts.append(scorer.score([f"p{i}" for i in range(own.start, own.stop)], rows[own],
                                [{}] * (own.stop - own.start))["counted"])
    assert sorted(r for _, r in reward_fns_user.CALLS) == sorted(rows)
    assert np.concatenate(parts).tolist() == [0.5] * 24
  assert function_runner.process_rows(24, 1, 4) == slice(6, 12)
  with pytest.raises(ConfigError, match="does not split"):
    function_runner.process_rows(10, 0, 4)


def test_function_stats_mean_and_firing_rate():
  stats = function_runner.function_stats({"a": np.array([0.0, 1.0, 1.0, 0.0]),
                                          "b": np.array([-0.5, 0.0])}, "eval_")
  assert stats == {"eval_fn_a": 0.5, "eval_fn_a_rate": 0.5, "eval_fn_b": -0.25,
                   "eval_fn_b_rate": 0.5}


def _section(**kw):
  d = combine.rewards_section()
  d.update(kw)
  return d


def test_functions_and_models_combine_by_the_same_rules():
  models, rule = combine.parse_rewards(_section(models="helpful=runs/rm", functions="gsm8k",
                                                weights="gsm8k=2.0"))
  assert models == [("helpful", "runs/rm")]
  rm = jnp.array([0.5, -1.0, 2.0])
  fn = jnp.array([1.0, 0.0, 1.0])
  got = combine.combine_rewards({"helpful": rm, "gsm8k": fn}, rule)
  np.testing.assert_allclose(got, [2.5, -1.0, 4.0])
  # A function as the gate: below the threshold its score is the reward, else the model's.
  _, gate = combine.parse_rewards(_section(models="helpful=runs/rm", functions="fmt=gsm8k_format",
                                           combine="safety_gate", safety_model="fmt",
                                           helpful_model="helpful", safety_threshold=0.5))
  np.testing.assert_allclose(combine.combine_rewards({"helpful": rm, "fmt": fn}, gate),
                             [0.5, 0.0, 2.0])


def test_functions_only_and_the_errors_of_mixing():
  models, rule = combine.parse_rewards(_section(models="", functions="checkable"))
  assert models == [] and rule.kind == "weighted_sum"
  with pytest.raises(ConfigError, match="both empty"):
    combine.parse_rewards(_section(models=""))
  with pytest.raises(ConfigError, match="more than once"):
    combine.parse_rewards(_section(models="gsm8k=runs/rm", functions="gsm8k"))
  with pytest.raises(ConfigError, match="not among reward.models / reward.functions"):
    combine.parse_rewards(_section(models="", functions="gsm8k", weights="other=1"))


def test_every_builtin_resolves():
  for name, fn in BUILTINS.items():
    assert resolve(name) is fn and fn.__doc__
