"""Every stage that samples a list of prompts goes through `sampling.sample_chunks`, and each one's
samples are bitwise what its own loop gave before the helper (the loops are kept here, as they
were, as the reference): the sample stage, best-of-n, `evaluate_policies` and the reward stage's
comparison sampling (which now runs on the mesh). Also: the RL stage's held-out evaluation
program gives exactly the scoring program's RM score, KL and EOS.

Toy random models on 8 fake CPU devices, a 2×2×2 mesh (batch over data × fsdp)."""

import jax
import jax.numpy as jnp
import ml_collections as mc
import numpy as np
import pytest

from rlhf_jax import parallel, sampling
from rlhf_jax.data import builtin_task
from rlhf_jax.data.tokenizer import load_tokenizer
from rlhf_jax.models import ModelConfig, init_params
from rlhf_jax.reward import combine
from rlhf_jax.reward.model import RewardModel
from rlhf_jax.rl.config import RLConfig
from rlhf_jax.rl.rollout import evaluation_scores, score_rollout, sequence_scores
from rlhf_jax.train import best_of_n_stage, policy_eval, rl_data, rm_data, sample_stage
from rlhf_jax.workdir_model import param_shardings

TOK = load_tokenizer("builtin")
CFG = ModelConfig(vocab_size=TOK.vocab_size, hidden=32, num_layers=1, num_heads=4,
                  num_kv_heads=2, mlp_dim=64, max_seq_len=48, tie_embeddings=False)
WIDTH = 24  # prompt width
SCFG = sampling.SamplingConfig(max_new_tokens=8, temperature=1.0)


@pytest.fixture(scope="module")
def setting():
  """(mesh, rules, policy params on the mesh, a reward model, held-out built-in prompts)."""
  mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = parallel.DEFAULT_RULES
  assert parallel.batch_divisor(mesh, rules) == 4
  # Scaled up so that samples vary.
  params = jax.tree.map(lambda x: 3.0 * x, init_params(CFG, jax.random.PRNGKey(1)))
  params = jax.device_put(params, param_shardings(CFG, mesh, rules, "lm")[1])
  rm_params = jax.device_put(init_params(CFG, jax.random.PRNGKey(2), heads="score"),
                             param_shardings(CFG, mesh, rules, "score")[1])
  rm = RewardModel("rm", "", CFG, rm_params, 1.5, -0.2, "builtin")
  prompts = rl_data.builtin_prompts(10, "eval", 0)
  assert max(len(p) for p in prompts) <= WIDTH
  return mesh, rules, params, rm, prompts


def _old_chunks(params, rows, batch, key_of, width, mesh=None, rules=None, fill=True):
  """The loop each stage had: yields (start, real rows, host prompt tokens, mask, prompt on the
  mesh, generate's outputs), the batch placed with put_batch when given a mesh."""
  for start in range(0, len(rows), batch):
    part = rows[start:start + batch]
    padded = part + [part[-1]] * (batch - len(part)) if fill else part
    tok, mask = sampling.left_pad(padded, TOK.pad_id, width)
    t, m = tok, mask
    if mesh is not None:
      dev = parallel.put_batch({"t": tok, "m": mask}, mesh, rules)
      t, m = dev["t"], dev["m"]
    out = sampling.generate(params, t, m, key_of(start), model_cfg=CFG, cfg=SCFG,
                            eos_id=TOK.eos_id, pad_id=TOK.pad_id)
    yield start, len(part), tok, mask, (t, m), out


def _gold(tok, mask, resp, rmask):
  pad = TOK.pad_id
  return builtin_task.gold_scores(np.where(mask, tok, pad), np.where(rmask, resp, pad))


def test_sample_stage_records_are_unchanged(setting):
  mesh, rules, params, _, prompts = setting
  new = sample_stage.sample_records(params, CFG, TOK, prompts, builtin_task.gold_scores, SCFG,
                                    WIDTH, 4, 7, mesh, rules)
  old = []
  with jax.set_mesh(mesh):
    for _, n, tok, mask, _, out in _old_chunks(params, prompts, 4,
                                               lambda s: jax.random.PRNGKey(7 + s), WIDTH,
                                               mesh, rules):
      resp, rmask, logp = (parallel.to_host(out[k]) for k in ("tokens", "mask", "logprobs"))
      gold = _gold(tok, mask, resp, rmask)
      for i in range(n):
        ids = [int(t) for t, m in zip(resp[i], rmask[i]) if m]
        old.append({"tokens": len(ids), "response": TOK.decode(ids),
                    "eos": bool(ids and ids[-1] == TOK.eos_id), "logprob": float(logp[i].sum()),
                    "gold": float(gold[i])})
  assert len(new) == len(prompts) == 10
  assert [{k: r[k] for k in old[0]} for r in new] == old
  assert len({r["response"] for r in new}) > 5


