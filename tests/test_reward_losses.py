"""Reward-model arithmetic against NumPy references: the ranking loss, the K-way loss from one
forward pass against its pairs computed one by one, reading the score at the last real token,
combining several reward models, the normalisation, and the held-out metrics."""

import jax
import jax.numpy as jnp
import ml_collections as mc
import numpy as np
import pytest

from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.models import ModelConfig, forward, init_params
from rlhf_jax.reward import combine, evaluate
from rlhf_jax.reward import model as rm_model
from rlhf_jax.reward.losses import (last_token_scores, pooled_scores, preference_matrix,
                                    ranking_loss)
from rlhf_jax.train.rm_steps import RMLossConfig, response_rewards, rm_loss


def _np_ranking_loss(r, ranks, margin, per_prompt, center):
  """A plain-loop reference: every ordered pair of every element."""
  per_elem, all_terms, accs = [], [], []
  for b in range(r.shape[0]):
    terms = []
    for i in range(r.shape[1]):
      for j in range(r.shape[1]):
        if ranks[b, i] >= 0 and ranks[b, j] >= 0 and ranks[b, i] < ranks[b, j]:
          d = r[b, i] - r[b, j] - margin[b, i, j]
          terms.append(np.log1p(np.exp(-d)))
          accs.append(float(r[b, i] > r[b, j]))
    if terms:
      per_elem.append(np.mean(terms))
      all_terms += terms
  pref = np.mean(per_elem) if per_prompt else np.mean(all_terms)
  present = ranks >= 0
  return pref + center * np.mean(r[present] ** 2), np.mean(accs), len(all_terms)


@pytest.mark.parametrize("per_prompt", [True, False])
def test_ranking_loss_matches_numpy(per_prompt):
  rng = np.random.default_rng(0)
  b, k = 6, 5
  r = rng.normal(size=(b, k)).astype(np.float32)
  ranks = rng.integers(0, 3, size=(b, k))  # ties included
  ranks[0, 3:] = -1  # empty slots
  ranks[1] = [0, 0, 0, -1, -1]  # all tied: no pair, the element counts for nothing
  ranks[2] = [2, 1, 0, 3, 4]
  margin = rng.uniform(0, 1, size=(b, k, k)).astype(np.float32)
  loss, m = ranking_loss(jnp.asarray(r), jnp.asarray(ranks), jnp.asarray(margin), per_prompt,
                         center_coef=0.1)
  want, acc, pairs = _np_ranking_loss(r, ranks, margin, per_prompt, 0.1)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(m["pair_accuracy"]), acc, rtol=1e-6)
  assert int(m["pairs"]) == pairs


def test_pairwise_loss_is_bradley_terry():
  r = jnp.array([[2.0, 0.5], [-1.0, 1.0]])
  ranks = jnp.array([[0, 1], [0, 1]])
  loss, _ = ranking_loss(r, ranks)
  want = np.mean([-np.log(1 / (1 + np.exp(-1.5))), -np.log(1 / (1 + np.exp(2.0)))])
  np.testing.assert_allclose(float(loss), want, rtol=1e-6)
  # A margin asks for a wider gap: the loss grows by exactly what the shifted sigmoid says.
  loss_m, _ = ranking_loss(r, ranks, jnp.full((2, 2, 2), 0.5))
  want_m = np.mean([np.log1p(np.exp(-(1.5 - 0.5))), np.log1p(np.exp(-(-2.0 - 0.5)))])
  np.testing.assert_allclose(float(loss_m), want_m, rtol=1e-6)


def test_preference_matrix():
  better = np.asarray(preference_matrix(jnp.array([[1, 0, -1, 1]])))[0]
  want = np.zeros((4, 4))
  want[1, 0] = want[1, 3] = 1  # rank 0 beats both rank-1 responses; the rank-1 pair is a tie
  np.testing.assert_array_equal(better, want)


def test_last_token_scores_right_and_left_padding():
  s = jnp.arange(12, dtype=jnp.float32).reshape(2, 6)
  right = jnp.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
  left = jnp.array([[0, 0, 0, 1, 1, 1], [0, 1, 1, 1, 1, 0]], bool)
  np.testing.assert_array_equal(last_token_scores(s, right), [2.0, 11.0])
  np.testing.assert_array_equal(last_token_scores(s, left), [5.0, 10.0])


def test_pooled_scores_match_numpy():
  rng = np.random.default_rng(3)
  s = rng.normal(size=(3, 7)).astype(np.float32)
  mask = np.zeros((3, 7), bool)
  mask[0, 2:] = True  # left padded
  mask[1, :4] = True  # right padded
  np.testing.assert_allclose(pooled_scores(s, mask, "sum", 0.25),
                             0.25 * np.array([s[0, 2:].sum(), s[1, :4].sum(), 0.0]), rtol=1e-6)
  np.testing.assert_allclose(pooled_scores(s, mask, "mean"),
                             [s[0, 2:].mean(), s[1, :4].mean(), 0.0], rtol=1e-6)
  np.testing.assert_array_equal(pooled_scores(s, mask, "last")[:2], [s[0, 6], s[1, 3]])
  with pytest.raises(ValueError, match="pooling"):
    pooled_scores(s, mask, "max")


