"""8 fake CPU devices for mesh tests (set before JAX initialises its backends), the real-data
folder, and the tiny built-in pipeline's finished upstream workdirs, built once per session."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import fcntl  # pylint: disable=g-import-not-at-top
import pathlib  # pylint: disable=g-import-not-at-top

import pytest  # pylint: disable=g-import-not-at-top

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long tests, run with -m slow")


@pytest.fixture
def shared_data():
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data folder {SHARED_DATA} is absent (only the developers' machines have it)")
  return SHARED_DATA


@pytest.fixture(scope="session")
def smoke_upstream(tmp_path_factory):
  """Root of finished pretrain/SFT/RM workdirs of `configs/ppo.py` with `rlhf_jax.smoke.PIPELINE`
  (`<root>/{pretrain,sft,reward}`). Shared by every module that runs a stage over the tiny
  pipeline, so read it only: a stage that writes goes in its own workdir. Under pytest-xdist the
  workers share one build: the first to take the lock builds it, the others wait and reuse it."""
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = tmp_path_factory.getbasetemp().parent / "smoke_upstream"
  else:
    root = tmp_path_factory.mktemp("smoke_upstream")
  root.mkdir(exist_ok=True)
  with open(root.parent / "smoke_upstream.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (root / "BUILT").exists():
      _build_smoke_upstream(str(root))
      (root / "BUILT").write_text("")
    fcntl.flock(lock, fcntl.LOCK_UN)
  before = _manifest(str(root))
  yield str(root)
  changed = sorted(set(before.items()) ^ set(_manifest(str(root)).items()))
  assert not changed, f"a test wrote into the shared smoke upstream {root}: {changed[:5]}"


def _build_smoke_upstream(root: str):
  from rlhf_jax import config_base, smoke  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import pipeline  # pylint: disable=g-import-not-at-top
  c = config_base.from_file(str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "ppo.py"))
  config_base.apply_overrides(c, {**smoke.PIPELINE, **smoke.workdirs(root)})
  pipeline.run_upstream(c)


def _manifest(root: str) -> dict[str, tuple[int, int]]:
  """{relative path: (size, mtime_ns)} of every file under `root`."""
  top = pathlib.Path(root)
  return {str(p.relative_to(top)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in top.rglob("*") if p.is_file()}
