"""Reward model: a scalar reward learned from comparisons (pairs or K-way rankings).

  python -m rlhf_jax.main --config=configs/sft.py        # first: the SFT policy (runs/sft)
  python -m rlhf_jax.main --config=configs/reward.py     # built-in task, CPU, minutes
  python -m rlhf_jax.main --config=configs/reward.py:hh --config.init.hf_checkpoint=/ckpt/...
  python -m rlhf_jax.main --config=configs/reward.py:hh_scratch \
      --config.data.source=../shared/data/hh-rlhf    # a small RM from scratch, local files

Presets (`:name`): "" (built-in task: SFT samples ranked by simulated labelers), "hh"
(Anthropic/hh-rlhf on the hub, from a Hugging Face checkpoint), "hh_scratch" (hh-rlhf-format
files, a small model from scratch with a BPE tokenizer trained on the training split, summed
token scores and the language-modelling regulariser), "pairs"
(prompt/chosen/rejected records from a checkpoint), "ranked" (prompt/responses/ranking records),
"smollm2" (SmolLM2-135M-Instruct with LoRA on local hh-rlhf helpful-base, CPU-sized).
"""

from ml_collections import config_dict

from rlhf_jax import config_base


def get_config(arg=None):
  preset, _ = config_base.parse_arg(arg)
  c = config_base.base_config("reward")
  c.init.from_workdir = "runs/sft"  # InstructGPT: the RM starts from the SFT model
  c.data.update({
      # "hh" (chosen/rejected dialogues), "pairs" (prompt/chosen/rejected) or "ranked"
      # (prompt/responses/ranking); ignored for the built-in task.
      "format": "hh",
      "chosen_field": "chosen",  # "hh"/"pairs": the preferred response (or dialogue)
      "rejected_field": "rejected",  # "hh"/"pairs": the other one
      "responses_field": "responses",  # "ranked": the list of responses
      "ranking_field": "ranking",  # response indices, best first
      "scores_field": "",  # "ranked": a score per response instead (higher better, = ties)
      "margin_field": "",  # "pairs": a per-record margin added to loss.margin
  })
  c.data.max_len = 64
  c.data.eval_fraction = 0.2
  # A validation slice of the training comparisons: periodic evals read it (choose settings on
  # it). Without one they read training comparisons (logged as train_slice_*). Either way the
  # held-out split is read once, after training.
  c.data.valid_fraction = 0.0
  c.data.builtin_train = 4000  # prompts, each with num_responses ranked samples
  c.data.builtin_eval = 400
  # Built-in task only: K samples per prompt, from this SFT workdir ("" = init.from_workdir),
  # ranked by one of num_labelers simulated labelers.
  c.data.num_responses = 4
  c.data.num_labelers = 3  # simulated labelers; each prompt gets one of them
  c.data.policy_workdir = ""  # the SFT workdir sampled ("" = init.from_workdir)
  c.data.sample_temperature = 1.0  # of those samples
  c.loss = config_dict.ConfigDict({
      "margin": 0.0,  # Llama 2's margin, added to every pair
      "per_prompt": True,  # InstructGPT: average a prompt's K(K-1)/2 pairs, then prompts
      "center_coef": 0.0,  # coef · mean(r²): keeps rewards centred
      # coef · next-token loss on every token of the rows (keeps an LM head): regularises a
      # reward model trained on few comparisons; 0 = off.
      "lm_coef": 0.0,
  })
  c.train.steps = 800
  c.train.batch_size = 16
  c.train.log_every = 50
  c.train.eval_every = 200
  c.train.eval_batches = 0  # the whole held-out set
  c.train.checkpoint_every = 200
  c.train.num_samples = 0
  # reward_norm.json's gain and bias are fitted on the responses of the first N training
  # comparisons (read once, after training).
  c.train.norm_comparisons = 2048
  c.optim.learning_rate = 5e-4
  c.optim.warmup_steps = 20
  if preset in ("hh", "pairs", "ranked"):
    c.init.from_workdir = ""
    c.data.tokenizer = ""  # the checkpoint's own tokenizer
    c.data.max_len = 1024
    c.data.format = preset
    c.model.dtype = "bfloat16"
    c.model.remat = "dots_no_batch"
    c.optim.learning_rate = 1e-5
    c.optim.weight_decay = 0.01
    c.train.batch_size = 64
    c.train.steps = 1000
    c.train.eval_every = 200
    c.train.eval_batches = 8
    c.train.checkpoint_every = 500
    c.data.eval_fraction = 0.05
    if preset == "hh":
      c.data.source = "Anthropic/hh-rlhf"
      c.data.eval_split = "test"
  elif preset == "smollm2":
    # SmolLM2-135M-Instruct with a LoRA and a fresh scalar head on hh-rlhf helpful-base (its
    # test split is all there is here: 90% trains, a hash-held-out 10% evaluates). The score is
    # read at <|im_end|>, where PPO reads it (the one rule of rlhf_jax/data/tokenizer.py).
    config_base.smollm2(c)
    c.data.source = config_base.shared_data("hh-rlhf/helpful-base/test.jsonl.gz")
    c.data.format = "hh"
    c.data.max_len = 384
    c.data.truncation = "skip"  # a cut prompt would lose the system prompt
    c.data.eval_fraction = 0.1
    c.data.max_records = 1200
    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 5
    c.train.update(batch_size=4, steps=40, log_every=10, eval_every=40, eval_batches=16,
                   checkpoint_every=20,  # 4 pairs = 8 rows a step
                   # 128 responses fit PPO's gain and bias; all 1,200 comparisons would cost
                   # the CPU ~1 h of 135M-parameter forward passes at 384 tokens.
                   norm_comparisons=64)
  elif preset == "hh_scratch":
    # Defaults that learn content, not only length and surface words: summed token scores
    # (`model.score_pooling="sum"`: every response token adds its score, so a matched word
    # counts wherever it sits and length is a free feature whose sign the context sets) and
    # the language-modelling regulariser (`loss.lm_coef=1`: next-token loss on every row, which
    # teaches a from-scratch trunk to relate the response to the prompt). On the synthetic
    # rules of tests/test_reward_rules.py, which need the prompt and the response read together,
    # these reach >= 95% held out where last-token pooling alone, or summed scores alone, stay
    # at 67-83% on the rule that matches a response word to the prompt (RM_NOTES of issue 16).
    # The price: the LM head's logits cost throughput; set loss.lm_coef=0 for speed.
    c.model.score_pooling = "sum"
    c.loss.lm_coef = 1.0
    c.init.from_workdir = ""
    c.data.source = "Anthropic/hh-rlhf"
    c.data.format = "hh"
    c.data.tokenizer = "bpe:4096"  # trained on the training split, saved in the workdir
    c.data.max_len = 192
    c.data.truncation = "truncate_prompt_left"
    c.model.preset = "tiny"
    c.model.vocab_size = 4096
    c.model.max_seq_len = 192
    c.train.batch_size = 32
    c.train.steps = 600
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.optim.learning_rate = 1e-3
    c.optim.weight_decay = 0.1
  elif preset:
    raise ValueError(f"configs/reward.py: unknown preset {preset!r}; use hh, hh_scratch, pairs, "
                     "ranked, smollm2")
  c.workdir = f"runs/reward{'_' + preset if preset else ''}"
  return c
