"""Reading numbers out of free text, as rule-based rewards compare them.

`numbers_in(text)` finds every number written with digits ("1,234", "$18", "-5", "18.", "3.50",
"40%", "12 dollars") and gives each as a `Decimal`, so equal values compare equal however they
are written (18 == 18.0 == 18.00, 1,000 == 1000). A minus sign counts only when it does not
follow a word or a digit ("16-3" is a subtraction: 16 and 3, not 16 and -3).
Not for: number words ("seven"; see `rlhf_jax.data.checkable_task`), fractions or formulas.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# A sign not glued to a word or digit, an optional currency sign, thousands groups or plain
# digits, an optional decimal part (a trailing "." with no digits after it is punctuation).
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])(?P<sign>-)\s?)?\$?\s?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?")


def numbers_in(text: str) -> list[Decimal]:
  """Every number in `text`, in order, as Decimal (commas, "$", "%", units dropped)."""
  out = []
  for m in _NUMBER.finditer(text or ""):
    digits = m.group("int").replace(",", "") + (m.group("frac") or "")
    try:
      value = Decimal(digits)
    except InvalidOperation:  # the pattern only lets digits through; kept for safety
      continue
    out.append(-value if m.group("sign") else value)
  return out


def last_number(text: str) -> Decimal | None:
  """The last number in `text`, or None when it has none."""
  found = numbers_in(text)
  return found[-1] if found else None


def first_number(text: str) -> Decimal | None:
  """The first number in `text`, or None when it has none."""
  found = numbers_in(text)
  return found[0] if found else None


def same_number(a: Decimal | None, b: Decimal | None) -> bool:
  """a == b as values (18 == 18.0); False when either is missing."""
  return a is not None and b is not None and a == b