def test_sum_pooled_reward_model_rewards_are_additive_and_padding_free():
  cfg = TINY.replace(score_pooling="sum")
  params = init_params(cfg, jax.random.key(2), heads="score")
  rng = np.random.default_rng(4)
  tokens = rng.integers(3, 50, size=(1, 2, 12)).astype(np.int32)
  tokens[0, 1, :5] = tokens[0, 0, :5]  # a shared 5-token prompt
  mask = np.zeros((1, 2, 12), bool)
  mask[0, 0, :12] = True
  mask[0, 1, :8] = True
  r = np.asarray(response_rewards(params, cfg, tokens, mask))[0]
  per_tok = np.asarray(forward(cfg, params, tokens.reshape(2, 12), mask.reshape(2, 12),
                               outputs=("scores",), heads="score")["scores"])
  want = [per_tok[0].sum() / cfg.max_seq_len, per_tok[1, :8].sum() / cfg.max_seq_len]
  np.testing.assert_allclose(r, want, rtol=1e-5)
  # The difference of two responses to one prompt holds no prompt term: the prompt's scores
  # are the same in both rows (causal attention), so they cancel.
  np.testing.assert_allclose(per_tok[0, :5], per_tok[1, :5], rtol=1e-5, atol=1e-6)
  with pytest.raises(ConfigError, match="score_pooling"):
    TINY.replace(score_pooling="max")


TINY = ModelConfig(vocab_size=50, hidden=32, num_layers=2, num_heads=4, num_kv_heads=2,
                   mlp_dim=64, max_seq_len=16)


def test_k_way_from_one_forward_equals_its_pairs_one_by_one():
  params = init_params(TINY, jax.random.key(0), heads="score")
  rng = np.random.default_rng(1)
  k, t = 4, 10
  tokens = rng.integers(3, 50, size=(1, k, t)).astype(np.int32)
  lens = [10, 7, 4, 9]
  mask = np.zeros((1, k, t), bool)
  for j, n in enumerate(lens):
    mask[0, j, :n] = True
  ranks = np.array([[2, 0, 3, 1]], np.int32)
  batch = {"tokens": tokens, "attention_mask": mask, "ranks": ranks,
           "margin": np.zeros((1,), np.float32)}
  loss, m = rm_loss(params, TINY, batch, RMLossConfig(per_prompt=True))
  # Each pair through the model on its own: a [1, 2, T] batch, the better response first.
  terms = []
  for i in range(k):
    for j in range(k):
      if ranks[0, i] < ranks[0, j]:
        pair = {"tokens": tokens[:, [i, j]], "attention_mask": mask[:, [i, j]],
                "ranks": np.array([[0, 1]], np.int32), "margin": np.zeros((1,), np.float32)}
        terms.append(float(rm_loss(params, TINY, pair, RMLossConfig())[0]))
  assert len(terms) == 6 and int(m["pairs"]) == 6
  np.testing.assert_allclose(float(loss), np.mean(terms), rtol=1e-5)
  # And the rewards are those of each row alone: padding and batch-mates change nothing.
  alone = [float(response_rewards(params, TINY, tokens[:, [j], :lens[j]],
                                  mask[:, [j], :lens[j]])[0, 0]) for j in range(k)]
  np.testing.assert_allclose(np.asarray(response_rewards(params, TINY, tokens, mask))[0], alone,
                             rtol=1e-5, atol=1e-6)


def test_combine_rewards_weighted_sum_and_safety_gate():
  rng = np.random.default_rng(0)
  h, s = rng.normal(size=8), rng.normal(size=8)
  rule = combine.CombineRule("weighted_sum", weights=(("helpful", 1.0), ("safety", 0.5)))
  np.testing.assert_allclose(combine.combine_rewards({"helpful": h, "safety": s}, rule),
                             h + 0.5 * s, rtol=1e-6)
  gate = combine.CombineRule("safety_gate", safety="safety", helpful="helpful", threshold=0.15)
  np.testing.assert_allclose(combine.combine_rewards({"helpful": h, "safety": s}, gate),
                             np.where(s < 0.15, s, h), rtol=1e-6)
  flagged = np.zeros(8, bool)
  flagged[0] = True
  np.testing.assert_allclose(combine.combine_rewards({"helpful": h, "safety": s}, gate, flagged),
                             np.where((s < 0.15) | flagged, s, h), rtol=1e-6)
  with pytest.raises(ConfigError, match="safety"):
    combine.combine_rewards({"helpful": h}, gate)


