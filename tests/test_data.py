"""Data layer: a Hugging Face tokenizer behind the protocol, demonstration formats and their loss
masks, truncation policies, clear errors on bad files, splits, and resumable batching.

Everything runs offline: the tokenizer is a tiny WordLevel model saved to tmp_path, and the hub
code path is exercised with `datasets.load_dataset` monkeypatched. The two real-data tests skip
when /work/shared/data is absent.
"""

import dataclasses
import gzip
import json

import numpy as np
import pytest

from rlhf_jax.data import batching, demonstrations as demos
from rlhf_jax.data.tokenizer import HFTokenizer, load_tokenizer
from rlhf_jax.errors import ConfigError, DataError, ShapeError

WORDS = ("hello world how are you i am fine thanks tell me a joke no why ok good bye Human "
         "Assistant : . , ? ! the cat sat on mat").split()
TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant{% endif %}")


def _hf_tokenizer(path, chat=False, pad=True):
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "user", "assistant"] +
                                      WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Punctuation()])
  special = {"pad_token": "<pad>"} if pad else {}
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                 eos_token="</s>", **special)
  if chat:
    fast.chat_template = TEMPLATE
  fast.save_pretrained(str(path))
  return HFTokenizer(str(path))


@pytest.fixture
def tok(tmp_path):
  return _hf_tokenizer(tmp_path / "tok")


def _write_jsonl(path, records, gz=False):
  opener = gzip.open if gz else open
  with opener(path, "wt") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  return str(path)


def _cfg(source, **kw):
  kw.setdefault("eval_fraction", 0.0)
  return demos.DemoConfig(source=source, **kw)


def _targets(tok, ex):
  """The target tokens as text, spaces removed (the WordLevel decoder spaces every token)."""
  text = tok.decode([t for t, m in zip(ex.tokens, ex.loss_mask) if m], skip_special=False)
  return text.replace(" ", "")


