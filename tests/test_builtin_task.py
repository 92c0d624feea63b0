"""The built-in task: tokenizer, determinism and splits, the gold preference (including the
reward hacks it must punish), the writer's quality knob, and the simulated labelers'
agreement calibration."""

import dataclasses
import time

import numpy as np
import pytest

from rlhf_jax.data import builtin_task as bt
from rlhf_jax.data import labelers as lab
from rlhf_jax.errors import ConfigError, ShapeError

TOK = bt.tokenizer()
PROMPT = TOK.encode("Human: write a note about the garden . Assistant:")
GOOD = "the flower is lovely . the rose is very bright and kind ."


def _ids(text, eos=True):
  return TOK.encode(text) + ([TOK.eos_id] if eos else [])


def _rank(x):
  return np.argsort(np.argsort(x, kind="stable"), kind="stable")


@pytest.fixture(scope="module")
def pairs():
  return lab.standard_comparison_pairs(20000, seed=1)


def test_tokenizer_ids_round_trip_and_unknowns():
  assert (TOK.pad_id, TOK.bos_id, TOK.eos_id, TOK.unk_id) == (0, 1, 2, 3)
  # Ids are append-only: these must never move, or trained checkpoints break.
  assert [TOK.index[w] for w in ("Human:", "Assistant:", ".", "the", "cat", "remembers")] == [
      4, 5, 6, 10, 115, 242]
  assert 250 <= TOK.vocab_size <= 450 and len(set(TOK.vocab)) == TOK.vocab_size
  assert TOK.chat_template is None and bt.tokenizer() is TOK
  for d in bt.demonstrations(50, "train") + [{"prompt": t, "response": ""}
                                             for t in bt.pretrain_corpus(50, "eval")]:
    text = bt.format_dialogue(d["prompt"], d["response"])
    ids = TOK.encode(text)
    assert TOK.decode(ids) == text and TOK.unk_id not in ids
    assert ids == TOK.encode(d["prompt"]) + TOK.encode(d["response"])
  assert TOK.encode("the zebra") == [TOK.index["the"], TOK.unk_id]
  assert TOK.decode([5, 2, 0, 9999, -1]) == "Assistant: <unk> <unk>"
  assert TOK.decode([1, 5, 2], skip_special=False) == "<bos> Assistant: <eos>"
  assert bt.response_to_text(_ids("the cat is kind .") + [7, 8]) == "the cat is kind ."


def test_prompts_are_dialogues_with_topic_and_hint():
  for p in bt.prompts(200, "train", seed=4):
    assert p.ids[0] == TOK.human_id and p.ids[-1] == TOK.assistant_id
    assert bt.parse_prompt(p.ids) == (bt.TOPIC_NAMES.index(p.topic), p.hint)
  assert all(t.endswith("Assistant:") for t in bt.rl_prompts(20, "eval"))


def test_corpora_are_deterministic_and_splits_disjoint():
  assert bt.demonstrations(20, "train", seed=3) == bt.demonstrations(20, "train", seed=3)
  assert bt.pretrain_corpus(20, "eval") == bt.pretrain_corpus(20, "eval")
  assert bt.rl_prompts(20, "train", seed=2) == bt.rl_prompts(20, "train", seed=2)
  assert bt.demonstrations(20, "train", seed=3) != bt.demonstrations(20, "train", seed=4)
  for seed_a, seed_b in [(0, 0), (0, 7)]:
    train = {p.text for p in bt.prompts(3000, "train", seed_a)}
    evals = {p.text for p in bt.prompts(1000, "eval", seed_b)}
    assert not train & evals and len(evals) > 50
  assert len(bt.pretrain_corpus(5, "train")) == 5 and bt.rl_prompts(0, "eval") == []
  with pytest.raises(ConfigError):
    bt.rl_prompts(3, "test")
  with pytest.raises(ConfigError):
    bt.write_response(bt.prompts(1, "train")[0], 1.5, np.random.default_rng(0))


def test_gold_punishes_degenerate_text_and_reward_hacks():
  good = bt.gold_score(PROMPT, _ids(GOOD))
  assert good == bt.GOLD_MAX
  hacks = {
      "repeated positive word": "great " * 20 + ".",
      "off-topic praise": "the bread is lovely . the soup is very bright and kind .",
      "negative": "the flower is awful . the rose is very gloomy and rude .",
      "word salad": "is the . lovely flower and the very rose kind bright .",
      "rambling": " ".join([GOOD] * 6),
      "one sentence over and over": "the flower is lovely . " * 4,
      "adjective chain": ("the rose is lovely and kind and warm and sweet and calm and happy "
                          "and bright and fresh ."),
      "empty": "",
  }
  for name, text in hacks.items():
    assert bt.gold_score(PROMPT, _ids(text)) < good - 1.5, name
  on = bt.gold_score(PROMPT, _ids(GOOD))
  assert bt.gold_score(PROMPT, _ids(hacks["off-topic praise"])) < on - 1.5
  # No EOS is penalised; whatever follows the first EOS is ignored.
  assert bt.gold_score(PROMPT, _ids(GOOD, eos=False)) == good - 1.5
  assert bt.gold_score(PROMPT, _ids(GOOD) + [7, 8, 9, 3]) == good
  # Anything at all scores without crashing, and low: unknown, special, out-of-range ids.
  rng = np.random.default_rng(0)
  junk = ([], [TOK.eos_id], [0, 0, 0], [1, 4, 5, 3], [3] * 40, [-7, 10**6, 3, 2**70],
          list(range(TOK.vocab_size)), list(rng.integers(0, 512, 64)), [6] * 64)
  for ids in junk:
    s = bt.gold_score(PROMPT, ids)
    assert bt.GOLD_MIN <= s <= -3.0, (ids, s)
  assert np.isfinite(bt.gold_score([], _ids(GOOD)))  # a prompt with no topic


