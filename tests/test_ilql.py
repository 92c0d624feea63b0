"""ILQL: the expectile, TD and CQL losses and the shaped logits against NumPy, the Polyak
update, β = 0 decoding reproducing the base policy's samples bit for bit inside the same
sampler, the scored-data loaders and their errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import sampling
from rlhf_jax.data import scored
from rlhf_jax.data.tokenizer import load_tokenizer
from rlhf_jax.errors import ConfigError, DataError
from rlhf_jax.ilql import decode, heads, losses
from rlhf_jax.ilql.config import ILQLConfig
from rlhf_jax.models import ModelConfig, init_params


def _batch(seed=0, b=5, n=7, v=11):
  rng = np.random.default_rng(seed)
  lens = rng.integers(0, n + 1, b)
  lens[0] = n  # one full row
  mask = np.arange(n)[None, :] < lens[:, None]
  return rng, mask, lens


def _np_mean(x, m):
  return np.sum(x * m) / max(m.sum(), 1)


def test_td_targets_and_loss_match_numpy():
  rng, mask, lens = _batch()
  b, n = mask.shape
  v = rng.normal(size=(b, n)).astype(np.float32)
  q = rng.normal(size=(b, n)).astype(np.float32)
  reward = rng.normal(size=b).astype(np.float32)
  for gamma in (1.0, 0.9):
    want = np.zeros((b, n), np.float32)
    for i in range(b):
      for t in range(lens[i]):
        want[i, t] = reward[i] if t == lens[i] - 1 else gamma * v[i, t + 1]
    y = np.asarray(losses.td_targets(v, reward, mask, gamma))
    np.testing.assert_allclose(y, want, rtol=1e-6)
    np.testing.assert_allclose(float(losses.td_loss(q, y, mask)), _np_mean((q - want) ** 2, mask),
                               rtol=1e-5)
  r = np.asarray(losses.terminal_rewards(reward, mask))
  assert np.count_nonzero(r) == np.count_nonzero(lens)
  assert all(r[i, lens[i] - 1] == reward[i] for i in range(b) if lens[i])


def test_expectile_loss_matches_numpy():
  rng, mask, _ = _batch(1)
  q = rng.normal(size=mask.shape).astype(np.float32)
  v = rng.normal(size=mask.shape).astype(np.float32)
  for tau in (0.5, 0.7, 0.9):
    u = q - v
    w = np.where(u < 0, 1 - tau, tau)
    np.testing.assert_allclose(float(losses.expectile_loss(q, v, mask, tau)),
                               _np_mean(w * u ** 2, mask), rtol=1e-5)
  # τ = 0.9 pulls V above the mean of the Qs: its minimiser is the upper expectile.
  qs = np.float32([0.0, 1.0, 5.0])[None, :]
  grid = np.linspace(0, 5, 501, dtype=np.float32)
  ls = [float(losses.expectile_loss(qs, np.full_like(qs, g), np.ones_like(qs, bool), 0.9))
        for g in grid]
  assert grid[int(np.argmin(ls))] > qs.mean() + 1


def test_cql_loss_matches_numpy():
  rng, mask, _ = _batch(2)
  q = rng.normal(size=mask.shape + (11,)).astype(np.float32) * 3
  a = rng.integers(0, 11, mask.shape).astype(np.int32)
  mx = q.max(-1, keepdims=True)
  lse = (mx + np.log(np.exp(q - mx).sum(-1, keepdims=True)))[..., 0]
  taken = np.take_along_axis(q, a[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(losses.cql_loss(q, a, mask)), _np_mean(lse - taken, mask),
                             rtol=1e-5)


def test_shaped_logits_match_numpy_and_the_advantage_weighted_policy():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(4, 9)).astype(np.float32)
  q = rng.normal(size=(4, 9)).astype(np.float32)
  v = rng.normal(size=4).astype(np.float32)
  for beta in (0.0, 0.5, 4.0):
    got = np.asarray(losses.shaped_logits(logits, q, v, beta))
    np.testing.assert_allclose(got, logits + beta * (q - v[:, None]), rtol=1e-6)
    # softmax(shaped) ∝ π(a|s)·exp(β·(Q − V)): the policy ILQL decodes from.
    pi = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    want = pi * np.exp(beta * (q - v[:, None]))
    want /= want.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(got)), want, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(losses.shaped_logits(logits, q, v, 0.0)), logits)


def test_polyak_moves_the_target_by_its_rate():
  t = {"q1": {"w": np.zeros(3, np.float32)}, "q2": {"w": np.ones(3, np.float32)}}
  o = {"q1": {"w": np.full(3, 2.0, np.float32)}, "q2": {"w": np.ones(3, np.float32) * 3},
       "v": {"w": np.zeros(1)}}
  new = heads.polyak(t, o, 0.25)
  np.testing.assert_allclose(np.asarray(new["q1"]["w"]), 0.5)
  np.testing.assert_allclose(np.asarray(new["q2"]["w"]), 1.5)
  assert set(new) == {"q1", "q2"}


def test_bad_hyper_parameters_are_named():
  with pytest.raises(ConfigError, match="ilql.tau"):
    ILQLConfig(tau=1.0)
  with pytest.raises(ConfigError, match="ilql.polyak"):
    ILQLConfig(polyak=0.0)
  with pytest.raises(ConfigError, match="unknown field.*bogus"):
    ILQLConfig.from_dict({"bogus": 1})


def _tiny_policy():
  cfg = ModelConfig(vocab_size=32, hidden=16, mlp_dim=32, num_layers=1, num_heads=2,
                    num_kv_heads=2, max_seq_len=16)
  params = init_params(cfg, jax.random.PRNGKey(0))
  h = jax.tree.map(lambda x: x * 50.0 if x.ndim == 2 else x + 1.0,  # heads that matter
                   heads.Heads(cfg, 24).init(jax.random.PRNGKey(1), jnp.zeros((1, 16)))["params"])
  return cfg, params, h


def _sample(beta=None):
  """(prompt, mask, generate's output) of the tiny policy; beta None: without the hook."""
  cfg, params, h = _tiny_policy()
  prompt = jnp.asarray(np.random.default_rng(0).integers(3, 32, (6, 5)), jnp.int32)
  mask = jnp.ones_like(prompt, bool).at[:2, :2].set(False)
  kw = dict(model_cfg=cfg, cfg=sampling.SamplingConfig(max_new_tokens=8, temperature=0.7,
                                                       top_k=12), eos_id=1, pad_id=0)
  if beta is None:
    return prompt, mask, sampling.generate(params, prompt, mask, jax.random.PRNGKey(7), **kw)
  full = decode.sampler_params(params, h, heads.target_of(h), beta)
  return prompt, mask, sampling.generate(full, prompt, mask, jax.random.PRNGKey(7),
                                         hook=decode.ShapedLogits(cfg, 24), **kw)


def test_beta_zero_decoding_reproduces_the_base_policys_samples_bitwise():
  """The same keys, temperature and top-k: β = 0 through the hook gives the base sampler's
  tokens, masks and log-probs bit for bit."""
  base, shaped = _sample()[2], _sample(0.0)[2]
  for k in ("tokens", "mask", "logprobs"):
    np.testing.assert_array_equal(np.asarray(shaped[k]), np.asarray(base[k]))


def test_shaped_decoding_samples_the_shaped_policy():
  """A non-zero β changes the samples, and the sampler's log-prob of each sampled token is
  log_softmax of the shaped logits of a teacher-forced pass (the heads on the trunk's hidden
  states) at the sampling temperature."""
  from rlhf_jax.models import forward, lm_logits  # pylint: disable=g-import-not-at-top
  cfg, params, h = _tiny_policy()
  prompt, mask, out = _sample(1.5)
  tokens = np.asarray(out["tokens"])
  assert len({tuple(r) for r in tokens}) > 1 and np.asarray(out["mask"]).sum() > 6
  toks = jnp.concatenate([prompt, out["tokens"]], 1)
  m = jnp.concatenate([mask, out["mask"]], 1)
  hid = forward(cfg, params, toks, m, outputs=("hidden",))["hidden"][:, 4:-1]
  hook = decode.ShapedLogits(cfg, 24)
  shaped = hook({"heads": h, "target": heads.target_of(h), "beta": 1.5}, hid,
                lm_logits(cfg, params, hid))
  lp = jnp.take_along_axis(jax.nn.log_softmax(shaped / 0.7, -1), out["tokens"][..., None],
                           -1)[..., 0]
  np.testing.assert_allclose(np.where(out["mask"], lp, 0), out["logprobs"], atol=2e-4)
  # ... and it is not the base policy's: the LM logits alone give other log-probs.
  base = jnp.take_along_axis(jax.nn.log_softmax(lm_logits(cfg, params, hid) / 0.7, -1),
                             out["tokens"][..., None], -1)[..., 0]
  assert np.max(np.abs(np.where(out["mask"], base - lp, 0))) > 1e-2


def _jsonl(path, recs):
  with open(path, "w", encoding="utf-8") as f:
    for r in recs:
      f.write(json.dumps(r) + "\n")
  return str(path)


def test_scored_jsonl_with_ids_text_and_errors(tmp_path):
  tok = load_tokenizer("builtin")
  src = _jsonl(tmp_path / "s.jsonl", [
      {"prompt": "p", "response": "r", "prompt_ids": [5, 6, 7], "response_ids": [8, 9],
       "rm_score": 1.5},
      {"prompt": "describe the kitten please .", "response": "the kitten is soft .",
       "rm_score": -0.5}])
  cfg = scored.ScoredConfig(source=src, reward_field="rm_score", eval_fraction=0.0)
  items, st = scored.load_scored(cfg, tok, "train")
  assert st.kept == 2 and items[0].reward == 1.5
  np.testing.assert_array_equal(items[0].prompt, [5, 6, 7])
  np.testing.assert_array_equal(items[0].response, [8, 9])
  assert items[1].response[-1] == tok.eos_id and items[1].reward == -0.5
  assert tok.decode(list(items[1].response[:-1])).strip() == "the kitten is soft ."
  batch = scored.pad_scored(scored.fit(items, 4, 6), 4, 6, tok.pad_id, rows=3)
  assert batch["tokens"].shape == (3, 10) and batch["response_mask"].sum(1).tolist() == [
      2, len(items[1].response), 0]
  np.testing.assert_array_equal(batch["tokens"][0, 1:6], [5, 6, 7, 8, 9])
  assert batch["reward"].tolist() == [1.5, -0.5, 0.0]
  bad = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "response": "r", "rm_score": "high"}])
  with pytest.raises(DataError, match=r"bad.jsonl:1: reward 'rm_score' is 'high'"):
    scored.load_scored(scored.ScoredConfig(source=bad, reward_field="rm_score"), tok, "train")
  with pytest.raises(DataError, match="has no field 'reward'"):
    scored.load_scored(scored.ScoredConfig(source=src), tok, "train")


def test_rank_scores_and_fit():
  assert scored.rank_scores([0, 1]) == [1.0, -1.0]
  assert scored.rank_scores([2, 0, 1, 0]) == [-1.0, 1.0, 0.0, 1.0]
  with pytest.raises(DataError, match="tied"):
    scored.rank_scores([0, 0])
  st = scored.ScoredStats(kept=2)
  x = [scored.ScoredResponse(np.arange(9, dtype=np.int32), np.arange(3, dtype=np.int32), 1.0),
       scored.ScoredResponse(np.arange(2, dtype=np.int32), np.arange(8, dtype=np.int32), 0.0)]
  kept = scored.fit(x, 4, 5, st)
  assert len(kept) == 1 and kept[0].prompt.tolist() == [5, 6, 7, 8]
  assert st.skipped_long == 1 and st.truncated_prompts == 1 and st.kept == 1
