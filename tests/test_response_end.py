"""One rule for where a response ends (rlhf_jax/data/tokenizer.py's module doc): SFT targets,
reward-model / DPO rows, the sampler's stop and the RL reward all use the end-of-turn token, at a
ChatML template and at a plain one.

The equivalence tested: the row a comparison (RM, DPO) or a demonstration (SFT) renders for
(prompt, response) is token for token the row a rollout makes when the sampler emits that
response and stops, so the reward model is read at the token it was trained at."""

import numpy as np
import pytest

pytest.importorskip("transformers")

import chat_tokenizers  # pylint: disable=g-import-not-at-top

from rlhf_jax.data import demonstrations  # pylint: disable=g-import-not-at-top
from rlhf_jax.data.tokenizer import HFTokenizer  # pylint: disable=g-import-not-at-top
from rlhf_jax.data.comparisons import ComparisonConfig, comparisons_from_records  # pylint: disable=g-import-not-at-top

PROMPT, RESPONSE = "tell me a joke", "no why ok"


def _tok(tmp_path, **kw):
  chat_tokenizers.save_tokenizer(str(tmp_path / "tok"), **kw)
  return HFTokenizer(str(tmp_path / "tok"))


def _rollout_row(tok, template):
  """Prompt as the RL stages render it, then the sampled reply and the token the sampler stops
  at."""
  if template is None:
    prompt = tok.apply_chat_template([{"role": "user", "content": PROMPT}], True)
  else:
    prompt = tok.encode(template.format(prompt=PROMPT))
  reply = tok.encode(RESPONSE if template is None else " " + RESPONSE)
  return prompt + reply + [tok.eos_id], len(prompt)


def test_chatml_end_of_turn_is_eos_and_the_newline_after_it_is_not_trained(tmp_path):
  tok = _tok(tmp_path)
  assert tok.decode([tok.eos_id], False) == "<|im_end|>"
  ids, mask = tok.render_messages([{"role": "user", "content": PROMPT},
                                   {"role": "assistant", "content": RESPONSE}])
  assert ids[-1] == tok.eos_id and mask[-1], [tok.decode([i], False) for i in ids[-3:]]
  # No target after an end of turn: the "\n" ChatML puts after <|im_end|> is never learned.
  for k, t in enumerate(ids[:-1]):
    if t == tok.eos_id:
      assert not mask[k + 1]


def test_all_turns_trains_each_end_of_turn_but_not_the_newline(tmp_path):
  tok = _tok(tmp_path)
  msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "ok good"},
          {"role": "user", "content": "why"}, {"role": "assistant", "content": "no"}]
  ids, mask = tok.render_messages(msgs, [False, True, False, True])
  ends = [k for k, t in enumerate(ids) if t == tok.eos_id]
  trained_ends = [k for k in ends if mask[k]]
  assert len(trained_ends) == 2 and ids[-1] == tok.eos_id
  newline = tok.encode("\n")[0]
  assert not any(m and t == newline for t, m in zip(ids, mask))


def test_template_end_of_turn_wins_over_a_different_tokenizer_eos(tmp_path):
  """A base tokenizer (EOS <|endoftext|>) with a ChatML template: a turn ends at <|im_end|>, so
  the sampler must stop there too."""
  tok = _tok(tmp_path, eos="<|endoftext|>")
  assert tok.decode([tok.eos_id], False) == "<|im_end|>"


@pytest.mark.parametrize("template", [None, "user: {prompt} assistant:"],
                         ids=["chatml", "plain"])
def test_sft_and_comparison_rows_equal_the_rollout_row(tmp_path, template):
  tok = _tok(tmp_path, chat=template is None)
  want, p = _rollout_row(tok, template)
  cfg = demonstrations.DemoConfig(source="<memory>", prompt_template=template, max_len=64)
  (ex,), _ = demonstrations.examples_from_records([{"prompt": PROMPT, "response": RESPONSE}],
                                                   tok, cfg)
  assert list(ex.tokens) == want
  assert list(np.flatnonzero(ex.loss_mask)) == list(range(p, len(want)))
  ccfg = ComparisonConfig(source="<memory>", format="pairs", prompt_template=template,
                          max_len=64)
  rec = {"prompt": PROMPT, "chosen": RESPONSE, "rejected": "good bye"}
  comps, _ = comparisons_from_records([("<memory>", 0, rec)], tok, ccfg)
  assert [int(t) for t in comps[0].rows[0]] == want  # the reward is read at want[-1]: EOS
