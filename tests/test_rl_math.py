"""Every pure function of RL arithmetic against a plain NumPy / Python reference: KL estimators,
the adaptive KL controller, per-token rewards, GAE (random masks), whitening, the PPO / A2C
policy loss, the clipped value loss, entropy and explained variance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.rl import advantages as adv
from rlhf_jax.rl import kl, losses
from rlhf_jax.rl.config import RLConfig
from rlhf_jax.errors import ConfigError


def _prefix_masks(rng, b, n, allow_empty=True):
  lens = rng.integers(0 if allow_empty else 1, n + 1, size=b)
  return np.arange(n)[None, :] < lens[:, None]


def test_kl_estimators_match_numpy_and_their_expectations():
  rng = np.random.default_rng(0)
  logp, ref = rng.normal(-2, 1, (4, 7)), rng.normal(-2, 1, (4, 7))
  lr = ref - logp
  np.testing.assert_allclose(kl.kl_per_token(logp, ref, "k1"), logp - ref, rtol=1e-6)
  np.testing.assert_allclose(kl.kl_per_token(logp, ref, "k2"), 0.5 * lr ** 2, rtol=1e-6)
  np.testing.assert_allclose(kl.kl_per_token(logp, ref, "k3"), np.exp(lr) - 1 - lr, rtol=1e-5,
                             atol=1e-6)
  # Sampling from p, k1 and k3 average to KL(p || q) of two categoricals.
  p = np.array([0.5, 0.3, 0.2])
  q = np.array([0.2, 0.5, 0.3])
  true = float(np.sum(p * np.log(p / q)))
  x = rng.choice(3, size=400_000, p=p)
  lp, lq = np.log(p)[x], np.log(q)[x]
  for est in ("k1", "k3"):
    assert abs(float(np.mean(kl.kl_per_token(lp, lq, est))) - true) < 3e-3
  assert float(jnp.min(kl.kl_per_token(lp, lq, "k3"))) >= 0
  with pytest.raises(ValueError, match="k4"):
    kl.kl_per_token(logp, ref, "k4")


@pytest.mark.parametrize("estimator", kl.KL_ESTIMATORS)
def test_masked_kl_matches_numpy_and_stays_finite_past_eos(estimator):
  # Past EOS the reference log-probs are zeroed while the policy's may be far below -88 (a low
  # temperature, a peaked policy): k3's expm1 would overflow there. Masking before the
  # estimator keeps the value and its gradient finite, and the masked tail exactly 0.
  rng = np.random.default_rng(3)
  mask = _prefix_masks(rng, 5, 9)
  logp = np.where(mask, rng.normal(-2, 1, (5, 9)), -300.0).astype(np.float32)
  ref = np.where(mask, rng.normal(-2, 1, (5, 9)), 0.0).astype(np.float32)
  lr = (ref - logp).astype(np.float64)
  want = {"k1": -lr, "k2": 0.5 * lr ** 2, "k3": np.expm1(lr) - lr}[estimator]
  got = kl.masked_kl_per_token(jnp.asarray(logp), jnp.asarray(ref), jnp.asarray(mask), estimator)
  np.testing.assert_allclose(np.asarray(got), np.where(mask, want, 0.0), rtol=1e-5, atol=1e-6)
  grad = jax.grad(lambda lp: jnp.sum(kl.masked_kl_per_token(lp, ref, mask, estimator)))(
      jnp.asarray(logp))
  assert np.all(np.isfinite(np.asarray(grad)))
  assert np.all(np.asarray(grad)[~mask] == 0)


def test_adaptive_kl_controller_matches_ziegler_et_al():
  def ref(beta, kl_value, n, target, horizon):
    err = min(max(kl_value / target - 1, -0.2), 0.2)
    return beta * (1 + err * n / horizon)
  for kl_value in (0.0, 3.0, 6.0, 6.6, 50.0):
    got = float(kl.adaptive_kl_coef(0.1, kl_value, 64, 6.0, 10000.0))
    assert got == pytest.approx(ref(0.1, kl_value, 64, 6.0, 10000.0), rel=1e-6)
  # Over target: beta grows; under: it shrinks; the step is bounded by ±20% · n / horizon.
  assert float(kl.adaptive_kl_coef(0.1, 60.0, 64, 6.0, 10000.0)) == pytest.approx(
      0.1 * (1 + 0.2 * 64 / 10000))


def test_token_rewards_put_the_score_on_the_last_token():
  rng = np.random.default_rng(1)
  b, n = 6, 9
  mask = _prefix_masks(rng, b, n)
  klv = rng.normal(size=(b, n))
  score = rng.normal(size=b)
  beta = 0.3
  got = np.asarray(adv.token_rewards(jnp.asarray(score), jnp.asarray(klv), jnp.asarray(mask),
                                     beta))
  want = np.zeros((b, n))
  for i in range(b):
    L = int(mask[i].sum())
    for t in range(L):
      want[i, t] = -beta * klv[i, t]
    if L:
      want[i, L - 1] += score[i]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _gae_reference(rewards, values, mask, gamma, lam):
  """A plain Python loop: masked slots are not steps; the value after a row's last step is 0."""
  b, n = rewards.shape
  advs = np.zeros((b, n))
  for i in range(b):
    last = 0.0
    for t in reversed(range(n)):
      if not mask[i, t]:
        last = 0.0
        continue
      next_v = values[i, t + 1] if t + 1 < n and mask[i, t + 1] else 0.0
      next_a = last if t + 1 < n and mask[i, t + 1] else 0.0
      delta = rewards[i, t] + gamma * next_v - values[i, t]
      last = delta + gamma * lam * next_a
      advs[i, t] = last
  return advs, (advs + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 1.0), (0.9, 0.0), (1.0, 1.0)])
