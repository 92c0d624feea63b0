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

Here: `run` (the loop, checkpoints, preemption) and `iteration` (sample → score → update → KL
controller, one screen); the setup is `rl_setup.py`, the evaluation and the report `rl_eval.py`.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import metrics, parallel, preemption
from rlhf_jax.errors import Preempted
from rlhf_jax.reward.function_runner import function_stats
from rlhf_jax.rl import kl as kl_lib
from rlhf_jax.rl import ppo
from rlhf_jax.rl.losses import explained_variance
from rlhf_jax.train import rl_eval, rl_state
from rlhf_jax.train.rl_setup import RLRun, setup
from rlhf_jax.train_state import TrainState


def run(config, workdir: str) -> dict:
  """Runs the RL stage of `config` into `workdir` (resuming it), after the pipeline's upstream
  stages; returns {"iteration", "state", "summary", "compiled"}."""
  rl, state = setup(config, workdir)
  cfg, tc, stage = rl.cfg, config.train, rl.stage
  it = int(state.step)
  stop = min(tc.stop_at or cfg.iterations, cfg.iterations)
  if it == 0:
    rl_eval.evaluate_start(rl, state)
  progress = metrics.Progress(cfg.iterations, start=it)
  last_eval = None
  try:
    with preemption.watch(stage) as preempt:
      while it < stop:
        state, vals = iteration(rl, state, it)
        it += 1
        _log(rl, it, vals, progress)
        if it % tc.eval_every == 0 or it == cfg.iterations:
          last_eval = rl.writer.write(it, rl_eval.evaluate(rl, state))
        _checkpoint(rl, it, state, stop, preempt)
  finally:
    rl.ckpt.close()
  summary = None
  if it >= cfg.iterations:
    summary = rl_eval.final_report(stage, workdir, os.path.join(workdir, rl_eval.SFT_EVAL_FILE),
                                   last_eval or rl_eval.evaluate(rl, state), it, cfg, rl.writer)
  else:
    rl.writer.text(f"[{stage}] stopped at iteration {it} of {cfg.iterations} (train.stop_at); "
                   "run the same command again to resume")
  rl.writer.close()
  return {"iteration": it, "state": state, "summary": summary, "compiled": rl.fns.jitted}


def iteration(rl: RLRun, state, it: int):
  """RL iteration `it` -> (the next RLState, its metrics): sample, score, update, KL control."""
  cfg = rl.cfg
  rng, k_sample, k_update = jax.random.split(state.rng, 3)
  smp, ro, fn_host, (t_gen, t_fn, t_score) = sample_and_score(
      rl, state, rl.iteration_prompts(it), k_sample, rl.iteration_meta(it), f"iteration {it}")
  gold = rl.gold(smp)
  policy, critic, umet, explained, t_update = update(rl, state, ro, k_update)
  skipped = rl.guard.check(it + 1, umet)
  vals, kl_seq = rl_eval.rollout_stats(cfg, ro, gold, smp.mask_BxN)
  beta = np.float32(state.kl_coef)
  new_beta = next_kl_coef(cfg, beta, kl_seq, skipped)
  state = next_state(rl.mesh, it + 1, policy, critic, rng, new_beta)
  vals.update(function_stats(fn_host))
  vals["beta"] = float(beta)
  vals["explained_variance"] = float(parallel.to_host(explained))
  vals.update({k: float(parallel.to_host(v)) for k, v in umet.items()})
  vals.update(time_generate=t_gen, time_score=t_score, time_update=t_update,
              **({"time_functions": t_fn} if fn_host else {}),
              samples=cfg.rollout_batch * (it + 1))
  return state, vals


