"""DPO / IPO losses against NumPy, and the gradient's direction: raising the chosen response's
log-prob lowers the DPO loss."""

import jax
import numpy as np
import pytest

from rlhf_jax.dpo.losses import preference_loss


def _np_logsig(x):
  return -np.logaddexp(0.0, -x)


@pytest.mark.parametrize("kind,smooth", [("dpo", 0.0), ("dpo", 0.1), ("ipo", 0.0)])
def test_preference_loss_matches_numpy(kind, smooth):
  rng = np.random.default_rng(0)
  pc, pr, rc, rr = (rng.normal(-20, 3, 16).astype(np.float32) for _ in range(4))
  w = (rng.random(16) < 0.8).astype(np.float32)
  beta = 0.1
  loss, m = preference_loss(pc, pr, rc, rr, beta, kind, smooth, w)
  h = (pc - rc) - (pr - rr)
  if kind == "dpo":
    per = -(1 - smooth) * _np_logsig(beta * h) - smooth * _np_logsig(-beta * h)
  else:
    per = (h - 1 / (2 * beta)) ** 2
  np.testing.assert_allclose(float(loss), np.sum(per * w) / w.sum(), rtol=1e-5)
  rc_, rr_ = beta * (pc - rc), beta * (pr - rr)
  np.testing.assert_allclose(float(m["reward_margin"]), np.sum((rc_ - rr_) * w) / w.sum(),
                             rtol=1e-5)
  np.testing.assert_allclose(float(m["reward_accuracy"]), np.sum((rc_ > rr_) * w) / w.sum())


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
  pc, pr = np.float32([-10.0]), np.float32([-10.0])
  ref = np.float32([-10.0])
  g = jax.grad(lambda a, b: preference_loss(a, b, ref, ref, 0.5)[0], argnums=(0, 1))(pc, pr)
  assert float(g[0][0]) < 0 < float(g[1][0])
  # At h = 0 the DPO loss is log 2 and its gradient is β/2 in size.
  np.testing.assert_allclose(float(preference_loss(pc, pr, ref, ref, 0.5)[0]), np.log(2),
                             rtol=1e-6)
  np.testing.assert_allclose(abs(float(g[0][0])), 0.25, rtol=1e-6)


def test_bad_arguments():
  x = np.zeros(2, np.float32)
  with pytest.raises(ValueError, match="kind"):
    preference_loss(x, x, x, x, 0.1, "kto")
  with pytest.raises(ValueError, match="beta"):
    preference_loss(x, x, x, x, 0.0)
