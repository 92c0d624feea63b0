"""Comparison data: hh-rlhf prompt/turn splitting on real records, the pairs and K-way formats,
the skip policies and their counts, the hash split, batching, and clear errors on bad files."""

import dataclasses
import gzip
import json

import numpy as np
import pytest

from rlhf_jax.data import comparisons as cmp
from rlhf_jax.data import builtin_task as bt
from rlhf_jax.data.demonstrations import read_records, split_dialogue
from rlhf_jax.errors import DataError, ShapeError

TOK = bt.tokenizer()


def _write(path, records):
  with open(path, "w") as f:
    for r in records:
      f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
  return str(path)


def test_hh_split_on_real_records(shared_data):
  path = shared_data / "hh-rlhf" / "helpful-base" / "test.jsonl.gz"
  with gzip.open(path, "rt") as f:
    recs = [json.loads(line) for _, line in zip(range(300), f)]
  split = 0
  for rec in recs:
    got = cmp.split_hh_pair(rec["chosen"], rec["rejected"])
    if got is None:
      # Only records whose dialogues really differ before the final reply are refused.
      mc, mr = split_dialogue(rec["chosen"]), split_dialogue(rec["rejected"])
      assert mc[:-1] != mr[:-1] or mc[-1]["role"] != "assistant"
      continue
    split += 1
    prompt, chosen, rejected = got
    assert prompt and prompt[-1]["role"] == "user" and prompt[0]["role"] == "user"
    # The final turn is the only difference: rebuilding the dialogue gives back the text.
    marker = "\n\nAssistant:"
    assert rec["chosen"].rstrip().endswith(chosen) and rec["rejected"].rstrip().endswith(rejected)
    head_c = rec["chosen"][:rec["chosen"].rfind(marker)]
    head_r = rec["rejected"][:rec["rejected"].rfind(marker)]
    assert head_c == head_r
    assert split_dialogue(head_c) == prompt
  assert split >= 290


def test_hh_real_file_counts_and_hash_split(shared_data):
  src = str(shared_data / "hh-rlhf" / "helpful-base" / "test.jsonl.gz")
  cfg = cmp.ComparisonConfig(source=src, format="hh", max_len=100_000, eval_fraction=0.2)
  train, st_train = cmp.load_comparisons(cfg, _ByteTok(), "train")
  evals, st_eval = cmp.load_comparisons(cfg, _ByteTok(), "eval")
  total = sum(1 for _ in read_records(src))
  skipped = lambda st: st.skipped_empty + st.skipped_identical + st.skipped_mismatch  # noqa
  assert len(train) + len(evals) + skipped(st_train) + skipped(st_eval) == total
  assert 0.15 < len(evals) / total < 0.25
  assert {c.group for c in train} == {"helpful-base"}
  # No conversation opening on both sides of the split.
  first = lambda comps: {bytes(c.prompt_ids()).split(b"\n\nAssistant:")[0] for c in comps}  # noqa
  assert not first(train) & first(evals)
  # Chosen is ranked first, each row ends with EOS, and the response is the row's tail.
  c = train[0]
  assert c.ranks == (0, 1) and all(r[-1] == _ByteTok.eos_id for r in c.rows)
  np.testing.assert_array_equal(c.prompt_ids(0), c.prompt_ids(1))


class _ByteTok:
  vocab_size, pad_id, eos_id, bos_id = 258, 256, 257, None

  def encode(self, text):
    return list(text.encode("utf-8"))

  def decode(self, ids, skip_special=True):
    return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


