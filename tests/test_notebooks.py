"""The colabs/ notebooks run top to bottom, headless, with the seconds-long settings
(RLHF_JAX_NOTEBOOK_SMALL=1), so they cannot rot."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The quickstart runs by default; the reward-model notebook (~90 s on a loaded 2-core machine) is slow.
NOTEBOOKS = ("quickstart.ipynb", pytest.param("reward_model.ipynb", marks=pytest.mark.slow))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  # The kernel is a fresh process: it must not see the 8 fake devices of this test session.
  monkeypatch.setenv("RLHF_JAX_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("RLHF_JAX_NOTEBOOK_WORKDIR", str(tmp_path / "runs"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(os.path.join(REPO, "colabs", name), as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()
  text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream")
  assert "small settings" in text
  if name == "quickstart.ipynb":
    assert "gold score" in text and "   PPO  [gold" in text
  else:
    assert "accuracy vs the labelers" in text and "elo" in text