def test_batched_gold_equals_per_example_with_padding():
  rng = np.random.default_rng(0)
  ps = bt.prompts(64, "eval", seed=2)
  prompts = [p.ids for p in ps]
  resps = [_ids(bt.write_response(p, rng.random(), rng), eos=rng.random() < 0.8) for p in ps]
  resps[0], resps[1] = [], list(rng.integers(-3, 600, 30))
  P, T = max(map(len, prompts)), max(map(len, resps)) + 3
  pb = np.array([[0] * (P - len(x)) + x for x in prompts])
  rb = np.array([x + [0] * (T - len(x)) for x in resps])
  single = [bt.gold_score(p, r) for p, r in zip(prompts, resps)]
  np.testing.assert_allclose(bt.gold_scores(pb, rb), single, rtol=1e-6)
  np.testing.assert_allclose(bt.gold_scores(prompts, resps), single, rtol=1e-6)
  np.testing.assert_allclose(bt.gold_scores(np.where(pb == 0, -1, pb), np.where(rb == 0, -1, rb),
                                            pad_id=-1), single, rtol=1e-6)
  with pytest.raises(ShapeError):
    bt.gold_scores(pb[:3], rb[:4])


def test_gold_is_fast():
  rng = np.random.default_rng(0)
  P, R = rng.integers(0, 300, (1000, 16)), rng.integers(0, 300, (1000, 64))
  start = time.perf_counter()
  bt.gold_scores(P, R)
  assert time.perf_counter() - start < 0.5


def test_gold_rises_with_writer_quality():
  rng = np.random.default_rng(0)
  ps = bt.prompts(600, "train", seed=9)
  q = rng.random(len(ps))
  g = bt.gold_scores([p.ids for p in ps],
                     [_ids(bt.write_response(p, qi, rng)) for p, qi in zip(ps, q)])
  spearman = np.corrcoef(_rank(q), _rank(g))[0, 1]
  assert spearman > 0.6, spearman
  best = [_ids(bt.write_response(p, 1.0, rng)) for p in ps[:200]]
  assert np.mean(bt.gold_scores([p.ids for p in ps[:200]], best)) > 3.5


def test_labelers_agree_about_73_percent(pairs):
  a = lab.Labeler()
  agree = lab.agreement(a, a, pairs, seed=3)
  assert 0.70 <= agree <= 0.76, agree
  assert abs(lab.expected_agreement(a, a, pairs) - 0.73) < 0.01
  labelers = lab.default_labelers(3)
  assert labelers[1].length_bias > 0 > labelers[2].length_bias
  for x, y in [(0, 1), (0, 2), (1, 2)]:
    assert 0.70 <= lab.agreement(labelers[x], labelers[y], pairs, seed=5) <= 0.76
  assert 0.75 <= lab.gold_agreement(a, pairs) <= 0.85
  assert lab.gold_agreement_ceiling(2000) == pytest.approx(lab.gold_agreement(a, pairs), abs=0.03)


def test_compare_follows_bradley_terry(pairs):
  a = lab.Labeler()
  cols = [list(c) for c in zip(*pairs[:4000])]
  p = a.prefer_probs(*cols)
  choices = a.compare_batch(*cols, np.random.default_rng(0))
  assert set(np.unique(choices)) <= {0, 1}
  assert abs(np.mean(choices == 0) - np.mean(p)) < 0.02
  prompt, x, y = pairs[0]
  assert a.compare(prompt, x, y) == a.compare(prompt, x, y)  # no rng: derived from seed and ids
  assert a.prefer_prob(prompt, x, y) == pytest.approx(1 - a.prefer_prob(prompt, y, x))
  longer = lab.Labeler(length_bias=1.0)
  assert longer.prefer_prob(PROMPT, _ids(GOOD), _ids("the rose is lovely .")) > a.prefer_prob(
      PROMPT, _ids(GOOD), _ids("the rose is lovely ."))
  with pytest.raises(ConfigError):
    lab.Labeler(temperature=-1.0)


def test_rank_is_a_permutation_and_exact_at_zero_temperature():
  rng = np.random.default_rng(0)
  p = bt.prompts(1, "eval", seed=404)[0]
  responses = [_ids(bt.write_response(p, q, rng)) for q in (0.1, 0.4, 0.7, 1.0)]
  gold = bt.gold_scores([p.ids] * 4, responses)
  perms = [tuple(lab.Labeler().rank(p.ids, responses, rng)) for _ in range(200)]
  assert all(sorted(perm) == [0, 1, 2, 3] for perm in perms)
  assert len(set(perms)) > 1  # noisy at the default temperature
  exact = dataclasses.replace(lab.Labeler(), temperature=0.0)
  order = exact.rank(p.ids, responses, rng)
  assert list(gold[order]) == sorted(gold, reverse=True)
  cold = lab.Labeler(temperature=1e-6)
  assert list(gold[cold.rank(p.ids, responses, rng)]) == sorted(gold, reverse=True)
  # The top of a Plackett–Luce ranking is a softmax choice over the utilities.
  top = np.bincount([perm[0] for perm in perms], minlength=4) / len(perms)
  soft = np.exp(gold / lab.DEFAULT_TEMPERATURE)
  np.testing.assert_allclose(top, soft / soft.sum(), atol=0.1)