def test_parse_rewards_config():
  sec = mc.ConfigDict(combine.rewards_section())
  sec.models = "helpful=runs/rm_h, runs/rm_safety"
  sec.weights = "helpful=1,rm_safety=0.3"
  models, rule = combine.parse_rewards(sec)
  assert models == [("helpful", "runs/rm_h"), ("rm_safety", "runs/rm_safety")]
  assert dict(rule.weights) == {"helpful": 1.0, "rm_safety": 0.3}
  sec.weights = "helpfull=1"
  with pytest.raises(ConfigError, match="helpfull"):
    combine.parse_rewards(sec)
  sec.weights, sec.models = "", "a=x,a=y"
  with pytest.raises(ConfigError, match="more than once"):
    combine.parse_rewards(sec)
  sec.models, sec.combine = "x", "max"
  with pytest.raises(ConfigError, match="reward.combine"):
    combine.parse_rewards(sec)


def test_fit_normalization():
  r = np.random.default_rng(0).normal(3.0, 2.5, size=1000)
  n = rm_model.fit_normalization(r)
  z = n["gain"] * r + n["bias"]
  np.testing.assert_allclose([z.mean(), z.std()], [0.0, 1.0], atol=1e-9)
  with pytest.raises(DataError, match="std 0"):
    rm_model.fit_normalization(np.ones(5))


def test_evaluate_rewards_by_hand():
  rewards = np.array([[1.0, 0.0, 2.0], [0.5, 0.5, -1.0]])
  ranks = np.array([[0, 1, -1], [1, 0, 2]])
  lens = np.array([[5, 3, 0], [2, 4, 4]])
  gold = np.array([[3.0, 1.0, np.nan], [0.0, 2.0, 1.0]])
  ev = evaluate.evaluate_rewards(rewards, ranks, lens, gold)
  # Ordered pairs: (0: 0>1), (1: 1>0, 1>2, 0>2) -> rewards right, tie, right, right.
  assert ev["pairs"] == 4
  assert ev["accuracy"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
  # Longer wins: 5>3 yes; 4>2 yes; 4=4 tie; 2<4 no.
  assert ev["longer_wins"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
  assert ev["shorter_wins"] == pytest.approx(1 - ev["longer_wins"])
  # Gold over unordered present pairs: (0,1) agree; (0,1) of row 1: reward tie -> 0.5;
  # (0,2): r 0.5 > -1, gold 0 < 1 -> disagree; (1,2): r 0.5 > -1, gold 2 > 1 -> agree.
  assert ev["gold_pairs"] == 4
  assert ev["gold_agreement"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
  assert sum(row["pairs"] for row in ev["calibration_table"]) == 4
  # Against longer-wins, pairs where neither judge ties: only row 1's (0 > 2) splits them
  # (reward right, length wrong).
  assert (ev["model_only_right"], ev["baseline_only_right"], ev["paired_p_value"]) == (1, 0, 1.0)


def test_paired_sign_test_is_the_exact_binomial():
  # 8 against 2: P(X <= 2 | 10, 1/2) = (1 + 10 + 45) / 1024, doubled.
  assert evaluate.paired_sign_test(8, 2)["p_value"] == pytest.approx(2 * 56 / 1024)
  assert evaluate.paired_sign_test(2, 8)["p_value"] == pytest.approx(2 * 56 / 1024)
  assert evaluate.paired_sign_test(5, 5)["p_value"] == 1.0
  assert evaluate.paired_sign_test(0, 0)["p_value"] == 1.0
  assert evaluate.paired_sign_test(30, 5)["p_value"] < 1e-4


def test_lm_regulariser_adds_the_next_token_loss_of_every_row():
  from rlhf_jax import losses
  from rlhf_jax.models import forward
  params = init_params(TINY, jax.random.key(0), heads="lm+score")
  rng = np.random.default_rng(2)
  tokens = rng.integers(3, 50, size=(2, 2, 8)).astype(np.int32)
  mask = np.ones((2, 2, 8), bool)
  mask[1, 0, 5:] = False
  batch = {"tokens": tokens, "attention_mask": mask, "ranks": np.array([[0, 1], [1, 0]]),
           "margin": np.zeros((2,), np.float32)}
  with_lm, m = rm_loss(params, TINY, batch, RMLossConfig(lm_coef=0.5))
  pref, _ = rm_loss(params, TINY, batch, RMLossConfig())
  logits = forward(TINY, params, tokens.reshape(4, 8), mask.reshape(4, 8), heads="lm+score",
                   outputs=("logits",))["logits"]
  total, count = losses.masked_nll(logits, tokens.reshape(4, 8), mask.reshape(4, 8))
  np.testing.assert_allclose(float(with_lm), float(pref) + 0.5 * float(total / count), rtol=1e-5)
  np.testing.assert_allclose(float(m["lm_loss"]), float(total / count), rtol=1e-5)
