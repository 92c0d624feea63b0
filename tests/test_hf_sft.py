"""SFT of a Hugging Face checkpoint directory on a demonstrations file, through the same command
a user runs: the loss falls, samples decode with the checkpoint's tokenizer, and the result
exports back to a directory transformers loads with the same logits."""

import json
import os
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rlhf_jax import stages  # pylint: disable=g-import-not-at-top
from rlhf_jax.models import forward, hf  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "hello world how are you i am fine thanks tell me a joke no why ok good bye".split()


def _checkpoint(path):
  from tokenizers import Tokenizer, models, pre_tokenizers
  vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "Human", "Assistant",
                                       ":"] + WORDS)}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Punctuation()])
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>",
                                              pad_token="<pad>", bos_token="<s>",
                                              eos_token="</s>")
  fast.save_pretrained(path)
  torch.manual_seed(0)
  cfg = transformers.Qwen2Config(vocab_size=32, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=64,
                                 tie_word_embeddings=True)
  transformers.Qwen2ForCausalLM(cfg).save_pretrained(path)


def test_sft_of_a_hf_checkpoint_then_export(tmp_path):
  ckpt = str(tmp_path / "ckpt")
  _checkpoint(ckpt)
  rng = np.random.default_rng(0)
  with open(tmp_path / "demos.jsonl", "w") as f:
    for _ in range(200):
      q = " ".join(rng.choice(WORDS, 3))
      f.write(json.dumps({"instruction": q, "output": q + " ok"}) + "\n")
  sys.path.insert(0, os.path.join(REPO, "configs"))
  import sft  # pylint: disable=g-import-not-at-top
  c = sft.get_config("alpaca")
  c.init.hf_checkpoint = ckpt
  c.data.source = str(tmp_path / "demos.jsonl")
  c.data.input_field = ""
  c.data.prompt_template = "Human : {prompt} Assistant :"
  c.data.max_len = 24
  c.model.dtype = "float32"
  c.model.remat = "none"
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 5
  c.train.update(steps=40, batch_size=16, eval_every=40, log_every=20, eval_batches=2,
                 num_samples=2, sample_tokens=6, checkpoint_every=40)
  out = stages.run(c, str(tmp_path / "run"))
  hist = out["history"]
  assert hist[-1]["eval_loss"] < hist[0]["eval_loss"] - 0.5, hist
  # The same command again resumes (the model's shape read from config.json alone).
  again = stages.run(c, str(tmp_path / "run"))
  assert again["step"] == 40 and again["history"][-1]["eval_loss"] == hist[-1]["eval_loss"]
  # Export the fine-tuned params; transformers reads them back with the same logits.
  cfg, _ = hf.load_checkpoint(ckpt)
  params = jax.device_get(out["state"].params)
  hf.save_checkpoint(str(tmp_path / "export"), cfg, params)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "export"),
                                                            dtype=torch.float32)
  tokens = np.array([[4, 6, 9, 10, 11, 5, 6]])
  ours = forward(cfg, params, tokens, np.ones_like(tokens, bool))["logits"]
  with torch.no_grad():
    theirs = model(torch.tensor(tokens)).logits.numpy()
  assert np.max(np.abs(np.asarray(ours) - theirs)) < 1e-4


def test_reward_model_from_a_hf_checkpoint_learns_pairs(tmp_path):
  """configs/reward.py:pairs from a Hugging Face checkpoint: the trunk is the checkpoint's, the
  scalar head is new, and held-out accuracy on an easy preference rises well above chance."""
  ckpt = str(tmp_path / "ckpt")
  _checkpoint(ckpt)
  rng = np.random.default_rng(0)
  with open(tmp_path / "pairs.jsonl", "w") as f:
    for _ in range(300):
      q = " ".join(rng.choice(WORDS, 3))
      good = " ".join(rng.choice(["good", "fine", "thanks"], 2))
      bad = " ".join(rng.choice(["no", "why", "bye"], 2))
      f.write(json.dumps({"prompt": q, "chosen": good, "rejected": bad}) + "\n")
  sys.path.insert(0, os.path.join(REPO, "configs"))
  import reward  # pylint: disable=g-import-not-at-top
  c = reward.get_config("pairs")
  c.init.hf_checkpoint = ckpt
  c.data.source = str(tmp_path / "pairs.jsonl")
  c.data.prompt_template = "Human : {prompt} Assistant :"
  c.data.max_len = 16
  c.data.eval_fraction = 0.2
  c.model.dtype = "float32"
  c.model.remat = "none"
  c.optim.learning_rate = 3e-3
  c.optim.warmup_steps = 0
  c.train.update(steps=30, batch_size=16, log_every=10, eval_every=30, eval_batches=0)
  out = stages.run(c, str(tmp_path / "rm"))
  params = jax.device_get(out["state"].params)
  assert "score_kernel" in params and "lm_head" not in params
  assert out["report"]["accuracy"] > 0.9, out["report"]
