"""Layers only look down: the model, the data, the algorithms and the shared compiled machinery
never import the stages or the entry points above them (docs/architecture.md).

Read with `ast` (nothing is imported), so a late import inside a function counts too."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rlhf_jax")

# What sits below the stages: packages (every module under them) and single modules.
LOWER = ("models", "data", "rl", "reward", "dpo", "ilql", "sampling.py", "jit_steps.py",
         "train_state.py", "workdir_model.py", "checkpoint.py", "nonfinite.py", "losses.py",
         "metrics.py", "parallel.py", "distributed.py", "errors.py")
# What sits above them: the stages and the entry points.
UPPER = ("rlhf_jax.train", "rlhf_jax.stages", "rlhf_jax.main", "rlhf_jax.compare",
         "rlhf_jax.evaluate", "rlhf_jax.bench", "rlhf_jax.plan", "rlhf_jax.export")


def _modules(place: str) -> list[str]:
  """The .py files of `place` (a package folder or one module), relative to the package."""
  path = os.path.join(PACKAGE, place)
  if path.endswith(".py"):
    return [place]
  return sorted(os.path.relpath(os.path.join(d, f), PACKAGE)
                for d, _, files in os.walk(path) for f in files if f.endswith(".py"))


def _imported_names(source: str) -> list[str]:
  """Every dotted module name an `import` or `from ... import` in `source` names, including
  `from rlhf_jax import x` as `rlhf_jax.x`."""
  names = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.append(node.module)
      names += [f"{node.module}.{a.name}" for a in node.names]
  return names


def _is_upper(name: str) -> bool:
  return any(name == u or name.startswith(u + ".") for u in UPPER)


def test_the_checker_sees_late_and_from_imports():
  src = ("from rlhf_jax import stages\n"
         "def f():\n  from rlhf_jax.train.state import TrainState\n"
         "import rlhf_jax.models\n")
  upper = {n for n in _imported_names(src) if _is_upper(n)}
  assert {"rlhf_jax.stages", "rlhf_jax.train.state"} <= upper
  assert "rlhf_jax.models" not in upper and not _is_upper("rlhf_jax.trainer")


@pytest.mark.parametrize("module", [m for place in LOWER for m in _modules(place)])
def test_lower_layers_never_import_the_stages(module):
  with open(os.path.join(PACKAGE, module), encoding="utf-8") as f:
    bad = sorted({n for n in _imported_names(f.read()) if _is_upper(n)})
  assert not bad, f"rlhf_jax/{module} imports {bad}, which sit above it"