def test_hf_tokenizer_protocol_and_pad_fallback(tmp_path, tok):
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3) and tok.chat_template is None
  assert tok.vocab_size == 6 + len(WORDS)
  ids = tok.encode("hello world")
  assert len(ids) == 2 and tok.eos_id not in ids  # no special tokens added
  assert tok.decode(ids + [tok.eos_id]) == "hello world"
  assert tok.decode(ids + [tok.eos_id], skip_special=False) == "hello world </s>"
  no_pad = _hf_tokenizer(tmp_path / "nopad", pad=False)
  assert no_pad.pad_id == no_pad.eos_id == 3
  assert isinstance(load_tokenizer(str(tmp_path / "tok")), HFTokenizer)
  with pytest.raises(DataError, match="tokenizer directory .*no_tok.* does not exist"):
    load_tokenizer(str(tmp_path / "no_tok"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="empty.* has no tokenizer files"):
    HFTokenizer(str(tmp_path / "empty"))


def test_chat_template_rendering_and_assistant_mask(tmp_path):
  tok = _hf_tokenizer(tmp_path / "chat", chat=True)
  msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world"}]
  ids = tok.apply_chat_template(msgs)
  assert tok.decode(ids, skip_special=False).replace(" ", "") == (
      "<s>userhello</s><s>assistanthelloworld</s>")
  ids2, mask = tok.render_messages(msgs)
  assert ids2 == ids
  assert [tok.decode([t], skip_special=False) for t, m in zip(ids, mask) if m] == [
      "hello", "world", "</s>"]
  _, none = tok.render_messages(msgs, loss_turns=[False, False])
  assert not any(none)


def test_prompt_response_from_jsonl_and_parquet(tmp_path, tok):
  recs = [{"prompt": "tell me a joke", "response": "why ok"},
          {"prompt": "how are you", "response": "i am fine thanks"}]
  path = _write_jsonl(tmp_path / "d.jsonl", recs)
  import pandas as pd
  pd.DataFrame(recs).to_parquet(tmp_path / "d.parquet")
  for source in (path, str(tmp_path / "d.parquet")):
    exs, stats = demos.load_examples(_cfg(source, prompt_template="Human : {prompt} Assistant :"),
                                     tok, "train")
    assert stats.kept == 2
    ex = exs[0]
    prompt_len = len(tok.encode("Human : tell me a joke Assistant :"))
    # Loss exactly on the response tokens and the EOS after them.
    assert list(ex.loss_mask) == [False] * prompt_len + [True] * 3
    assert ex.tokens[-1] == tok.eos_id and _targets(tok, ex) == "whyok</s>"
    assert tok.decode(ex.tokens[~ex.loss_mask]).replace(" ", "") == "Human:tellmeajokeAssistant:"
    assert exs[1].loss_mask.sum() == len(tok.encode("i am fine thanks")) + 1
  # The same records from memory take the same path and give the same examples.
  mem, _ = demos.examples_from_records(recs, tok, _cfg("-", prompt_template=
                                                       "Human : {prompt} Assistant :"))
  assert [list(e.tokens) for e in mem] == [list(e.tokens) for e in exs]
  # add_bos puts BOS first, never a target; the default template is hh-style.
  bos, _ = demos.examples_from_records(recs[:1], tok, _cfg("-", add_bos=True))
  assert bos[0].tokens[0] == tok.bos_id and not bos[0].loss_mask[0]
  assert tok.decode(bos[0].tokens[~bos[0].loss_mask]).replace(" ", "") == (
      "Human:tellmeajokeAssistant:")


def test_folder_source_input_field_and_dotted_paths(tmp_path, tok):
  folder = tmp_path / "folder"
  folder.mkdir()
  _write_jsonl(folder / "a.jsonl", [{"instruction": "tell me", "input": "a joke",
                                     "output": "no"}])
  _write_jsonl(folder / "b.jsonl.gz", [{"instruction": "hello", "input": "", "output": "ok"}],
               gz=True)
  (folder / "notes.md").write_text("ignored")
  cfg = _cfg(str(folder), prompt_field="instruction", input_field="input",
             response_field="output", prompt_template="{prompt}")
  exs, stats = demos.load_examples(cfg, tok, "train")
  assert stats.kept == 2
  assert tok.decode(exs[0].tokens).replace(" ", "") == "tellmeajokeno"
  assert tok.decode(exs[1].tokens).replace(" ", "") == "hellook"
  seed = {"instruction": "tell me a joke", "instances": [{"input": "", "output": "why ok"}]}
  nested, _ = demos.examples_from_records([seed], tok, _cfg(
      "-", prompt_field="instruction", response_field="instances.0.output"))
  assert _targets(tok, nested[0]) == "whyok</s>"


def test_dialogue_last_turn_and_all_turns(tok):
  rec = {"chosen": "\n\nHuman: hello\n\nAssistant: hello world\n\nHuman: tell me a joke"
                   "\n\nAssistant: no"}
  last, _ = demos.examples_from_records([rec], tok, _cfg("-", format="dialogue",
                                                         text_field="chosen"))
  assert _targets(tok, last[0]) == "no</s>"
  assert tok.decode(last[0].tokens).replace(" ", "") == (
      "Human:helloAssistant:helloworldHuman:tellmeajokeAssistant:no")
  both, _ = demos.examples_from_records([rec], tok, _cfg("-", format="dialogue",
                                                         text_field="chosen",
                                                         dialogue_loss="all_turns"))
  assert _targets(tok, both[0]) == "helloworldno</s>"
  assert demos.split_dialogue(rec["chosen"])[-1] == {"role": "assistant", "content": "no"}
  assert demos.split_dialogue("Human: hi\n\nAssistant: ok")[0] == {"role": "user",
                                                                   "content": "hi"}


def test_messages_with_and_without_chat_template(tmp_path, tok):
  chat = _hf_tokenizer(tmp_path / "chat", chat=True)
  msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world"},
          {"role": "user", "content": "tell me a joke"}, {"role": "assistant", "content": "no"}]
  exs, _ = demos.examples_from_records([{"messages": msgs}], chat,
                                       _cfg("-", format="messages", dialogue_loss="all_turns"))
  assert chat.decode(exs[0].tokens, skip_special=False).replace(" ", "") == (
      "<s>userhello</s><s>assistanthelloworld</s><s>usertellmeajoke</s><s>assistantno</s>")
  # Assistant content and its end marker are targets; the "<s>assistant" header is not.
  assert _targets(chat, exs[0]) == "helloworld</s>no</s>"
  last, _ = demos.examples_from_records([{"messages": msgs}], chat, _cfg("-", format="messages"))
  assert _targets(chat, last[0]) == "no</s>"
  # prompt_response uses the chat template when there is one and no prompt_template.
  pr, _ = demos.examples_from_records([{"prompt": "hello", "response": "good bye"}], chat,
                                      _cfg("-"))
  assert _targets(chat, pr[0]) == "goodbye</s>"
  # Without a template: the plain Human:/Assistant: rendering; a trailing user turn is dropped.
  plain, _ = demos.examples_from_records([{"messages": msgs + [msgs[0]]}], tok,
                                         _cfg("-", format="messages"))
  assert tok.decode(plain[0].tokens).replace(" ", "") == (
      "Human:helloAssistant:helloworldHuman:tellmeajokeAssistant:no")
  assert _targets(tok, plain[0]) == "no</s>"
  with pytest.raises(DataError, match="record 0: field 'messages' is not a list"):
    demos.examples_from_records([{"messages": "hi"}], tok, _cfg("-", format="messages"))


