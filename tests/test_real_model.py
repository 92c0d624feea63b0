"""SmolLM2-135M-Instruct, a real pretrained chat model, through our decoder, sampler and export.

Uses the checkpoint `python -m rlhf_jax.models.fetch` converts (CI runs it before pytest) and
skips with that command when it is absent. Equivalences, fp32: our logits = transformers' on
left-padded chat prompts; our greedy decoding = transformers' `generate`, token for token, up to
and including `<|im_end|>`; the sampler's log-probs = a teacher-forced pass over its samples.
"""

import os

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rlhf_jax import sampling  # pylint: disable=g-import-not-at-top
from rlhf_jax.data.tokenizer import HFTokenizer  # pylint: disable=g-import-not-at-top
from rlhf_jax.models import fetch, forward, hf  # pylint: disable=g-import-not-at-top
from rlhf_jax.rl.rollout import response_outputs  # pylint: disable=g-import-not-at-top

QUESTIONS = ("What is the capital of France?", "Give me one tip for sleeping better.",
             "Write a haiku about the sea.")


@pytest.fixture(scope="module")
def smol():
  path = fetch.find()
  if path is None:
    pytest.skip(f"SmolLM2 is not converted at {fetch.default_dir()}; run `{fetch.FETCH_COMMAND}`")
  cfg, params = hf.load_checkpoint(path)
  params = jax.device_put(params)
  ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                          local_files_only=True).eval()
  return path, HFTokenizer(path), cfg, params, ref


def _prompts(tok):
  return [tok.apply_chat_template([{"role": "user", "content": q}], True) for q in QUESTIONS]


def test_logits_match_transformers_on_left_padded_chat_prompts(smol):
  _, tok, cfg, params, ref = smol
  tokens, mask = sampling.left_pad(_prompts(tok), tok.pad_id)
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  ours = np.asarray(forward(cfg, params, tokens, mask, positions)["logits"])
  with torch.no_grad():
    theirs = ref(input_ids=torch.tensor(tokens, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long),
                 position_ids=torch.tensor(positions, dtype=torch.long)).logits.numpy()
  diff = np.max(np.abs(ours - theirs)[mask])
  print(f"REAL-MODEL max |logit diff| {diff:.2e}")
  assert diff < 2e-3


def test_greedy_text_equals_transformers_generate(smol):
  _, tok, cfg, params, ref = smol
  prompts, n = _prompts(tok), 32
  tokens, mask = sampling.left_pad(prompts, tok.pad_id)
  out = sampling.generate(params, tokens, mask, jax.random.PRNGKey(0), model_cfg=cfg,
                          cfg=sampling.SamplingConfig(max_new_tokens=n, temperature=0.0),
                          eos_id=tok.eos_id, pad_id=tok.pad_id)
  resp, rmask = np.asarray(out["tokens"]), np.asarray(out["mask"])
  for i, p in enumerate(prompts):
    with torch.no_grad():
      g = ref.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                       do_sample=False, max_new_tokens=n, eos_token_id=tok.eos_id,
                       pad_token_id=tok.pad_id)
    theirs = [int(t) for t in g[0, len(p):]]
    ours = [int(t) for t, m in zip(resp[i], rmask[i]) if m]
    assert ours == theirs, (tok.decode(ours), tok.decode(theirs))


def test_sampler_logprobs_equal_teacher_forced_logprobs(smol):
  _, tok, cfg, params, _ = smol
  tokens, mask = sampling.left_pad(_prompts(tok)[:2], tok.pad_id)
  out = sampling.generate(params, tokens, mask, jax.random.PRNGKey(1), model_cfg=cfg,
                          cfg=sampling.SamplingConfig(max_new_tokens=16, temperature=0.8),
                          eos_id=tok.eos_id, pad_id=tok.pad_id)
  rmask = np.asarray(out["mask"])
  full = np.concatenate([tokens, np.asarray(out["tokens"])], axis=1)
  fmask = np.concatenate([mask, rmask], axis=1)
  tf = response_outputs(cfg, params, full, fmask, tokens.shape[1], 0.8)["logprobs"]
  diff = np.max(np.abs(np.where(rmask, np.asarray(tf) - np.asarray(out["logprobs"]), 0.0)))
  assert rmask.sum() > 8 and diff < 2e-3, diff


def test_fetch_is_idempotent_and_marks_its_check(smol):
  path = smol[0]
  assert fetch.fetch(path) == path  # a finished directory is not converted again
  assert os.path.isfile(os.path.join(path, "generation_config.json"))


def test_export_generates_as_the_source_does(smol, tmp_path):
  """A workdir holding SmolLM2 exports to a directory on which transformers' `generate`, with
  its defaults, gives the source's tokens and stops at `<|im_end|>` as the source does."""
  import chat_tokenizers  # pylint: disable=g-import-not-at-top

  from rlhf_jax import export  # pylint: disable=g-import-not-at-top
  path, tok, _, _, ref = smol
  wd = chat_tokenizers.workdir_from_checkpoint(path, str(tmp_path / "sft"))
  out = str(tmp_path / "export")
  export.export(wd, out)
  exported = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  ids = torch.tensor([_prompts(tok)[0]])
  with torch.no_grad():
    a = ref.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                     max_new_tokens=48)[0, ids.shape[1]:].tolist()
    b = exported.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=48)[0, ids.shape[1]:].tolist()
  assert a == b and a[-1] == tok.eos_id and len(a) < 48, tok.decode(b, False)
  again = transformers.AutoTokenizer.from_pretrained(out)
  assert again.chat_template == transformers.AutoTokenizer.from_pretrained(path).chat_template


@pytest.mark.slow
def test_real_answers_fit_the_presets_length(smol):
  """Greedy SmolLM2 answers to held-out hh-rlhf prompts end with <|im_end|> within the presets'
  160 new tokens (the built-in task's 40 would cut most of them and give the missing-EOS score)."""
  from rlhf_jax import config_base  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import rl_data  # pylint: disable=g-import-not-at-top
  _, tok, cfg, params, _ = smol
  c = config_base.from_file(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), "configs", "ppo.py:smollm2"))
  if not os.path.exists(c.data.source):
    pytest.skip(f"{c.data.source} is absent")
  prompts = rl_data.build(c, tok).eval_prompts[:8]
  tokens, mask = sampling.left_pad(prompts, tok.pad_id)
  ends = {}
  for n in (40, c.rl.max_new_tokens):
    out = sampling.generate(params, tokens, mask, jax.random.PRNGKey(0), model_cfg=cfg,
                            cfg=sampling.SamplingConfig(max_new_tokens=n, temperature=0.0),
                            eos_id=tok.eos_id, pad_id=tok.pad_id)
    ends[n] = int(np.sum(np.any(np.asarray(out["tokens"]) == tok.eos_id, axis=1)))
  print(f"REAL-MODEL answers ending within 40 / {c.rl.max_new_tokens} tokens: {ends}")
  assert ends[c.rl.max_new_tokens] >= 6 and ends[c.rl.max_new_tokens] > ends[40]
