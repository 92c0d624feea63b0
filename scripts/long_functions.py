"""Lists the functions of rlhf_jax/ longer than a limit (default 80 lines), longest first.

  python scripts/long_functions.py [--limit 80] [paths ...]

Read with `ast` (nothing is imported). A function's length is its source lines from `def` (or
its first decorator) to its last line, nested functions included in their parent's count and
also listed on their own. Exit status 1 when any is over the limit.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def function_lengths(path: str) -> list[tuple[int, str, int]]:
  """[(lines, qualified name, first line)] of every function and method in the file at `path`."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  out = []

  def visit(node, prefix: str):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = f"{prefix}{child.name}"
        if not isinstance(child, ast.ClassDef):
          start = min([child.lineno] + [d.lineno for d in child.decorator_list])
          out.append((child.end_lineno - start + 1, name, start))
        visit(child, name + ".")
      else:
        visit(child, prefix)

  visit(tree, "")
  return out


def python_files(paths: list[str]) -> list[str]:
  files = []
  for p in paths:
    if p.endswith(".py"):
      files.append(p)
      continue
    for d, dirs, names in os.walk(p):
      dirs[:] = sorted(x for x in dirs if x not in ("migrations", "__pycache__"))
      files += [os.path.join(d, n) for n in sorted(names) if n.endswith(".py")]
  return files


def long_functions(paths: list[str], limit: int) -> list[tuple[int, str]]:
  """[(lines, "file:line name")] of the functions over `limit` lines, longest first."""
  found = []
  for path in python_files(paths):
    rel = os.path.relpath(path, ROOT)
    found += [(n, f"{rel}:{line} {name}") for n, name, line in function_lengths(path)
              if n > limit]
  return sorted(found, key=lambda x: (-x[0], x[1]))


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--limit", type=int, default=80)
  ap.add_argument("paths", nargs="*", default=[os.path.join(ROOT, "rlhf_jax")])
  args = ap.parse_args(argv)
  found = long_functions(args.paths, args.limit)
  for n, where in found:
    print(f"{n:5d}  {where}")
  print(f"{len(found)} function(s) over {args.limit} lines")
  return 1 if found else 0


if __name__ == "__main__":
  sys.exit(main())