def sample_and_score(rl: RLRun, st, prompts: list[list[int]], rng, metas=None, what="batch"):
  """(the sampled batch, the scored rollout on the mesh, the reward functions' scores {name:
  [B]} on the host, (generate s, functions s, score s)) of `prompts`. The functions run on the
  host between the two compiled programs, on this process's rows (`RLRun.function_scores`)."""
  t0 = time.perf_counter()
  smp = rl.sample(st, prompts, rng)
  t1 = time.perf_counter()
  fn_dev, fn_host = rl.function_scores(smp, metas or [{} for _ in prompts], what)
  t2 = time.perf_counter()
  dev = smp.on_mesh
  ro = rl.fns.score(st.params, rl.reference(st), rl.critic_params(st), rl.rm_params, st.kl_coef,
                    dev["prompt"], dev["prompt_mask"], dev["tokens"], dev["mask"],
                    dev["logprobs"], fn_dev)
  jax.block_until_ready(ro)
  return smp, ro, fn_host, (t1 - t0, t2 - t1, time.perf_counter() - t2)


def update(rl: RLRun, state, ro: dict, rng):
  """(policy TrainState, critic, update metrics, explained variance, seconds): epochs ×
  minibatches over the rollout (and the PPO-ptx batches), one compiled program."""
  ptx_batch = None
  if rl.ptx is not None:
    ptx_batch = jax.device_put(rl.ptx.next(), rl.fns.ptx_sharding)
  t0 = time.perf_counter()
  policy = TrainState(step=jnp.zeros((), jnp.int32), params=state.params,
                      opt_state=state.opt_state, rng=jnp.zeros((2,), jnp.uint32))
  explained = explained_variance(ro["values"], ro["returns"], ro["response_mask"])
  policy, critic, umet = rl.fns.update(policy, state.critic, {k: ro[k] for k in ppo.ROLLOUT_KEYS},
                                       rng, ptx_batch, state.kl_coef)
  jax.block_until_ready(umet)
  return policy, critic, umet, explained, time.perf_counter() - t0


def next_kl_coef(cfg, beta: np.float32, kl_seq_B: np.ndarray, skipped: bool) -> np.float32:
  """β after this iteration: the adaptive controller's step toward the KL target, or β as it was
  (fixed β, a skipped update, a non-finite KL: β is never NaN)."""
  kl_now = float(np.mean(kl_seq_B))
  if cfg.adaptive_kl and not skipped and np.isfinite(kl_now):
    return np.float32(kl_lib.adaptive_kl_coef(float(beta), kl_now, cfg.rollout_batch,
                                              cfg.kl_target, cfg.kl_horizon))
  return beta


def next_state(mesh, it: int, policy, critic, rng, beta: np.float32) -> rl_state.RLState:
  """The RLState after iteration `it`. Scalars and keys are placed on the whole mesh (a
  checkpoint of several processes can only hold global arrays)."""
  rep = parallel.replicated(mesh)
  return rl_state.RLState(step=jax.device_put(jnp.asarray(it, jnp.int32), rep),
                          params=policy.params, opt_state=policy.opt_state,
                          rng=jax.device_put(rng, rep), critic=critic,
                          kl_coef=jax.device_put(jnp.asarray(beta, jnp.float32), rep))


def _log(rl: RLRun, it: int, vals: dict, progress) -> None:
  """metrics.jsonl every iteration; the console every train.log_every, the first and last."""
  tc = rl.config.train
  if it % tc.log_every == 0 or it == rl.cfg.iterations or it == 1:
    rl.writer.write(it, vals)
    rl.writer.text(f"  progress {progress.eta(it)}")
  else:
    rl.writer.write(it, vals, console=False)


def _checkpoint(rl: RLRun, it: int, state, stop: int, preempt) -> None:
  """Saves every train.checkpoint_every iterations and at the stop; on SIGTERM saves (if not
  just saved) and raises Preempted."""
  saved = it % rl.config.train.checkpoint_every == 0 or it == stop
  meta = {"iteration": it}
  if rl.ptx is not None:
    meta["ptx"] = rl.ptx.state()
  if saved:
    rl.ckpt.save(it, state, meta, force=True)
  if preempt.requested(it):
    if not saved:
      rl.ckpt.save(it, state, meta, force=True)
    rl.ckpt.close()  # waits until the checkpoint is on disk
    raise Preempted(rl.stage, it, rl.ckpt.directory, preempt.signal_name)
