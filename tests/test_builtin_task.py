"""The built-in task: tokenizer, determinism and splits, the gold preference (including the
reward hacks it must punish), and the simulated labelers' agreement calibration."""

import dataclasses

import numpy as np

from rlhf_jax.data import builtin_task as bt
from rlhf_jax.data import labelers as lab

TOK = bt.tokenizer()


def _ids(text, eos=True):
  return TOK.encode(text) + ([TOK.eos_id] if eos else [])


def test_tokenizer_round_trip_and_fixed_specials():
  assert (TOK.pad_id, TOK.bos_id, TOK.eos_id) == (0, 1, 2)
  assert 150 <= TOK.vocab_size <= 512
  for d in bt.demonstrations(50, "train"):
    text = d["prompt"] + " " + d["response"]
    assert TOK.decode(TOK.encode(text)) == text
    assert TOK.unk_id not in TOK.encode(text)
  assert TOK.encode("zebra") == [TOK.unk_id]
  assert TOK.decode([5, 2, 0, 9999]).endswith("<unk>")


def test_corpora_are_deterministic_and_splits_disjoint():
  assert bt.demonstrations(20, "train", seed=3) == bt.demonstrations(20, "train", seed=3)
  assert bt.pretrain_corpus(20, "eval") == bt.pretrain_corpus(20, "eval")
  assert bt.demonstrations(20, "train", seed=3) != bt.demonstrations(20, "train", seed=4)
  train = {p.text for p in bt.prompts(3000, "train")}
  evals = {p.text for p in bt.prompts(500, "eval")}
  assert not train & evals
  assert len(bt.rl_prompts(10, "eval")) == 10


def test_gold_punishes_degenerate_text_and_reward_hacks():
  p = TOK.encode("Human: write a note about the garden . Assistant:")
  good = bt.gold_score(p, _ids("the flower is lovely . the rose is very bright and kind ."))
  cases = {
      "repeated positive word": "great great great great great great great great great .",
      "off-topic praise": "the bread is lovely . the soup is very bright and kind .",
      "negative": "the flower is awful . the rose is very gloomy and rude .",
      "word salad": "is the . lovely flower and the very rose kind bright .",
      "rambling": " ".join(["the flower is lovely . the rose is kind ."] * 6),
      "empty": "",
  }
  for name, text in cases.items():
    assert bt.gold_score(p, _ids(text)) < good - 1.0, name
  assert bt.gold_score(p, _ids("the flower is lovely .", eos=False)) < bt.gold_score(
      p, _ids("the flower is lovely ."))
  # Anything at all scores without crashing: unknown, special, out-of-range ids.
  for junk in ([], [0, 0, 0], [1, 4, 5, 3], [-7, 10**6, 3], list(range(TOK.vocab_size))):
    s = bt.gold_score(p, junk)
    assert np.isfinite(s) and s < good
  # Tokens after EOS do not count.
  assert bt.gold_score(p, _ids("the flower is lovely .") + [7, 8, 9]) == bt.gold_score(
      p, _ids("the flower is lovely ."))


def test_batched_gold_equals_per_example_with_padding():
  demos = bt.demonstrations(16, "eval")
  prompts = [TOK.encode(d["prompt"]) for d in demos]
  resps = [_ids(d["response"]) for d in demos]
  P, T = max(map(len, prompts)), max(map(len, resps))
  pb = np.array([[0] * (P - len(x)) + x for x in prompts])
  rb = np.array([x + [0] * (T - len(x)) for x in resps])
  batched = bt.gold_scores(pb, rb)
  single = [bt.gold_score(p, r) for p, r in zip(prompts, resps)]
  np.testing.assert_allclose(batched, single, rtol=1e-6)


def _rank(x):
  return np.argsort(np.argsort(x))


def test_gold_rises_with_writer_quality():
  rng = np.random.default_rng(0)
  ps = bt.prompts(600, "train", seed=9)
  q = rng.random(len(ps))
  g = [bt.gold_score(TOK.encode(p.text), _ids(bt.write_response(p, qi, rng)))
       for p, qi in zip(ps, q)]
  spearman = np.corrcoef(_rank(q), _rank(g))[0, 1]
  assert spearman > 0.6, spearman


def test_labelers_agree_about_73_percent():
  pairs = lab.standard_comparison_pairs(20000, seed=1)
  a = lab.Labeler()
  agree = lab.agreement(a, a, pairs, seed=3)
  assert 0.70 <= agree <= 0.76, agree
  for x, y in [(0, 1), (1, 2)]:
    ls = lab.default_labelers(3)
    assert 0.69 <= lab.agreement(ls[x], ls[y], pairs[:5000], seed=5) <= 0.77
  assert 0.74 <= lab.gold_agreement(a, pairs[:5000]) <= 0.85


def test_rank_is_a_permutation_and_exact_at_zero_temperature():
  p, *_ = lab.standard_comparison_pairs(1)[0]
  rng = np.random.default_rng(0)
  demos = [_ids(bt.write_response(bt.prompts(1, "eval", 404)[0], q, rng))
           for q in (0.1, 0.5, 0.9, 1.0)]
  perm = lab.Labeler().rank(p, demos, rng)
  assert sorted(perm) == [0, 1, 2, 3]
  exact = dataclasses.replace(lab.Labeler(), temperature=0.0)
  order = exact.rank(p, demos, rng)
  gold = [bt.gold_score(p, d) for d in demos]
  assert [gold[i] for i in order] == sorted(gold, reverse=True)
  assert exact.compare(p, demos[order[0]], demos[order[-1]], rng) == 0 or gold[order[0]] == gold[
      order[-1]]
