"""Data layer: a Hugging Face tokenizer behind the protocol, demonstration formats and their loss
masks, truncation policies, clear errors on bad files, splits, and resumable batching."""

import gzip
import json

import numpy as np
import pytest

from rlhf_jax.data import batching, demonstrations as demos
from rlhf_jax.data.tokenizer import HFTokenizer, load_tokenizer
from rlhf_jax.errors import DataError, ShapeError

WORDS = ("hello world how are you i am fine thanks tell me a joke no why ok good bye Human "
         "Assistant : . , ? ! the cat sat on mat").split()
TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant{% endif %}")


def _hf_tokenizer(path, chat=False):
  from tokenizers import Tokenizer, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "user", "assistant"] +
                                      WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Punctuation()])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                 bos_token="<s>", eos_token="</s>")
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
    assert _targets(tok, exs[0]) == "whyok</s>"
    assert tok.decode(exs[0].tokens[~exs[0].loss_mask]).replace(" ", "") == (
        "Human:tellmeajokeAssistant:")
    assert exs[1].loss_mask.sum() == len(tok.encode("i am fine thanks")) + 1


def test_dialogue_last_turn_and_all_turns(tok):
  rec = {"chosen": "\n\nHuman: hello\n\nAssistant: hello world\n\nHuman: tell me a joke"
                   "\n\nAssistant: no"}
  last, _ = demos.examples_from_records([rec], tok, _cfg("-", format="dialogue",
                                                         text_field="chosen"))
  assert _targets(tok, last[0]) == "no</s>"
  both, _ = demos.examples_from_records([rec], tok, _cfg("-", format="dialogue",
                                                         text_field="chosen",
                                                         dialogue_loss="all_turns"))
  assert _targets(tok, both[0]) == "helloworldno</s>"
  assert demos.split_dialogue(rec["chosen"])[-1] == {"role": "assistant", "content": "no"}


def test_messages_with_chat_template_mask_assistant_turns(tmp_path):
  tok = _hf_tokenizer(tmp_path / "chat", chat=True)
  msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world"},
          {"role": "user", "content": "tell me a joke"}, {"role": "assistant", "content": "no"}]
  exs, _ = demos.examples_from_records([{"messages": msgs}], tok,
                                       _cfg("-", format="messages", dialogue_loss="all_turns"))
  ids, mask = exs[0].tokens, exs[0].loss_mask
  assert tok.decode(ids, skip_special=False).replace(" ", "") == (
      "<s>userhello</s><s>assistanthelloworld</s><s>usertellmeajoke</s><s>assistantno</s>")
  # Assistant content and its end marker are targets; the "<s>assistant" header is not.
  assert _targets(tok, exs[0]).replace(" ", "") == "helloworld</s>no</s>"
  last, _ = demos.examples_from_records([{"messages": msgs}], tok, _cfg("-", format="messages"))
  assert _targets(tok, last[0]).replace(" ", "") == "no</s>"
  # prompt_response uses the chat template when there is one.
  pr, _ = demos.examples_from_records([{"prompt": "hello", "response": "good bye"}], tok,
                                      _cfg("-"))
  assert _targets(tok, pr[0]).replace(" ", "") == "goodbye</s>"


def test_truncation_policies(tok):
  rec = {"prompt": "hello " * 20, "response": "good bye"}
  cut, stats = demos.examples_from_records([rec], tok, _cfg("-", max_len=8, prompt_template=
                                                            "{prompt}"))
  assert stats.truncated == 1 and len(cut[0].tokens) == 8
  assert _targets(tok, cut[0]) == "goodbye</s>"
  skipped, stats = demos.examples_from_records([rec], tok, _cfg("-", max_len=8,
                                                                truncation="skip"))
  assert not skipped and stats.skipped_long == 1
  with pytest.raises(ShapeError, match="record 0 is .* tokens, longer than data.max_len=8"):
    demos.examples_from_records([rec], tok, _cfg("-", max_len=8, truncation="error"))
  empty, stats = demos.examples_from_records([{"prompt": "hi", "response": "  "}], tok, _cfg("-"))
  assert not empty and stats.skipped_empty == 1