@pytest.mark.parametrize("prefix", [True, False])
def test_gae_reverse_scan_equals_a_python_loop(gamma, lam, prefix):
  rng = np.random.default_rng(2)
  b, n = 8, 13
  mask = _prefix_masks(rng, b, n) if prefix else rng.random((b, n)) < 0.7
  rewards = rng.normal(size=(b, n)) * mask
  values = rng.normal(size=(b, n))
  got_a, got_r = adv.gae(jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32),
                         jnp.asarray(mask), gamma, lam)
  want_a, want_r = _gae_reference(rewards, values * mask, mask, gamma, lam)
  np.testing.assert_allclose(np.asarray(got_a), want_a, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got_r), want_r, rtol=1e-5, atol=1e-5)


def test_gae_with_lambda_one_and_gamma_one_is_return_minus_value():
  rng = np.random.default_rng(3)
  mask = _prefix_masks(rng, 5, 8, allow_empty=False)
  rewards = rng.normal(size=(5, 8)) * mask
  values = rng.normal(size=(5, 8)) * mask
  a, r = adv.gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), 1.0, 1.0)
  togo = np.cumsum(rewards[:, ::-1], axis=1)[:, ::-1] * mask
  np.testing.assert_allclose(np.asarray(r), togo, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(a), togo - values, rtol=1e-5, atol=1e-5)