def test_truncation_policies(tok):
  rec = {"prompt": "hello " * 20, "response": "good bye"}
  cut, stats = demos.examples_from_records([rec], tok, _cfg("-", max_len=8,
                                                            prompt_template="{prompt}"))
  assert stats.truncated == 1 and len(cut[0].tokens) == 8
  assert _targets(tok, cut[0]) == "goodbye</s>"
  assert tok.decode(cut[0].tokens[~cut[0].loss_mask]) == "hello " * 4 + "hello"
  # A response longer than max_len keeps one prompt token, then loses its tail.
  long_resp = {"prompt": "hello", "response": "good " * 20}
  tail, stats = demos.examples_from_records([long_resp], tok, _cfg("-", max_len=6,
                                                                   prompt_template="{prompt}"))
  assert stats.truncated == 1 and list(tail[0].loss_mask) == [False] + [True] * 5
  skipped, stats = demos.examples_from_records([rec], tok, _cfg("-", max_len=8,
                                                                truncation="skip"))
  assert not skipped and stats.skipped_long == 1 and stats.kept == 0
  with pytest.raises(ShapeError, match="record 0: 23 tokens, longer than data.max_len=8"):
    demos.examples_from_records([rec], tok, _cfg("-", max_len=8, truncation="error",
                                                 prompt_template="{prompt}"))
  empty, stats = demos.examples_from_records([{"prompt": "hi", "response": "  "}], tok, _cfg("-"))
  assert not empty and stats.skipped_empty == 1
  assert "1 empty skipped" in str(stats)


def test_config_validation_names_the_field():
  with pytest.raises(ConfigError, match="data.truncation='cut'"):
    demos.DemoConfig(source="x", truncation="cut")
  with pytest.raises(ConfigError, match="data.format='csv'"):
    demos.DemoConfig(source="x", format="csv")
  with pytest.raises(ConfigError, match="data.prompt_template=.*lacks"):
    demos.DemoConfig(source="x", prompt_template="Q:")
  with pytest.raises(ConfigError, match="data.eval_fraction=1.5"):
    demos.DemoConfig(source="x", eval_fraction=1.5)
  with pytest.raises(ConfigError, match="data.max_len=1"):
    demos.DemoConfig(source="x", max_len=1)