def test_best_of_n_samples_and_scores_are_unchanged(setting):
  mesh, rules, params, rm, prompts = setting
  n_max, per_call = 3, 4
  rm_pn, gold_pn, keys_pn, texts = best_of_n_stage.sample_and_score(
      params, CFG, TOK, prompts, n_max, SCFG, WIDTH, per_call, 5, [rm], combine.CombineRule(),
      builtin_task.gold_scores, mesh, rules)
  score = jax.jit(lambda ps, t, m: sequence_scores([rm], combine.CombineRule(), ps, t, m)[0])
  rm_all, gold_all, keys = [], [], []
  with jax.set_mesh(mesh):
    for s in range(0, len(prompts), per_call):  # the old loop: chunks of prompts, then rows
      part = prompts[s:s + per_call]
      padded = part + [part[-1]] * (per_call - len(part))
      rows = [p for p in padded for _ in range(n_max)]
      (_, _, tok, mask, (t, m), out), = _old_chunks(params, rows, len(rows),
                                                    lambda _, s=s: jax.random.PRNGKey(5 + s),
                                                    WIDTH, mesh, rules)
      got = parallel.to_host(score([rm.params], jnp.concatenate([t, out["tokens"]], axis=1),
                                   jnp.concatenate([m, out["mask"]], axis=1)))
      resp, rmask = parallel.to_host(out["tokens"]), parallel.to_host(out["mask"])
      k = len(part) * n_max
      rm_all.append(got[:k].reshape(-1, n_max))
      gold_all.append(np.asarray(_gold(tok, mask, resp, rmask))[:k].reshape(-1, n_max))
      keys += [tuple(int(x) for x, y in zip(resp[i], rmask[i]) if y) for i in range(k)]
  np.testing.assert_array_equal(rm_pn, np.concatenate(rm_all))
  np.testing.assert_array_equal(gold_pn, np.concatenate(gold_all))
  assert keys_pn == [keys[i:i + n_max] for i in range(0, len(keys), n_max)]
  assert texts == [TOK.decode(list(x)) for x in keys]


def test_evaluate_policies_is_unchanged(setting):
  mesh, rules, params, rm, prompts = setting
  other = jax.tree.map(lambda x: 1.1 * x, params)
  config = mc.ConfigDict({"seed": 3, "eval_policy": {
      "max_new_tokens": SCFG.max_new_tokens, "temperature": SCFG.temperature, "batch_size": 4,
      "max_prompt_len": WIDTH, "prompts": len(prompts)}})
  new = policy_eval.evaluate_policies(config, CFG, TOK, mesh, rules, {"a": params, "b": other},
                                      prompts=prompts, gold_fn=builtin_task.gold_scores,
                                      reward=([rm], combine.CombineRule()), keep=5)
  from rlhf_jax.rl.rollout import response_outputs  # pylint: disable=g-import-not-at-top
  logps = jax.jit(lambda p, t, m: response_outputs(CFG, p, t, m, WIDTH, 1.0)["logprobs"])
  score = jax.jit(lambda ps, t, m: sequence_scores([rm], combine.CombineRule(), ps, t, m)[0])
  key = jax.random.PRNGKey(3 + 2024)
  with jax.set_mesh(mesh):
    for name, p in (("a", params), ("b", other)):
      cols, answers = {"kl": [], "length": [], "eos": [], "gold": [], "rm_score": []}, []
      for _, n, tok, mask, (t, m), out in _old_chunks(p, prompts, 4,
                                                      lambda s: jax.random.fold_in(key, s),
                                                      WIDTH, mesh, rules):
        full_t = jnp.concatenate([t, out["tokens"]], axis=1)
        full_m = jnp.concatenate([m, out["mask"]], axis=1)
        rp = parallel.to_host(logps(params, full_t, full_m))
        lp = parallel.to_host(logps(p, full_t, full_m))
        resp, rmask = parallel.to_host(out["tokens"]), parallel.to_host(out["mask"])
        cols["kl"].append(np.where(rmask, lp - rp, 0.0).sum(axis=1)[:n])
        cols["length"].append(rmask.sum(axis=1)[:n])
        cols["eos"].append(np.any(rmask & (resp == TOK.eos_id), axis=1)[:n])
        cols["gold"].append(np.asarray(_gold(tok, mask, resp, rmask))[:n])
        cols["rm_score"].append(parallel.to_host(score([rm.params], full_t, full_m))[:n])
        answers += [TOK.decode([int(x) for x in r[k]]) for r, k in zip(resp[:n], rmask[:n])]
      c = {k: np.concatenate(v) for k, v in cols.items()}
      want = {"kl": float(c["kl"].mean()), "length": float(c["length"].mean()),
              "eos_rate": float(c["eos"].mean()), "prompts": len(prompts),
              "gold": float(c["gold"].mean()), "gold_std": float(c["gold"].std()),
              "rm_score": float(c["rm_score"].mean()),
              "rm_score_std": float(c["rm_score"].std()), "answers": answers[:5]}
      assert new[name] == want, name
  assert new["a"]["kl"] == 0.0 and new["b"]["kl"] != 0.0


