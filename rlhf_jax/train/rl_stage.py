"""The RL fine-tuning stage: PPO, A2C, GRPO or RLOO of the SFT policy against the reward model(s), with a
KL penalty to the frozen SFT reference.

`run(config, workdir)` first runs the pipeline's upstream stages that have not finished
(pretraining, SFT, then the reward model; see `pipeline.py`), then iterates:

  prompts ─► generate (policy, KV cache, one while_loop) ─► score_rollout (old / reference
  log-probs, values, RM score, rewards, GAE) ─► update (epochs × minibatches, one program)
  ─► β from the adaptive KL controller

Every pass over weights is a jitted function with explicit shardings on the config's mesh; the
policy and critic states are donated to the update that replaces them; the reference and reward
models are separate, frozen pytrees. Each iteration logs the RM and gold scores, KL (per
sequence and per token), β, entropy, response length, EOS rate, clip fraction, approx-KL, value
loss, explained variance and the time split generate / score / update. Held-out prompts are
evaluated at iteration 0 (the SFT policy) and every `train.eval_every` iterations; the end of the
run writes `summary.json`, a one-screen SFT-vs-RL table and `rl_curves.png` (reward and gold
score against KL and against iterations). Checkpoints hold the whole RL state (`rl_state.py`), so
a resumed run continues bitwise as an uninterrupted one would.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import checkpoint, metrics, nonfinite, parallel, preemption, sampling
from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError, DataError, NonFiniteError, Preempted
from rlhf_jax.models import lora
from rlhf_jax.reward.model import check_tokenizers, load_reward_models, normalized_head
from rlhf_jax.rl import kl as kl_lib
from rlhf_jax.rl import ppo
from rlhf_jax.rl.config import ALGORITHMS, RLConfig
from rlhf_jax.rl.losses import explained_variance
from rlhf_jax.rl.compiled import compile_rl
from rlhf_jax.train import model_init, pipeline, rl_data, rl_state
from rlhf_jax.train.loop import check_train_section, lora_summary, make_optimizer
from rlhf_jax.train_state import TrainState, param_shardings

SUMMARY_FILE = "summary.json"
PLOT_FILE = "rl_curves.png"


def run(config, workdir: str) -> dict:
  stage = config.stage
  if stage not in ALGORITHMS:
    raise ConfigError(f"stage={stage!r}: the RL loop runs one of {ALGORITHMS}")
  cfg = RLConfig.from_dict(config.rl)
  if cfg.algorithm != stage:
    raise ConfigError(f"stage={stage!r} but rl.algorithm={cfg.algorithm!r}; make them agree")
  pipeline.run_upstream(config)
  tc = config.train
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  div = parallel.batch_divisor(mesh, rules)
  for name, size in (("rl.rollout_batch", cfg.rollout_batch),
                     ("rl.rollout_batch / rl.minibatches", cfg.minibatch_size)) + (
                         (("rl.ptx_batch", cfg.ptx_batch),) if cfg.ptx_coef else ()):
    if size % div:
      raise ConfigError(f"{name}={size} does not divide over the mesh's batch axes (size {div} "
                        f"of {dict(mesh.shape)})")
  check_train_section(tc)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints)
  latest = ckpt.latest_step()
  writer = metrics.MetricWriter(workdir, prefix=stage, resume_step=latest)
  tokenizer = lm_data.load_tokenizer(config)
  tok_spec = lm_data.tokenizer_spec(config)

  # The frozen reference is the starting policy (the SFT params); it is re-read on resume.
  model_init.require_source(
      config, "RL starts from a policy: set init.from_workdir (an SFT workdir) or "
              "init.hf_checkpoint")
  model_cfg, start_params = model_init.build(config, tokenizer, heads="lm")
  if model_cfg.lora_rank:
    ref_params = None  # the policy's own base with its adapters off: no second copy
  else:
    ref_params = jax.device_put(start_params, param_shardings(model_cfg, mesh, rules, "lm")[1])
  if cfg.max_new_tokens + config.data.max_prompt_len > model_cfg.max_seq_len:
    raise ConfigError(f"data.max_prompt_len={config.data.max_prompt_len} + "
                      f"rl.max_new_tokens={cfg.max_new_tokens} exceeds the model's "
                      f"max_seq_len={model_cfg.max_seq_len}")
  reward_models, rule = load_reward_models(config.reward, config)
  check_tokenizers(reward_models, tok_spec)
  rm_params = [rm.params for rm in reward_models]

  heads = "lm+score" if cfg.critic == "shared" else "lm"
  critic_cfg = critic_params = None
  if cfg.critic == "separate":
    if cfg.critic_init == "reward":
      critic_cfg, critic_params = model_init.load_workdir_params(
          reward_models[0].workdir, config, heads="score")
      critic_params = normalized_head(critic_params, reward_models[0].gain, reward_models[0].bias)
      critic_cfg = lora.configure(critic_cfg, config.model)  # LoRA trains the critic's too
      critic_params = lora.attach(critic_params, critic_cfg, "score", config.seed)
    else:
      critic_cfg = model_cfg
      critic_params = model_init.adapt_heads(start_params, model_cfg, "lm", "score", config.seed)
  policy_params = model_init.adapt_heads(start_params, model_cfg, "lm", heads, config.seed)
  del start_params

  def reference(st):
    """The frozen reference's params: the SFT copy, or under LoRA the policy's base."""
    if ref_params is not None:
      return ref_params
    return model_init.adapt_heads(lora.base_params(st.params), model_cfg, heads, "lm",
                                  config.seed)

  steps = cfg.iterations * cfg.epochs * cfg.minibatches
  tx_policy = make_optimizer(config.optim, steps, model_cfg)
  tx_critic = make_optimizer(config.critic_optim, steps, critic_cfg)
  data = rl_data.build(config, tokenizer)
  ptx = (rl_data.PtxBatches(config.pipeline.sft if "pipeline" in config else None, tokenizer,
                            cfg.ptx_batch, cfg.epochs * cfg.minibatches, config.seed)
         if cfg.ptx_coef else None)
  abstract, shardings, pol_sh, cri_sh = rl_state.abstract_and_shardings(
      model_cfg, heads, tx_policy, critic_cfg, tx_critic, mesh, rules)
  if latest is not None:
    state, meta = ckpt.restore(abstract, shardings)
    if ptx is not None:
      ptx.restore(meta["ptx"])
    writer.text(f"[{stage}] resumed from {ckpt.directory} at iteration {latest}")
  else:
    state = rl_state.create(model_cfg, heads, tx_policy, policy_params, critic_cfg, tx_critic,
                            critic_params, mesh, rules, config.seed, cfg.kl_coef)
  del policy_params, critic_params
  model_init.write_model_json(workdir, model_cfg, config, heads=heads,
                              extra={"tokenizer": tok_spec})
  src = config.init.from_workdir or config.init.hf_checkpoint
  writer.text(
      f"[{stage}] policy {model_cfg.num_params() / 1e6:.2f}M params from {src} (the frozen "
      f"reference too{'; adapters off' if model_cfg.lora_rank else ''})"
      f"{lora_summary(model_cfg)}; critic: {cfg.critic}"
      + (f" ({critic_cfg.num_params() / 1e6:.2f}M, from the {cfg.critic_init} model)"
         if critic_cfg else " value head") + f"; reward: {', '.join(r.name for r in reward_models)}"
      f" ({rule.kind}); mesh {dict(mesh.shape)} on {len(mesh.devices.flat)} "
      f"{jax.devices()[0].platform} device(s); {data.summary}")

  # ---- the compiled functions ------------------------------------------------------------------
  fns = compile_rl(model_cfg=model_cfg, critic_cfg=critic_cfg, heads=heads,
                   reward_models=reward_models, rule=rule, cfg=cfg, eos_id=tokenizer.eos_id,
                   pad_id=tokenizer.pad_id, mesh=mesh, rules=rules, policy_shardings=pol_sh,
                   critic_shardings=cri_sh, tx_policy=tx_policy, tx_critic=tx_critic,
                   with_ptx=ptx is not None)
  rep = parallel.replicated(mesh)

  def critic_params_of(st):
    return st.critic.params if critic_cfg is not None else st.critic

  def sample_and_score(st, prompts, rng):
    """(host prompt arrays, host response arrays, device rollout, timings) for one batch."""
    p_tok, p_mask = sampling.left_pad(prompts, tokenizer.pad_id, config.data.max_prompt_len)
    pid, procs = jax.process_index(), jax.process_count()
    rows = len(prompts) // procs
    local = {"t": p_tok[pid * rows:(pid + 1) * rows], "m": p_mask[pid * rows:(pid + 1) * rows]}
    dev = parallel.put_batch(local, mesh, rules)
    t0 = time.perf_counter()
    # One placement for every key (a derived key and a fresh one would compile twice).
    gen = fns.generate(st.params, dev["t"], dev["m"], jax.device_put(rng, rep))
    jax.block_until_ready(gen)
    t1 = time.perf_counter()
    ro = fns.score(st.params, reference(st), critic_params_of(st), rm_params, st.kl_coef, dev["t"],
                   dev["m"], gen["tokens"], gen["mask"], gen["logprobs"])
    jax.block_until_ready(ro)
    t2 = time.perf_counter()
    resp, rmask = parallel.to_host(gen["tokens"]), parallel.to_host(gen["mask"])
    return p_tok, p_mask, resp, rmask, ro, (t1 - t0, t2 - t1)

  def gold_of(p_tok, p_mask, resp, rmask):
    if data.gold_fn is None:
      return None
    return data.gold_fn(np.where(p_mask, p_tok, tokenizer.pad_id),
                        np.where(rmask, resp, tokenizer.pad_id))

  def rollout_stats(prefix, ro, gold, rmask):
    h = {k: parallel.to_host(ro[k]) for k in ("rm_score", "score", "kl_seq",
                                                       "kl_k1_seq", "has_eos")}
    lengths = rmask.sum(axis=1)
    out = {f"{prefix}rm_score": h["rm_score"].mean(), f"{prefix}score": h["score"].mean(),
           f"{prefix}kl": h["kl_k1_seq"].mean(),
           f"{prefix}kl_per_token": h["kl_k1_seq"].sum() / max(lengths.sum(), 1),
           f"{prefix}length": lengths.mean(), f"{prefix}eos_rate": h["has_eos"].mean()}
    if cfg.kl_estimator != "k1":
      out[f"{prefix}kl_{cfg.kl_estimator}"] = h["kl_seq"].mean()
    for k in ("logprob_diff_mean", "logprob_diff_max"):  # sampler vs teacher-forced policy
      out[f"{prefix}{k}"] = float(parallel.to_host(ro[k]))
    if gold is not None:
      out[f"{prefix}gold"] = float(np.mean(gold))
      out[f"{prefix}gold_std"] = float(np.std(gold))
    return out, h

  eval_key = jax.random.PRNGKey(config.seed + 2024)

  def evaluate(st, it):
    """Held-out prompts, same sampling settings as the rollouts, a fixed sampling key."""
    prompts = data.eval_prompts
    b = cfg.rollout_batch
    agg, golds, shown = [], [], []
    for s in range(0, len(prompts), b):
      part = prompts[s:s + b]
      padded = part + [part[-1]] * (b - len(part))
      p_tok, p_mask, resp, rmask, ro, _ = sample_and_score(st, padded,
                                                           jax.random.fold_in(eval_key, s))
      n = len(part)
      gold = gold_of(p_tok, p_mask, resp, rmask)
      h = {k: parallel.to_host(ro[k])[:n] for k in ("rm_score", "kl_k1_seq",
                                                            "has_eos")}
      h["length"] = rmask[:n].sum(axis=1)
      if gold is not None:
        golds.append(gold[:n])
      agg.append(h)
      if s == 0:
        for i in range(min(tc.num_samples, n)):
          text = tokenizer.decode([int(t) for t, m in zip(resp[i], rmask[i]) if m])
          g = f" gold {gold[i]:+.2f}" if gold is not None else ""
          shown.append(f"  sample {i}: {tokenizer.decode(part[i])!r} -> {text!r}  [RM "
                       f"{h['rm_score'][i]:+.2f}{g}]")
    cat = {k: np.concatenate([a[k] for a in agg]) for k in agg[0]}
    ev = {"eval_rm_score": cat["rm_score"].mean(), "eval_rm_score_std": cat["rm_score"].std(),
          "eval_kl": cat["kl_k1_seq"].mean(), "eval_length": cat["length"].mean(),
          "eval_eos_rate": cat["has_eos"].mean(), "eval_prompts": len(cat["length"])}
    if golds:
      g = np.concatenate(golds)
      ev.update(eval_gold=g.mean(), eval_gold_std=g.std())
    for line in shown:
      writer.text(line)
    return {k: float(v) for k, v in ev.items()}

  # ---- the loop -------------------------------------------------------------------------------
  it = int(state.step)
  stop = min(tc.stop_at or cfg.iterations, cfg.iterations)
  sft_path = os.path.join(workdir, "eval_sft.json")
  if it == 0:
    writer.text(f"[{stage}] held-out evaluation of the starting (SFT) policy:")
    sft_eval = writer.write(0, evaluate(state, 0))
    if jax.process_index() == 0:
      with open(sft_path, "w", encoding="utf-8") as f:
        json.dump(sft_eval, f, indent=1)
  progress = metrics.Progress(cfg.iterations, start=it)
  last_eval = None
  zeros_rng = lambda: jnp.zeros((2,), jnp.uint32)  # noqa: E731
  guard = nonfinite.Watch(stage, tc, ckpt, writer)
  try:
    with preemption.watch(stage) as preempt:
      while it < stop:
        rng, k_sample, k_update = jax.random.split(state.rng, 3)
        # group_size responses per prompt (GRPO, RLOO): each prompt repeated, prompt-major rows.
        prompts = [p for p in data.prompts_for(it, cfg.prompts_per_iteration, config.seed)
                   for _ in range(cfg.group_size)]
        p_tok, p_mask, resp, rmask, ro, (t_gen, t_score) = sample_and_score(state, prompts,
                                                                            k_sample)
        gold = gold_of(p_tok, p_mask, resp, rmask)
        ptx_batch = None
        if ptx is not None:
          host = ptx.next()
          ptx_batch = jax.device_put(host, fns.ptx_sharding)
        t0 = time.perf_counter()
        policy = TrainState(step=jnp.zeros((), jnp.int32), params=state.params,
                            opt_state=state.opt_state, rng=zeros_rng())
        explained = explained_variance(ro["values"], ro["returns"], ro["response_mask"])
        policy, critic, umet = fns.update(policy, state.critic,
                                          {k: ro[k] for k in ppo.ROLLOUT_KEYS}, k_update,
                                          ptx_batch, state.kl_coef)
        jax.block_until_ready(umet)
        t_update = time.perf_counter() - t0
        skipped = guard.check(it + 1, umet)
        vals, h = rollout_stats("", ro, gold, rmask)
        beta = np.float32(state.kl_coef)
        new_beta = beta
        kl_now = float(np.mean(h["kl_seq"]))
        if cfg.adaptive_kl and not skipped and np.isfinite(kl_now):  # β is never NaN
          new_beta = np.float32(kl_lib.adaptive_kl_coef(float(beta), kl_now, cfg.rollout_batch,
                                                        cfg.kl_target, cfg.kl_horizon))
        it += 1
        # Scalars and keys placed on the whole mesh (a checkpoint of several processes can only
        # hold global arrays).
        state = rl_state.RLState(step=jax.device_put(jnp.asarray(it, jnp.int32), rep),
                                 params=policy.params, opt_state=policy.opt_state,
                                 rng=jax.device_put(rng, rep), critic=critic,
                                 kl_coef=jax.device_put(jnp.asarray(new_beta, jnp.float32), rep))
        vals["beta"] = float(beta)
        vals["explained_variance"] = float(parallel.to_host(explained))
        vals.update({k: float(parallel.to_host(v)) for k, v in umet.items()})
        vals.update(time_generate=t_gen, time_score=t_score, time_update=t_update,
                    samples=cfg.rollout_batch * it)
        if it % tc.log_every == 0 or it == cfg.iterations or it == 1:
          writer.write(it, vals)
          writer.text(f"  progress {progress.eta(it)}")
        else:
          writer.write(it, vals, console=False)
        if it % tc.eval_every == 0 or it == cfg.iterations:
          last_eval = writer.write(it, evaluate(state, it))
        saved = it % tc.checkpoint_every == 0 or it == stop
        meta = {"iteration": it}
        if ptx is not None:
          meta["ptx"] = ptx.state()
        if saved:
          ckpt.save(it, state, meta, force=True)
        if preempt.requested(it):
          if not saved:
            ckpt.save(it, state, meta, force=True)
          ckpt.close()  # waits until the checkpoint is on disk
          raise Preempted(stage, it, ckpt.directory, preempt.signal_name)
  finally:
    ckpt.close()
  summary = None
  if it >= cfg.iterations:
    summary = _finish(stage, workdir, sft_path, last_eval or evaluate(state, it), it, cfg,
                      writer)
  else:
    writer.text(f"[{stage}] stopped at iteration {it} of {cfg.iterations} (train.stop_at); run "
                "the same command again to resume")
  writer.close()
  return {"iteration": it, "state": state, "summary": summary,
          "compiled": fns.jitted}


def _finish(stage, workdir, sft_path, final, it, cfg, writer):
  if not os.path.exists(sft_path):
    raise DataError(f"{sft_path} is missing: the iteration-0 evaluation of the SFT policy")
  with open(sft_path, encoding="utf-8") as f:
    sft = json.load(f)
  bad = sorted(k for d in (sft, final) for k, v in d.items() if not np.isfinite(v))
  if bad:
    raise NonFiniteError(f"[{stage}] the held-out evaluation holds NaN/Inf ({', '.join(bad)}): "
                         "no SFT-vs-RL table or gain is reported from it")
  rows = [("gold score (mean)", "eval_gold"), ("gold score (std)", "eval_gold_std"),
          ("RM score, normalised", "eval_rm_score"), ("KL to the reference (nats/seq)", "eval_kl"),
          ("response length (tokens)", "eval_length"), ("EOS rate", "eval_eos_rate")]
  name = stage.upper()
  lines = [f"[{stage}] held-out prompts ({int(final.get('eval_prompts', 0))}), sampled at "
           f"temperature {cfg.temperature}:",
           f"  {'':<32}{'SFT (reference)':>18}{name + f' (iteration {it})':>26}"]
  for label, key in rows:
    if key in sft and key in final:
      lines.append(f"  {label:<32}{sft[key]:>18.3f}{final[key]:>26.3f}")
  summary = {"sft": sft, "final": final, "iteration": it, "samples": it * cfg.rollout_batch}
  if "eval_gold" in sft:
    gain = (final["eval_gold"] - sft["eval_gold"]) / max(sft["eval_gold_std"], 1e-9)
    summary["gold_gain_in_sft_std"] = gain
    lines.append(f"  gold score gain: {gain:+.2f} standard deviations of the SFT policy's gold "
                 f"scores; KL {final['eval_kl']:.2f} nats (controller target "
                 f"{cfg.kl_target if cfg.adaptive_kl else 'none, fixed β'})")
  for line in lines:
    writer.text(line)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, SUMMARY_FILE), "w", encoding="utf-8") as f:
      json.dump(summary, f, indent=1)
    from rlhf_jax import plots  # pylint: disable=g-import-not-at-top
    path = plots.rl_curves(os.path.join(workdir, "metrics.jsonl"), stage,
                           os.path.join(workdir, PLOT_FILE))
    if path:
      writer.text(f"[{stage}] plot: {path}")
  return summary