def test_bad_files_and_records_name_the_problem(tmp_path, tok):
  with pytest.raises(DataError, match="nope.jsonl.*does not exist"):
    demos.load_examples(_cfg(str(tmp_path / "nope.jsonl")), tok, "train")
  with pytest.raises(DataError, match="data/missing.jsonl.*does not exist"):
    demos.load_examples(_cfg("data/missing.jsonl"), tok, "train")  # relative, not a hub name
  bad_ext = tmp_path / "d.csv"
  bad_ext.write_text("a,b\n")
  with pytest.raises(DataError, match="unsupported file type .csv"):
    demos.load_examples(_cfg(str(bad_ext)), tok, "train")
  path = _write_jsonl(tmp_path / "f.jsonl", [{"prompt": "hi", "response": "ok"},
                                             {"prompt": "hi", "answer": "ok"}])
  with pytest.raises(DataError, match=r"f.jsonl:2: has no field 'response' "
                                      r"\(its fields: \['answer', 'prompt'\]\)"):
    demos.load_examples(_cfg(path), tok, "train")
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"prompt": "hi", "response": "ok"}\n{"prompt": \n')
  with pytest.raises(DataError, match=r"broken.jsonl:2: not valid JSON"):
    demos.load_examples(_cfg(str(broken)), tok, "train")


def test_hub_source_goes_through_load_dataset(monkeypatch, tok):
  import datasets
  calls = []

  def fake_load_dataset(name, split=None, **kw):
    calls.append((name, split, kw))
    if split == "validation":
      raise ValueError("Unknown split 'validation'\nmore detail")
    return [{"prompt": "hello", "response": "ok"}]

  monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
  cfg = demos.DemoConfig(source="someone/demos", eval_split="test", prompt_template="{prompt}")
  exs, _ = demos.load_examples(cfg, tok, "eval")
  assert calls == [("someone/demos", "test", {})] and len(exs) == 1
  with pytest.raises(DataError, match=r"'someone/demos' \(hub dataset, split 'validation'\) "
                                      r"could not be loaded: Unknown split 'validation'$"):
    demos.load_examples(dataclasses.replace(cfg, eval_split="validation"), tok, "eval")


def test_hash_split_is_disjoint_and_deterministic(tmp_path, tok):
  recs = [{"prompt": f"hello {w} {v}", "response": "ok"} for w in WORDS for v in WORDS[:8]]
  recs += recs[:20]  # repeated prompts must land on the same side
  path = _write_jsonl(tmp_path / "s.jsonl.gz", recs, gz=True)
  cfg = demos.DemoConfig(source=path, eval_fraction=0.2, prompt_template="{prompt}")
  train, _ = demos.load_examples(cfg, tok, "train")
  evals, _ = demos.load_examples(cfg, tok, "eval")
  assert len(train) + len(evals) == len(recs)
  assert 0.1 < len(evals) / len(recs) < 0.3
  key = lambda e: tuple(e.tokens)  # noqa: E731
  assert not {key(e) for e in train} & {key(e) for e in evals}
  again, _ = demos.load_examples(cfg, tok, "eval")
  assert [key(e) for e in again] == [key(e) for e in evals]
  # No fraction: nothing held out. A local eval_split is a second file.
  none, _ = demos.load_examples(_cfg(path), tok, "eval")
  assert none == []
  other = _write_jsonl(tmp_path / "eval.jsonl", recs[:3])
  held, _ = demos.load_examples(_cfg(path, eval_split=other), tok, "eval")
  everything, _ = demos.load_examples(_cfg(path, eval_split=other), tok, "train")
  assert len(held) == 3 and len(everything) == len(recs)


def test_text_corpus_and_packing(tmp_path, tok):
  path = _write_jsonl(tmp_path / "c.jsonl", [{"text": "the cat sat on the mat"},
                                             {"text": ""}, {"text": "hello world"}])
  docs, stats = demos.load_text_corpus(path, tok)
  assert stats.kept == 2 and stats.skipped_empty == 1
  assert all(d.loss_mask.all() and d.tokens[-1] == tok.eos_id for d in docs)
  rows = batching.pack_examples(docs, 4)
  assert len(rows) == 2  # 7 + 3 tokens -> two rows of 4, tail of 2 dropped
  assert np.concatenate([r.tokens for r in rows]).tolist() == (
      np.concatenate([d.tokens for d in docs])[:8].tolist())
  for r in rows:
    assert r.tokens.dtype == np.int32 and not r.loss_mask[0] and r.loss_mask[1:].all()
  batch = batching.pad_batch(rows, 4, tok.pad_id)
  assert batch["attention_mask"].all()


def test_pad_batch_keys_dtypes_and_errors():
  exs = [batching.make_example([5, 6, 7], [False, True, True]),
         batching.make_example([8], [True])]
  b = batching.pad_batch(exs, 5, pad_id=0)
  assert set(b) == {"tokens", "loss_mask", "attention_mask"}
  assert b["tokens"].dtype == np.int32 and b["loss_mask"].dtype == bool
  np.testing.assert_array_equal(b["tokens"], [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]])
  np.testing.assert_array_equal(b["attention_mask"].sum(1), [3, 1])
  np.testing.assert_array_equal(b["loss_mask"][0], [False, True, True, False, False])
  with pytest.raises(ShapeError, match="3 tokens does not fit seq_len=2"):
    batching.pad_batch(exs, 2, 0)
  with pytest.raises(ShapeError):
    batching.BatchIterator(exs, 2, 2, 0)
  with pytest.raises(ConfigError, match="batch_size=3 must divide by the 2 processes"):
    batching.BatchIterator(exs, 3, 8, 0, process_count=2)