def test_pairs_and_ranked_formats_with_skip_policies(tmp_path):
  recs = [
      {"q": "tell me about the cat", "good": "the cat is kind .", "bad": "bad cat", "m": 0.5},
      {"q": "tell me about the dog", "good": "same", "bad": "same", "m": 0},  # identical
      {"q": "tell me about the owl", "good": "", "bad": "an owl", "m": 0},  # empty
  ]
  src = _write(tmp_path / "pairs.jsonl", recs)
  cfg = cmp.ComparisonConfig(source=src, format="pairs", prompt_field="q", chosen_field="good",
                             rejected_field="bad", margin_field="m", eval_fraction=0.0,
                             max_len=64, prompt_template="Human: {prompt} . Assistant:")
  comps, st = cmp.load_comparisons(cfg, TOK, "train")
  assert (st.kept, st.skipped_identical, st.skipped_empty) == (1, 1, 1)
  c = comps[0]
  assert c.margin == 0.5 and c.ranks == (0, 1)
  assert TOK.decode(c.response_ids(0)) == "the cat is kind ."
  assert c.response_ids(0)[-1] == TOK.eos_id

  ranked = [
      {"prompt": "p one", "responses": ["a", "b", "c", "a", ""], "ranking": [2, 0, 1, 3, 4]},
      {"prompt": "p two", "responses": ["x", "y"], "scores": [1.0, 1.0]},  # a tie
      {"prompt": "p three", "responses": ["x", "y", "z"], "scores": [0.1, 0.9, 0.1]},
  ]
  src = _write(tmp_path / "ranked.jsonl", ranked[:1])
  cfg = cmp.ComparisonConfig(source=src, format="ranked", eval_fraction=0.0, max_len=64,
                             prompt_template="{prompt}")
  comps, st = cmp.load_comparisons(cfg, TOK, "train")
  # The duplicate "a" and the empty response are dropped; three ranked responses remain.
  assert st.kept == 1 and st.dropped_responses == 2 and comps[0].k == 3
  assert comps[0].ranks == (1, 2, 0) and st.pairs == 3
  src = _write(tmp_path / "scored.jsonl", ranked[1:])
  cfg = cmp.ComparisonConfig(source=src, format="ranked", scores_field="scores",
                             eval_fraction=0.0, max_len=64, prompt_template="{prompt}")
  comps, st = cmp.load_comparisons(cfg, TOK, "train")
  assert st.skipped_tie == 1 and st.kept == 1
  assert comps[0].ranks == (1, 0, 1) and st.pairs == 2  # the tied pair is not a pair


def test_per_response_ranks_keep_ties_out_of_the_pairs(tmp_path):
  """The feedback app's exports: "ranking" is a full order, "ranks" says which are tied; the
  loader reads "ranks", so a tied pair is skipped, not ordered by its place in "ranking"."""
  recs = [
      {"prompt": "p one", "responses": ["a", "b", "c"], "ranking": [1, 0, 2], "ranks": [0, 0, 1]},
      {"prompt": "p two", "responses": ["x", "y"], "ranking": [0, 1], "ranks": [3, 3]},  # all tied
      {"prompt": "p three", "responses": ["u", "v", "w"], "ranking": [2, 1, 0]},  # no ranks
  ]
  cfg = cmp.ComparisonConfig(source=_write(tmp_path / "r.jsonl", recs), format="ranked",
                             eval_fraction=0.0, max_len=64, prompt_template="{prompt}")
  comps, st = cmp.load_comparisons(cfg, TOK, "train")
  assert st.kept == 2 and st.skipped_tie == 1
  assert comps[0].ranks == (0, 0, 1) and comps[1].ranks == (2, 1, 0)
  assert st.pairs == 2 + 3  # (a, c), (b, c); the third record's three pairs
  # Token-id records (the built-in task's files) honour "ranks" the same way.
  ids = {"prompt": "p", "responses": ["a", "b", "c"], "ranking": [0, 1, 2], "ranks": [1, 0, 1],
         "prompt_ids": [5, 6], "response_ids": [[7, 2], [8, 2], [9, 2]]}
  comps, st = cmp.comparisons_from_records([("f:0", 0, ids)], TOK, cfg)
  assert comps[0].ranks == (1, 0, 1) and st.pairs == 2
  bad = dict(recs[0], ranks=[0, "x", 1])
  with pytest.raises(DataError, match=r"b\.jsonl:1: ranks \[0, 'x', 1\]"):
    cmp.load_comparisons(dataclasses.replace(cfg, source=_write(tmp_path / "b.jsonl", [bad])),
                         TOK, "train")


