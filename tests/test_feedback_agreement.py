"""Every agreement and bias figure of the feedback app against hand-computed values or a
published reference (Krippendorff's own worked example), on small cases with ties."""

import math
import re

import numpy as np
import pytest

for _mod in ("krippendorff", "statsmodels"):
  pytest.importorskip(_mod, reason='the feedback extra is not installed: '
                      'pip install -e ".[test,feedback]"')

from scipy import stats  # noqa: E402  pylint: disable=wrong-import-position

from rlhf_jax.feedback import agreement as ag  # noqa: E402  pylint: disable=wrong-import-position

J = ag.Judgement


def test_strict_pairs_leave_ties_out():
  assert ag.strict_pairs([0, 0, 1]) == {(0, 2): 1, (1, 2): 1}
  assert ag.strict_pairs([2, 0, 1]) == {(0, 1): -1, (0, 2): -1, (1, 2): 1}


def test_pairwise_agreement_and_kendall_tau_b_by_hand():
  js = [J(1, "a", (0, 1, 2)), J(1, "b", (0, 2, 1)),  # pairs: agree, agree, disagree
        J(2, "a", (0, 0, 1)), J(2, "b", (1, 0, 0)),  # only (0, 2) strict for both: disagree
        J(3, "a", (0, 1, 2))]  # one labeler: not overlap
  rate, n = ag.pairwise_agreement(js)
  assert (rate, n) == (pytest.approx(2 / 4), 4)
  # tau-b: task 1 (2 concordant, 1 discordant, no ties) = 1/3; task 2: nc=0, nd=1, one tie in
  # each ranking: -1 / sqrt((3-1)(3-1)) = -1/2.
  tau, m = ag.kendall_tau_b(js)
  assert m == 2 and tau == pytest.approx((1 / 3 - 1 / 2) / 2)
  # A constant ranking has no tau: left out, not counted as 0.
  tau, m = ag.kendall_tau_b([J(1, "a", (0, 0)), J(1, "b", (0, 1))])
  assert math.isnan(tau) and m == 0


def test_krippendorff_alpha_ordinal_matches_the_published_example():
  # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units,
  # ordinal alpha = 0.815. Units here are (task, response): 3 tasks of 4 responses.
  nan = None
  table = {"A": [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
           "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
           "C": [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
           "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]}
  js = [J(t, who, (0, 1, 2, 3), ratings=tuple(r[4 * t:4 * t + 4]))
        for who, r in table.items() for t in range(3)]
  alpha, units = ag.ratings_alpha(js)
  assert round(alpha, 3) == 0.815
  assert units == 11  # unit 12 has one rating only


def test_fleiss_kappa_per_flag_by_hand():
  # 3 raters, 4 units (2 tasks x 2 responses); "violent" ticked by 3, 0, 2, 1 of them.
  # P_i = 1, 1, 1/3, 1/3 -> mean 2/3; p(yes) = 1/2 -> Pe = 1/2; kappa = (2/3 - 1/2)/(1/2) = 1/3.
  ticks = {(0, 0): 3, (0, 1): 0, (1, 0): 2, (1, 1): 1}
  js = [J(t, f"l{k}", (0, 1), flags=tuple(frozenset({"violent"} if k < ticks[(t, i)] else ())
                                          for i in range(2)))
        for t in range(2) for k in range(3)]
  kappas = ag.flag_kappas(js, ("violent", "sexual"))
  assert kappas["violent"][0] == pytest.approx(1 / 3) and kappas["violent"][1] == 4
  assert math.isnan(kappas["sexual"][0])  # never used: undefined, not 1 or 0


def test_majority_and_gold_agreement_by_hand():
  js = [J(1, "a", (0, 1, 2)), J(1, "b", (0, 2, 1)), J(1, "c", (1, 0, 2))]
  # a: (0,2) agrees with b+c; (0,1) and (1,2) split the others -> 1/1. b: (0,2) agree, (1,2)
  # disagree -> 1/2. c: (0,1) disagree, (0,2) agree -> 1/2.
  assert ag.majority_agreement(js) == {"a": (1.0, 1), "b": (0.5, 2), "c": (0.5, 2)}
  gold = [J(9, "a", (0, 2, 1), gold=(0, 1, 2)), J(9, "b", (0, 0, 1), gold=(0, 1, 2)),
          J(8, "b", (0, 1), gold=None)]
  res = ag.gold_agreement(gold)
  assert res["a"] == (pytest.approx(2 / 3), 3) and res["b"] == (1.0, 2)


def test_position_and_length_bias_by_hand_with_scipy_p_values():
  j = J(1, "a", (0, 1, 2), shown=(2, 0, 1), lengths=(5, 3, 5))
  # Shown order 2, 0, 1. (0,1): 0 wins, shown earlier -> yes; (0,2): 0 wins, 2 was shown
  # earlier -> no; (1,2): 1 wins, 2 earlier -> no.
  pb = ag.position_bias([j])
  assert (pb.rate, pb.n) == (pytest.approx(1 / 3), 3)
  assert pb.p_value == pytest.approx(stats.binomtest(1, 3).pvalue)
  j2 = J(2, "a", (1, 0, 2), shown=(0, 1, 2), lengths=(5, 3, 5))
  lb = ag.length_bias([j2])  # (0,1): the shorter 1 wins; (0,2) equal lengths; (1,2): shorter
  assert (lb.rate, lb.n) == (0.0, 2)
  many = [J(i, "a", (0, 1), shown=(0, 1), lengths=(9, 1)) for i in range(20)]
  assert ag.position_bias(many).rate == 1.0 and ag.position_bias(many).p_value < 1e-5
  assert ag.length_bias(many).rate == 1.0


def test_seconds_per_task():
  js = [J(1, "a", (0, 1), seconds=10.0), J(2, "a", (0, 1), seconds=30.0),
        J(1, "b", (0, 1), seconds=5.0)]
  s = ag.seconds_per_task(js)
  assert s["a"] == {"median": 20.0, "mean": 20.0, "n": 2}
  assert s["all"]["median"] == 10.0 and s["all"]["n"] == 3
  assert np.isclose(s["b"]["mean"], 5.0)


def test_the_app_imports_no_jax_and_training_code_never_imports_the_app(tmp_path):
  import glob  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ("import sys, importlib, pkgutil; from rlhf_jax.feedback import site; "
          f"site.create({str(tmp_path)!r}, None); site.setup({str(tmp_path)!r}); "
          "import rlhf_jax.feedback as f; "
          "[importlib.import_module('rlhf_jax.feedback.' + m.name) "
          " for m in pkgutil.iter_modules(f.__path__) if m.name not in ('__main__', 'wsgi')]; "
          "import rlhf_jax.feedback.urls; print(sorted(k for k in sys.modules if k == 'jax' "
          "or k.startswith('jax.') or k.startswith('flax')))")
  out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": repo}, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "[]"
  imports_app = re.compile(r"^\s*(from|import)\s+rlhf_jax\.feedback|import_module\([\"']rlhf_jax"
                           r"\.feedback", re.M)
  for path in glob.glob(os.path.join(repo, "rlhf_jax", "**", "*.py"), recursive=True):
    if os.sep + "feedback" + os.sep not in path:  # (human_round runs its command line)
      assert not imports_app.search(open(path).read()), path