def test_batch_iterator_resumes_exactly_and_eval_shapes_are_fixed():
  rng = np.random.default_rng(0)
  exs = [batching.make_example(rng.integers(1, 50, n), rng.random(n) > 0.5)
         for n in rng.integers(3, 12, 37)]
  it = batching.BatchIterator(exs, 8, 16, 0, seed=1)
  for _ in range(7):  # crosses an epoch boundary (37 examples)
    it.next()
  saved = it.state()
  assert saved == {"epoch": 1, "index": 19} and all(type(v) is int for v in saved.values())
  expected = [it.next() for _ in range(6)]
  other = batching.BatchIterator(exs, 8, 16, 0, seed=1)
  other.restore(saved)
  for a, b in zip(expected, [next(other) for _ in range(6)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Each epoch is a permutation: every example exactly once, in a new order each epoch.
  fresh = batching.BatchIterator(exs, 1, 16, 0, seed=1)
  epochs = [[tuple(fresh.next()["tokens"][0][:3]) for _ in range(37)] for _ in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
  # Two processes see the two halves of the same global batch.
  halves = [batching.BatchIterator(exs, 8, 16, 0, seed=1, process_index=i, process_count=2)
            for i in range(2)]
  whole = batching.BatchIterator(exs, 8, 16, 0, seed=1).next()
  np.testing.assert_array_equal(np.concatenate([h.next()["tokens"] for h in halves]),
                                whole["tokens"])
  batches = list(batching.eval_batches(exs, 8, 16, 0))
  assert len(batches) == 5 and {b["tokens"].shape for b in batches} == {(8, 16)}
  assert list(batching.eval_batches(exs, 8, 16, 0))[0]["tokens"].tolist() == (
      batches[0]["tokens"].tolist())  # deterministic
  assert not batches[-1]["attention_mask"][5:].any() and not batches[-1]["loss_mask"][5:].any()
  assert batches[-1]["attention_mask"][:5].any(axis=1).all()


def test_real_hh_rlhf_dialogues(shared_data, tok):
  path = str(shared_data / "hh-rlhf" / "helpful-base" / "test.jsonl.gz")
  cfg = demos.DemoConfig(source=path, format="dialogue", text_field="chosen", max_len=100_000,
                         eval_fraction=0.0, max_records=50)
  exs, stats = demos.load_examples(cfg, tok, "train")
  assert stats.kept == 50
  with gzip.open(path, "rt") as f:
    recs = [json.loads(next(f)) for _ in range(50)]
  for ex, rec in zip(exs, recs):
    last = demos.split_dialogue(rec["chosen"])[-1]["content"]
    want = tok.decode(tok.encode(" " + last) + [tok.eos_id], skip_special=False)
    assert _targets(tok, ex) == want.replace(" ", "")


def test_real_alpaca_demonstrations(shared_data, tok):
  path = str(shared_data / "alpaca_eval" / "demonstrations_gpt4.jsonl.gz")
  cfg = demos.DemoConfig(source=path, prompt_field="instruction", response_field="output",
                         max_len=100_000, eval_fraction=0.1)
  train, train_stats = demos.load_examples(cfg, tok, "train")
  evals, eval_stats = demos.load_examples(cfg, tok, "eval")
  assert train_stats.skipped_empty + eval_stats.skipped_empty == 0
  assert len(train) + len(evals) == 805 and 40 < len(evals) < 130
  with gzip.open(path, "rt") as f:
    recs = [json.loads(line) for line in f]
  train_recs = [r for r in recs if not demos.in_eval_split(r["instruction"].strip(), 0.1)]
  for ex, rec in zip(train[:20], train_recs):
    n_target = len(tok.encode(" " + rec["output"].strip())) + 1
    assert ex.loss_mask.sum() == n_target and ex.loss_mask[-n_target:].all()
    assert ex.tokens[-1] == tok.eos_id