def test_truncation_policies(tmp_path):
  long_prompt = " ".join(["cat"] * 40)
  src = _write(tmp_path / "p.jsonl", [{"prompt": long_prompt, "chosen": "a cat .",
                                       "rejected": "dog"}])
  base = dict(source=src, format="pairs", eval_fraction=0.0, max_len=16,
              prompt_template="{prompt}")
  comps, st = cmp.load_comparisons(cmp.ComparisonConfig(**base), TOK, "train")
  assert st.truncated == 1 and all(len(r) <= 16 for r in comps[0].rows)
  assert TOK.decode(comps[0].response_ids(0)) == "a cat ."
  assert TOK.decode(comps[0].response_ids(1)) == "dog"
  # Both responses are judged against the same (left-truncated) prompt.
  np.testing.assert_array_equal(comps[0].prompt_ids(0), comps[0].prompt_ids(1))
  assert len(comps[0].rows[0]) == 16 and len(comps[0].rows[1]) < 16
  _, st = cmp.load_comparisons(cmp.ComparisonConfig(**base, truncation="skip"), TOK, "train")
  assert st.skipped_long == 1 and st.kept == 0
  with pytest.raises(ShapeError, match="data.max_len=16"):
    cmp.load_comparisons(cmp.ComparisonConfig(**base, truncation="error"), TOK, "train")


def test_malformed_files_name_file_and_line(tmp_path):
  src = _write(tmp_path / "bad.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b",
                                         "rejected": "\n\nHuman: a\n\nAssistant: c"},
                                        '{"chosen": "x", "rejected": ',  # cut off
                                        {"chosen": "y", "rejected": "z"}])
  cfg = cmp.ComparisonConfig(source=src, format="hh", eval_fraction=0.0)
  with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
    cmp.load_comparisons(cfg, TOK, "train")
  src = _write(tmp_path / "missing.jsonl", [{"prompt": "a", "chosen": "b"}])
  cfg = cmp.ComparisonConfig(source=src, format="pairs", eval_fraction=0.0)
  with pytest.raises(DataError, match=r"missing\.jsonl:1: has no field 'rejected'"):
    cmp.load_comparisons(cfg, TOK, "train")
  src = _write(tmp_path / "order.jsonl", [{"prompt": "a", "responses": ["b", "c"],
                                           "ranking": [0, 0]}])
  cfg = cmp.ComparisonConfig(source=src, format="ranked", eval_fraction=0.0)
  with pytest.raises(DataError, match=r"order\.jsonl:1: ranking \[0, 0\]"):
    cmp.load_comparisons(cfg, TOK, "train")
  with pytest.raises(DataError, match="does not exist"):
    cmp.load_comparisons(cmp.ComparisonConfig(source=str(tmp_path / "nope.jsonl")), TOK, "train")


def test_iterator_batches_and_resumes():
  rng = np.random.default_rng(0)
  comps = [cmp.Comparison(tuple(rng.integers(5, 50, size=rng.integers(3, 9)).astype(np.int32)
                                for _ in range(k)), tuple([2] * k), tuple(range(k)))
           for k in rng.integers(2, 5, size=11)]
  it = cmp.ComparisonIterator(comps, 4, 4, 10, 0, seed=3)
  b = it.next()
  assert b["tokens"].shape == (4, 4, 10) and b["ranks"].shape == (4, 4)
  assert ((b["ranks"] >= 0) == b["attention_mask"].any(-1)).all()
  for _ in range(2):
    it.next()
  state = it.state()
  want = [it.next() for _ in range(3)]  # crosses an epoch boundary
  it2 = cmp.ComparisonIterator(comps, 4, 4, 10, 0, seed=3)
  it2.restore(state)
  for w in want:
    got = it2.next()
    for k in w:
      np.testing.assert_array_equal(got[k], w[k])