def test_bad_files_and_records_name_the_problem(tmp_path, tok):
  with pytest.raises(DataError, match="nope.jsonl.*does not exist"):
    demos.load_examples(_cfg(str(tmp_path / "nope.jsonl")), tok, "train")
  bad_ext = tmp_path / "d.csv"
  bad_ext.write_text("a,b\n")
  with pytest.raises(DataError, match="unsupported file type .csv"):
    demos.load_examples(_cfg(str(bad_ext)), tok, "train")
  path = _write_jsonl(tmp_path / "f.jsonl", [{"prompt": "hi", "response": "ok"},
                                             {"prompt": "hi", "answer": "ok"}])
  with pytest.raises(DataError, match=r"f.jsonl: record 1 has no field 'response' "
                                      r"\(its fields: \['answer', 'prompt'\]\)"):
    demos.load_examples(_cfg(path), tok, "train")
  broken = tmp_path / "broken.jsonl"
  broken.write_text('{"prompt": "hi", "response": "ok"}\n{"prompt": \n')
  with pytest.raises(DataError, match="broken.jsonl: could not be read"):
    demos.load_examples(_cfg(str(broken)), tok, "train")
  with pytest.raises(DataError, match="tokenizer directory"):
    load_tokenizer(str(tmp_path / "no_tok"))


def test_hash_split_is_disjoint_and_deterministic(tmp_path, tok):
  recs = [{"prompt": f"hello {w} {v}", "response": "ok"} for w in WORDS for v in WORDS[:8]]
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


def test_batch_iterator_resumes_exactly_and_eval_shapes_are_fixed():
  rng = np.random.default_rng(0)
  exs = [batching.make_example(rng.integers(1, 50, n), rng.random(n) > 0.5)
         for n in rng.integers(3, 12, 37)]
  it = batching.BatchIterator(exs, 8, 16, 0, seed=1)
  for _ in range(7):  # crosses an epoch boundary (37 examples)
    it.next()
  saved = it.state()
  expected = [it.next() for _ in range(6)]
  other = batching.BatchIterator(exs, 8, 16, 0, seed=1)
  other.restore(saved)
  for a, b in zip(expected, [other.next() for _ in range(6)]):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # Two processes see the two halves of the same global batch.
  halves = [batching.BatchIterator(exs, 8, 16, 0, seed=1, process_index=i, process_count=2)
            for i in range(2)]
  whole = batching.BatchIterator(exs, 8, 16, 0, seed=1).next()
  np.testing.assert_array_equal(np.concatenate([h.next()["tokens"] for h in halves]),
                                whole["tokens"])
  shapes = {b["tokens"].shape for b in batching.eval_batches(exs, 8, 16, 0)}
  assert shapes == {(8, 16)}
  last = list(batching.eval_batches(exs, 8, 16, 0))[-1]
  assert not last["attention_mask"][5:].any()
  packed = batching.pack_examples(exs, 16)
  assert all(len(e.tokens) == 16 for e in packed)


def test_real_hh_rlhf_dialogues(shared_data, tmp_path, tok):
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


def test_real_alpaca_demonstrations(shared_data):
  path = str(shared_data / "alpaca_eval" / "demonstrations_gpt4.jsonl.gz")
  from rlhf_jax.data import builtin_task
  cfg = demos.DemoConfig(source=path, prompt_field="instruction", response_field="output",
                         max_len=4096, eval_fraction=0.1)
  train, _ = demos.load_examples(cfg, builtin_task.tokenizer(), "train")
  evals, _ = demos.load_examples(cfg, builtin_task.tokenizer(), "eval")
  assert len(train) + len(evals) == 805 and 40 < len(evals) < 130
