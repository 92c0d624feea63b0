"""A user's own reward functions, loaded by `module:function` in tests/test_reward_functions.py
(this folder is on sys.path under pytest) and in the RL stage tests."""

import threading

CALLS = []  # (prompt, response) of every call of `counted`, to count calls per row
_LOCK = threading.Lock()


def says_answer(prompt, response, meta):
  """1.0 when the response mentions the word 'answer'; scaled by meta's optional 'scale'."""
  del prompt
  return float("answer" in response.split()) * float(meta.get("scale", 1.0))


def counted(prompt, response, meta):
  """0.5 on every row, recording the call (a list append under a lock: threads call it)."""
  del meta
  with _LOCK:
    CALLS.append((prompt, response))
  return 0.5


def raises(prompt, response, meta):
  del prompt, meta
  if "seven" in response:
    raise ValueError("cannot parse this answer")
  return 1.0


def hangs(prompt, response, meta):
  del prompt, response, meta
  threading.Event().wait(30)  # a daemon thread: the test process does not wait for it
  return 1.0


def not_a_number(prompt, response, meta):
  del prompt, response, meta
  return "yes"


def always_raises(prompt, response, meta):
  del prompt, response, meta
  raise RuntimeError("the checker crashed")


def logged(prompt, response, meta):
  """1.0 for a right checkable answer, logging "pid<TAB>prompt" to $REWARD_FN_LOG per call (the
  multi-process test counts each process's calls)."""
  import os  # pylint: disable=g-import-not-at-top
  with _LOCK, open(os.environ["REWARD_FN_LOG"], "a", encoding="utf-8") as f:
    f.write(f"{os.getpid()}\t{prompt}\n")
  return float(response.split()[-2:-1] == [meta["reference"]])
