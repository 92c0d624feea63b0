"""No function in rlhf_jax/ over 80 lines (`scripts/long_functions.py`, read with `ast`): a stage
reads top to bottom as named parts, not as one long body."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import long_functions  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def test_the_counter_counts_def_to_last_line(tmp_path):
  path = tmp_path / "m.py"
  path.write_text("@dec\ndef f():\n  def g():\n    return 1\n  return g\n\n"
                  "class C:\n  def m(self):\n    pass\n")
  assert sorted(long_functions.function_lengths(str(path))) == [
      (2, "C.m", 8), (2, "f.g", 3), (5, "f", 1)]


def test_no_function_in_the_package_is_over_80_lines():
  found = long_functions.long_functions([os.path.join(REPO, "rlhf_jax")], 80)
  assert not found, "\n".join(f"{n} lines: {where}" for n, where in found)
