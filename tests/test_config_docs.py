"""Every key of every config in configs/ is documented where it is defined: its defining line
(a dict entry, a dataclass field, or a `c.section.key = ...` assignment) carries a comment, or
the line above it is one. The sources are the shared sections (config_base), the dataclasses
that check sections (ModelConfig, RLConfig, the rewards section) and the config files."""

import glob
import os
import re

import pytest

from rlhf_jax import config_base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
SOURCES = CONFIGS + [os.path.join(REPO, p) for p in (
    "rlhf_jax/config_base.py", "rlhf_jax/models/config.py", "rlhf_jax/rl/config.py",
    "rlhf_jax/reward/combine.py")]


def _leaves(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _leaves(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def _documented(name: str, lines_by_file) -> bool:
  n = re.escape(name)
  defining = re.compile(rf'^\s*(?:"{n}"\s*:|{n}\s*:\s*[\w\[\]|., ]+=|c(?:\.\w+)*\.{n}\s*=)')
  for lines in lines_by_file:
    for i, line in enumerate(lines):
      if defining.search(line) and ("#" in line or (i and lines[i - 1].strip().startswith("#"))):
        return True
  return False


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_key_has_a_comment_where_it_is_defined(path):
  lines_by_file = [open(p, encoding="utf-8").read().splitlines() for p in SOURCES]
  config = config_base.from_file(path)
  keys = [k for k in _leaves(config.to_dict()) if not k.startswith("pipeline.")]
  assert len(keys) > 20
  missing = [k for k in keys if not _documented(k.rsplit(".", 1)[-1], lines_by_file)]
  assert not missing, f"{os.path.basename(path)}: no comment where these keys are defined: {missing}"