def test_validation_slice_is_disjoint_from_train_and_eval(tmp_path):
  recs = [{"prompt": f"tell me about the cat {i}", "chosen": "a cat .", "rejected": "dog"}
          for i in range(300)]
  src = _write(tmp_path / "p.jsonl", recs)
  base = dict(source=src, format="pairs", max_len=64, prompt_template="{prompt}",
              eval_fraction=0.2)
  prompts = {}
  for split in ("train", "valid", "eval"):
    cfg = cmp.ComparisonConfig(**base, valid_fraction=0.25)
    prompts[split] = {r[2]["prompt"] for r in cmp.split_records(cfg, split)}
  assert not prompts["train"] & prompts["valid"] and not prompts["valid"] & prompts["eval"]
  assert not prompts["train"] & prompts["eval"]
  assert len(prompts["train"] | prompts["valid"] | prompts["eval"]) == 300
  assert 30 < len(prompts["valid"]) < 90 and 40 < len(prompts["eval"]) < 80
  # The held-out split does not move when a validation slice is cut from training.
  no_valid = {r[2]["prompt"] for r in cmp.split_records(cmp.ComparisonConfig(**base), "eval")}
  assert no_valid == prompts["eval"]
  train_all = {r[2]["prompt"] for r in cmp.split_records(cmp.ComparisonConfig(**base), "train")}
  assert train_all == prompts["train"] | prompts["valid"]


def test_a_templated_pairs_prompt_is_not_wrapped_twice(tmp_path):
  """A "pairs" prompt that already is an hh dialogue (as in hh-rlhf conversions) gives exactly
  the rows the "hh" format gives for the same dialogues: one "Human:", not "Human: Human:"."""
  turns = "\n\nHuman: where is the cat?\n\nAssistant: on the mat\n\nHuman: and the dog?"
  hh = _write(tmp_path / "hh.jsonl", [{"chosen": turns + "\n\nAssistant: in the yard",
                                       "rejected": turns + "\n\nAssistant: no idea"}])
  pairs = _write(tmp_path / "pairs.jsonl",
                 [{"prompt": turns + "\n\nAssistant:", "chosen": "in the yard",
                   "rejected": "no idea"},
                  {"prompt": turns.lstrip(), "chosen": "in the yard", "rejected": "no idea"}])
  tok = _ByteTok()
  want, _ = cmp.load_comparisons(cmp.ComparisonConfig(source=hh, format="hh",
                                                      eval_fraction=0.0), tok, "train")
  got, _ = cmp.load_comparisons(cmp.ComparisonConfig(source=pairs, format="pairs",
                                                     eval_fraction=0.0), tok, "train")
  assert len(got) == 2
  for c in got:
    text = tok.decode(c.rows[0])
    assert text.count("Human:") == 2 and "Human: Human:" not in text  # two turns, no doubling
    for a, b in zip(c.rows, want[0].rows):
      np.testing.assert_array_equal(a, b)
  # A plain prompt is still wrapped in the template; a dialogue ending on the assistant is an
  # error naming the record.
  plain, _ = cmp.load_comparisons(cmp.ComparisonConfig(
      source=_write(tmp_path / "plain.jsonl", [{"prompt": "where is the cat?",
                                                "chosen": "on the mat", "rejected": "no"}]),
      format="pairs", eval_fraction=0.0), tok, "train")
  assert tok.decode(plain[0].rows[0]).startswith("\n\nHuman: where is the cat?\n\nAssistant:")
  bad = _write(tmp_path / "bad.jsonl", [{"prompt": "Human: hi\n\nAssistant: hello",
                                          "chosen": "a", "rejected": "b"}])
  with pytest.raises(DataError, match="bad.jsonl:1"):
    cmp.load_comparisons(cmp.ComparisonConfig(source=bad, format="pairs", eval_fraction=0.0),
                         tok, "train")


def test_full_text_lengths_survive_truncation(tmp_path):
  """The length baselines' inputs: words and characters of the whole responses, whatever
  max_len cut from the rows."""
  src = _write(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a b c d e f g h i j",
                                       "rejected": "k l m"}])
  comps, _ = cmp.load_comparisons(cmp.ComparisonConfig(
      source=src, format="pairs", eval_fraction=0.0, max_len=16, prompt_template="{prompt}"),
      _ByteTok(), "train")
  c = comps[0]
  assert c.truncated and c.words == (10, 3) and c.chars == (19, 5)
  np.testing.assert_array_equal(cmp.response_lengths(comps, 2), [[10, 3]])
  assert cmp.response_lengths(comps, 2, "tokens")[0, 0] < 20  # what the model saw: cut
  assert cmp.truncated_fraction(comps) == 1.0
  with pytest.raises(Exception, match="unit"):
    cmp.response_lengths(comps, 2, "bytes")