def test_whitening_matches_numpy_over_the_mask():
  rng = np.random.default_rng(4)
  x = rng.normal(3.0, 2.0, (6, 10))
  mask = _prefix_masks(rng, 6, 10, allow_empty=False)
  got = np.asarray(adv.whiten(jnp.asarray(x), jnp.asarray(mask)))
  vals = x[mask]
  want = np.where(mask, (x - vals.mean()) / np.sqrt(vals.var(ddof=1) + 1e-8), 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert abs(got[mask].mean()) < 1e-5 and abs(got[mask].std(ddof=1) - 1) < 1e-4
  kept = np.asarray(adv.whiten(jnp.asarray(x), jnp.asarray(mask), shift_mean=False))
  # Without the shift, the mean is kept and only the spread is normalised (TRL's convention).
  np.testing.assert_allclose(kept[mask].mean(), vals.mean(), rtol=1e-4)
  np.testing.assert_allclose(kept[mask].std(ddof=1), 1.0, rtol=1e-4)


def _np_masked_mean(x, m):
  return (x * m).sum() / max(m.sum(), 1)


@pytest.mark.parametrize("clip", [0.2, 0.0])
def test_policy_loss_matches_numpy(clip):
  rng = np.random.default_rng(5)
  b, n = 4, 9
  mask = _prefix_masks(rng, b, n, allow_empty=False)
  logp = rng.normal(-2, 0.5, (b, n))
  old = logp + rng.normal(0, 0.3, (b, n))
  a = rng.normal(size=(b, n))
  loss, met = losses.policy_loss(jnp.asarray(logp), jnp.asarray(old), jnp.asarray(a),
                                 jnp.asarray(mask), clip)
  ratio = np.exp(logp - old)
  if clip:
    per = np.maximum(-a * ratio, -a * np.clip(ratio, 1 - clip, 1 + clip))
    frac = _np_masked_mean((-a * np.clip(ratio, 1 - clip, 1 + clip) > -a * ratio) * 1.0, mask)
  else:
    per, frac = -a * ratio, 0.0
  assert float(loss) == pytest.approx(_np_masked_mean(per, mask), rel=1e-5)
  assert float(met["clip_frac"]) == pytest.approx(frac, abs=1e-7)
  assert float(met["approx_kl"]) == pytest.approx(
      _np_masked_mean(0.5 * (logp - old) ** 2, mask), rel=1e-5)


def test_a2c_gradient_is_advantage_times_score_function():
  """With ρ = 1 (on-policy), ∇ of the unclipped loss equals −mean(A · ∇log π)."""
  rng = np.random.default_rng(6)
  mask = jnp.asarray(_prefix_masks(rng, 3, 5, allow_empty=False))
  a = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  theta = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
  logp = lambda th: jnp.log(jax.nn.sigmoid(th))  # noqa: E731
  g = jax.grad(lambda th: losses.policy_loss(logp(th), jax.lax.stop_gradient(logp(th)), a, mask,
                                             0.0)[0])(theta)
  g_ref = jax.grad(lambda th: -jnp.sum(a * logp(th) * mask) / jnp.sum(mask))(theta)
  np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("clip", [0.2, 0.0])
def test_value_loss_matches_numpy(clip):
  rng = np.random.default_rng(7)
  mask = _prefix_masks(rng, 4, 8, allow_empty=False)
  v, old, ret = (rng.normal(size=(4, 8)) for _ in range(3))
  loss, _ = losses.value_loss(jnp.asarray(v), jnp.asarray(old), jnp.asarray(ret),
                              jnp.asarray(mask), clip)
  err = (v - ret) ** 2
  if clip:
    err = np.maximum(err, (old + np.clip(v - old, -clip, clip) - ret) ** 2)
  assert float(loss) == pytest.approx(0.5 * _np_masked_mean(err, mask), rel=1e-5)


def test_entropy_and_explained_variance_match_numpy():
  rng = np.random.default_rng(8)
  logits = rng.normal(size=(2, 5, 11))
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  ent = -(p * np.log(p)).sum(-1)
  assert float(losses.entropy(jnp.asarray(logits), jnp.asarray(mask))) == pytest.approx(
      _np_masked_mean(ent, mask), rel=1e-5)
  v, r = rng.normal(size=(2, 5)), rng.normal(size=(2, 5))
  want = 1 - np.var((r - v)[mask]) / np.var(r[mask])
  assert float(losses.explained_variance(jnp.asarray(v), jnp.asarray(r), jnp.asarray(mask))) == \
      pytest.approx(want, rel=1e-4)


def test_rl_config_names_the_bad_field():
  with pytest.raises(ConfigError, match="rl.kl_estimator"):
    RLConfig(kl_estimator="k9")
  with pytest.raises(ConfigError, match="minibatches"):
    RLConfig(rollout_batch=10, minibatches=3)
  with pytest.raises(ConfigError, match=r"unknown field\(s\) \['epoch'\]"):
    RLConfig.from_dict({"epoch": 2})


def test_rl_config_refuses_filtered_sampling_and_a_stuck_kl_controller():
  # Top-k / top-p sample another distribution than the policy whose log-probs PPO reads.
  with pytest.raises(ConfigError, match=r"rl.top_k=40.*Set rl.top_k=0"):
    RLConfig(top_k=40)
  with pytest.raises(ConfigError, match=r"rl.top_p=0.9.*Set rl.top_p=1.0"):
    RLConfig(top_p=0.9)
  # The adaptive controller multiplies beta: from 0 it never moves.
  with pytest.raises(ConfigError, match=r"rl.adaptive_kl=True with rl.kl_coef=0"):
    RLConfig(kl_coef=0.0)
  assert RLConfig(kl_coef=0.0, adaptive_kl=False).kl_coef == 0.0  # a fixed beta of 0 is fine


def test_group_advantages_match_numpy():
  from rlhf_jax.rl import group_advantages as ga  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  r = rng.normal(size=(6, 4)).astype(np.float32)
  mean = r.mean(axis=1, keepdims=True)
  np.testing.assert_allclose(ga.grpo_advantages(r, "group", 1e-4),
                             (r - mean) / (r.std(axis=1, keepdims=True) + 1e-4), rtol=1e-5)
  np.testing.assert_allclose(ga.grpo_advantages(r, "batch", 1e-4), (r - mean) / (r.std() + 1e-4),
                             rtol=1e-5)
  np.testing.assert_allclose(ga.grpo_advantages(r, "none"), r - mean, rtol=1e-5, atol=1e-6)
  # RLOO against its definition, one response at a time.
  want = np.array([[r[p, i] - np.mean(np.delete(r[p], i)) for i in range(4)] for p in range(6)])
  np.testing.assert_allclose(ga.rloo_advantages(r), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ga.rloo_advantages(r), 4 / 3 * (r - mean), rtol=1e-5, atol=1e-6)
  # A group whose rewards are all equal carries no signal: zero advantage, no division by zero.
  same = np.ones((2, 4), np.float32)
  assert np.all(np.asarray(ga.grpo_advantages(same)) == 0)
  assert np.all(np.asarray(ga.rloo_advantages(same)) == 0)
  mask = _prefix_masks(rng, 3, 5)
  a = np.array([1.0, -2.0, 0.5], np.float32)
  np.testing.assert_array_equal(ga.per_token(a, mask), np.where(mask, a[:, None], 0.0))
  with pytest.raises(ValueError):
    ga.rloo_advantages(r[:, :1])
  with pytest.raises(ValueError):
    ga.grpo_advantages(r, "token")