# 20 rows in one batch; in chunks of 8 (the last filled); 30 rows, which do not divide over the
# mesh's 4 batch shards: the one change, that batch rounds up to 32 (filled with the last row).
@pytest.mark.parametrize("k,chunk", [(2, 512), (2, 8), (3, 512)])
def test_reward_data_samples_are_unchanged_on_the_mesh(setting, k, chunk):
  mesh, rules, params, _, prompts = setting
  new = rm_data.sample_responses(params, CFG, prompts, k, SCFG.max_new_tokens, 1.0, 11, TOK,
                                 mesh, rules, chunk=chunk)
  rows = [p for p in prompts for _ in range(k)]
  # The old code: no mesh; chunks of `chunk` rows filled, or one unfilled batch of all rows.
  batch, fill = (chunk, True) if len(rows) > chunk else (len(rows), False)
  if batch % 4:
    batch, fill = 32, True
  out_rows = []
  for _, n, _, _, _, out in _old_chunks(params, rows, batch, lambda s: jax.random.PRNGKey(11 + s),
                                        max(len(p) for p in prompts), fill=fill):
    toks, m = parallel.to_host(out["tokens"]), parallel.to_host(out["mask"])
    out_rows += [toks[r][m[r]].tolist() for r in range(n)]
  assert new == [out_rows[i * k:(i + 1) * k] for i in range(len(prompts))]


def test_rl_evaluation_program_equals_the_scoring_program():
  """The held-out evaluation's own program (no critic, rewards or advantages) gives exactly the
  RM score, k1 KL and EOS of the full scoring program, each compiled on its own."""
  cfg = RLConfig(rollout_batch=8, max_new_tokens=8, temperature=0.7)
  params = jax.tree.map(lambda x: 3.0 * x, init_params(CFG, jax.random.PRNGKey(1)))
  ref = init_params(CFG, jax.random.PRNGKey(5))
  rm_params = init_params(CFG, jax.random.PRNGKey(2), heads="score")
  critic = init_params(CFG, jax.random.PRNGKey(3), heads="score")
  rm = RewardModel("rm", "", CFG, rm_params, 1.5, -0.2, "builtin")
  p_tok, p_mask = sampling.left_pad(rl_data.builtin_prompts(8, "eval", 0), TOK.pad_id, WIDTH)
  out = sampling.generate(params, p_tok, p_mask, jax.random.PRNGKey(4), model_cfg=CFG,
                          cfg=sampling.SamplingConfig(max_new_tokens=8, temperature=0.7),
                          eos_id=TOK.eos_id, pad_id=TOK.pad_id)
  tokens = jnp.concatenate([p_tok, out["tokens"]], axis=1)
  mask = jnp.concatenate([p_mask, out["mask"]], axis=1)
  kw = dict(model_cfg=CFG, heads="lm", reward_models=[rm], rule=combine.CombineRule(), cfg=cfg,
            eos_id=TOK.eos_id)
  full = jax.jit(lambda *a: score_rollout(*a, critic_cfg=CFG, **kw))(
      params, ref, critic, [rm_params], jnp.float32(0.1), tokens, mask, out["mask"])
  ev = jax.jit(lambda *a: evaluation_scores(*a, **kw))(params, ref, [rm_params], tokens, mask,
                                                        out["mask"])
  assert set(ev) == {"rm_score", "kl_k1_seq", "has_eos"}
  for k in ev:
    np.testing.assert_array_equal(np.asarray(ev[k]), np.asarray(full[k]), err_msg=k)
  assert np.abs(np.asarray(ev["kl_k1_seq"])).max() > 0
