"""Setting up an RL run: the policy, the frozen reference, the reward model(s) and the critic; the
prompts; the compiled programs; the RL state, restored or born sharded.

`setup(config, workdir)` returns (`RLRun`, RLState): the run holds what stays fixed across
iterations, the state what each iteration replaces (`rl_state.py`).
Not for: the iteration itself (`rl_stage.py`) or the held-out evaluation (`rl_eval.py`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np

from rlhf_jax import checkpoint, metrics, nonfinite, parallel, sampling
from rlhf_jax.data import lm_data
from rlhf_jax.errors import ConfigError
from rlhf_jax.models import ModelConfig, lora
from rlhf_jax.reward import function_runner, pass_at_k
from rlhf_jax.reward.model import check_tokenizers, load_reward_models, normalized_head
from rlhf_jax.rl.compiled import RLFunctions, compile_rl
from rlhf_jax.rl.config import ALGORITHMS, RLConfig
from rlhf_jax.train import model_init, pipeline, rl_data, rl_state
from rlhf_jax.train.loop import check_train_section, lora_summary, make_optimizer
from rlhf_jax.train_state import param_shardings


@dataclasses.dataclass(frozen=True)
class Models:
  """The models of an RL run as loaded, before any state is made of them."""
  model_cfg: ModelConfig  # the policy's
  heads: str  # "lm", or "lm+score" with a value head on the policy (critic="shared")
  policy_params: Any  # the starting (SFT) params, with `heads`
  ref_params: Any  # the frozen reference on the mesh; None under LoRA (the policy's base)
  critic_cfg: ModelConfig | None  # a separate critic's; None without one
  critic_params: Any
  reward_models: list
  rule: Any  # how the reward models' scores combine


@dataclasses.dataclass(frozen=True)
class RLRun:
  """What stays fixed through an RL run."""
  config: Any
  cfg: RLConfig
  workdir: str
  mesh: Any
  rules: Any
  tokenizer: Any
  model_cfg: ModelConfig
  heads: str
  critic_cfg: ModelConfig | None
  ref_params: Any  # None under LoRA: the policy's own base, adapters off
  rm_params: list
  data: rl_data.RLData
  ptx: rl_data.PtxBatches | None
  fns: RLFunctions
  ckpt: checkpoint.Checkpointer
  writer: metrics.MetricWriter
  guard: nonfinite.Watch
  scorer: function_runner.FunctionScorer  # the reward functions (none: scores nothing)
  checker: function_runner.FunctionScorer | None  # pass@k's judge; None without pass@k

  @property
  def stage(self) -> str:
    return self.config.stage

  def reference(self, st):
    """The frozen reference's params: the SFT copy, or under LoRA the policy's base."""
    if self.ref_params is not None:
      return self.ref_params
    return model_init.adapt_heads(lora.base_params(st.params), self.model_cfg, self.heads, "lm",
                                  self.config.seed)

  def critic_params(self, st):
    """The separate critic's params, or the placeholder a shared value head leaves."""
    return st.critic.params if self.critic_cfg is not None else st.critic

  def iteration_prompts(self, it: int) -> list[list[int]]:
    """Iteration `it`'s prompts; group_size rows per prompt (GRPO, RLOO), prompt-major."""
    cfg = self.cfg
    return [p for p in self.data.prompts_for(it, cfg.prompts_per_iteration, self.config.seed)
            for _ in range(cfg.group_size)]

  def iteration_meta(self, it: int) -> list[dict]:
    """The metadata of `iteration_prompts(it)`'s rows, row for row."""
    cfg = self.cfg
    return [m for m in self.data.meta_for(it, cfg.prompts_per_iteration, self.config.seed)
            for _ in range(cfg.group_size)]

  def function_scores(self, smp: sampling.Samples, metas: list[dict], what: str, scorer=None):
    """({name: [B]} on the mesh, {name: [B]} on the host, all rows): the reward functions'
    scores of a sampled batch (`scorer`'s, default the run's). This process scores only its
    own rows (decoded on the host); `what` names the batch in errors ("iteration 3")."""
    scorer = scorer or self.scorer
    if not scorer.functions:
      return {}, {}
    own = function_runner.process_rows(len(metas), jax.process_index(), jax.process_count())
    tok, rows = self.tokenizer, range(own.start, own.stop)
    prompts = [tok.decode(smp.prompt_BxP[i][smp.prompt_mask_BxP[i]]) for i in rows]
    responses = [tok.decode(smp.response_ids(i)) for i in rows]
    where = [f"{what} row {i}" + (f" ({metas[i]['source']})" if "source" in metas[i] else "")
             for i in rows]
    local = scorer.score(prompts, responses, [metas[i] for i in rows], where)
    dev = parallel.put_batch(local, self.mesh, self.rules)
    return dev, {k: parallel.to_host(v) for k, v in dev.items()}

  def sample(self, st, prompts: list[list[int]], rng) -> sampling.Samples:
    """The policy's responses to one batch of prompts, left-padded to data.max_prompt_len."""
    return sampling.sample_batch(self.fns.generate, st.params, prompts, rng,
                                 pad_id=self.tokenizer.pad_id,
                                 width=self.config.data.max_prompt_len, mesh=self.mesh,
                                 rules=self.rules)

  def gold(self, smp: sampling.Samples):
    """float32[B]: the built-in task's gold score of each sampled row, or None."""
    if self.data.gold_fn is None:
      return None
    pad = self.tokenizer.pad_id
    return self.data.gold_fn(np.where(smp.prompt_mask_BxP, smp.prompt_BxP, pad),
                             np.where(smp.mask_BxN, smp.tokens_BxN, pad))


def check_function(section, scorer: function_runner.FunctionScorer):
  """The scorer of the one function that judges held-out answers right for pass@k
  (reward.check, default the first reward function); None when pass@k is off."""
  if not section.get("pass_n", 0):
    return None
  if not scorer.functions:
    raise ConfigError(f"reward.pass_n={section.pass_n} needs a reward function to judge "
                      "answers right (reward.functions is empty)")
  name = section.check or scorer.names[0]
  if name not in scorer.names:
    raise ConfigError(f"reward.check={name!r} is not among reward.functions {scorer.names}")
  pass_at_k.parse_ks(section.pass_k, section.pass_n)  # a bad k stops the run here
  return function_runner.FunctionScorer([f for f in scorer.functions if f.name == name],
                                        scorer.timeout_s, scorer.workers)


def check_stage(config) -> RLConfig:
  """The typed RL section, after checking the stage and the algorithm agree."""
  stage = config.stage
  if stage not in ALGORITHMS:
    raise ConfigError(f"stage={stage!r}: the RL loop runs one of {ALGORITHMS}")
  cfg = RLConfig.from_dict(config.rl)
  if cfg.algorithm != stage:
    raise ConfigError(f"stage={stage!r} but rl.algorithm={cfg.algorithm!r}; make them agree")
  return cfg


def make_mesh(config, cfg: RLConfig):
  """(mesh, rules), after checking every batch of the run divides over the batch axes."""
  mesh = parallel.make_mesh(dict(config.mesh))
  rules = parallel.rules_from_config(config.sharding_rules)
  div = parallel.batch_divisor(mesh, rules)
  for name, size in (("rl.rollout_batch", cfg.rollout_batch),
                     ("rl.rollout_batch / rl.minibatches", cfg.minibatch_size)) + (
                         (("rl.ptx_batch", cfg.ptx_batch),) if cfg.ptx_coef else ()):
    if size % div:
      raise ConfigError(f"{name}={size} does not divide over the mesh's batch axes (size {div} "
                        f"of {dict(mesh.shape)})")
  return mesh, rules


def load_models(config, cfg: RLConfig, tokenizer, tok_spec: str, mesh, rules) -> Models:
  """The policy and its frozen reference (the SFT params, re-read on resume), the reward
  model(s) and the critic."""
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
  if cfg.critic == "separate" and cfg.critic_init == "reward" and not reward_models:
    raise ConfigError("rl.critic_init='reward' starts the critic from a reward model, but "
                      "reward.models is empty (reward functions only); set rl.critic_init='sft'")
  heads = "lm+score" if cfg.critic == "shared" else "lm"
  critic_cfg, critic_params = _critic(config, cfg, model_cfg, start_params, reward_models)
  policy_params = model_init.adapt_heads(start_params, model_cfg, "lm", heads, config.seed)
  return Models(model_cfg, heads, policy_params, ref_params, critic_cfg, critic_params,
                reward_models, rule)


def _critic(config, cfg: RLConfig, model_cfg, start_params, reward_models):
  """(critic ModelConfig, params) of a separate critic, from the (first) reward model or the
  policy; (None, None) with a shared value head or none."""
  if cfg.critic != "separate":
    return None, None
  if cfg.critic_init == "reward":
    rm = reward_models[0]
    critic_cfg, critic_params = model_init.load_workdir_params(rm.workdir, config, heads="score")
    critic_params = normalized_head(critic_params, rm.gain, rm.bias)
    critic_cfg = lora.configure(critic_cfg, config.model)  # LoRA trains the critic's too
    return critic_cfg, lora.attach(critic_params, critic_cfg, "score", config.seed)
  return model_cfg, model_init.adapt_heads(start_params, model_cfg, "lm", "score", config.seed)


def restore_or_create(config, cfg: RLConfig, models: Models, tx_policy, tx_critic, ckpt, latest,
                      ptx, writer, mesh, rules):
  """(RLState, policy TrainState shardings, critic shardings or None): the latest checkpoint's
  state (and the PPO-ptx position), or a fresh one from the models' params."""
  abstract, shardings, pol_sh, cri_sh = rl_state.abstract_and_shardings(
      models.model_cfg, models.heads, tx_policy, models.critic_cfg, tx_critic, mesh, rules)
  if latest is not None:
    state, meta = ckpt.restore(abstract, shardings)
    if ptx is not None:
      ptx.restore(meta["ptx"])
    writer.text(f"[{config.stage}] resumed from {ckpt.directory} at iteration {latest}")
  else:
    state = rl_state.create(models.model_cfg, models.heads, tx_policy, models.policy_params,
                            models.critic_cfg, tx_critic, models.critic_params, mesh, rules,
                            config.seed, cfg.kl_coef)
  return state, pol_sh, cri_sh


def describe(config, cfg: RLConfig, models: Models, mesh, data, functions=()) -> str:
  """The run's one-line description: policy, reference, critic, reward, mesh, data."""
  model_cfg, critic_cfg = models.model_cfg, models.critic_cfg
  names = [r.name for r in models.reward_models] + [
      f"{f.name} (function {f.spec})" for f in functions]
  src = config.init.from_workdir or config.init.hf_checkpoint
  return (
      f"[{config.stage}] policy {model_cfg.num_params() / 1e6:.2f}M params from {src} (the "
      f"frozen reference too{'; adapters off' if model_cfg.lora_rank else ''})"
      f"{lora_summary(model_cfg)}; critic: {cfg.critic}"
      + (f" ({critic_cfg.num_params() / 1e6:.2f}M, from the {cfg.critic_init} model)"
         if critic_cfg else " value head")
      + f"; reward: {', '.join(names)} ({models.rule.kind}); "
      f"mesh {dict(mesh.shape)} on {len(mesh.devices.flat)} {jax.devices()[0].platform} "
      f"device(s); {data.summary}")


def setup(config, workdir: str):
  """(RLRun, RLState) of an RL stage's config, after running the pipeline's unfinished upstream
  stages (pretraining, SFT, the reward model; `pipeline.py`)."""
  cfg = check_stage(config)
  functions = function_runner.load_functions(config.reward)  # a bad spec stops before any work
  scorer = function_runner.FunctionScorer(functions, config.reward.function_timeout,
                                          config.reward.function_workers)
  checker = check_function(config.reward, scorer)
  pipeline.run_upstream(config)
  mesh, rules = make_mesh(config, cfg)
  tc = config.train
  check_train_section(tc)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=tc.keep_checkpoints)
  latest = ckpt.latest_step()
  writer = metrics.MetricWriter(workdir, prefix=config.stage, resume_step=latest)
  tokenizer = lm_data.load_tokenizer(config)
  tok_spec = lm_data.tokenizer_spec(config)
  models = load_models(config, cfg, tokenizer, tok_spec, mesh, rules)
  steps = cfg.iterations * cfg.epochs * cfg.minibatches
  tx_policy = make_optimizer(config.optim, steps, models.model_cfg)
  tx_critic = make_optimizer(config.critic_optim, steps, models.critic_cfg)
  data = rl_data.build(config, tokenizer)
  ptx = (rl_data.PtxBatches(config.pipeline.sft if "pipeline" in config else None, tokenizer,
                            cfg.ptx_batch, cfg.epochs * cfg.minibatches, config.seed)
         if cfg.ptx_coef else None)
  state, pol_sh, cri_sh = restore_or_create(config, cfg, models, tx_policy, tx_critic, ckpt,
                                            latest, ptx, writer, mesh, rules)
  # The state holds its own copies: the starting params go (the reference keeps its own).
  models = dataclasses.replace(models, policy_params=None, critic_params=None)
  model_init.write_model_json(workdir, models.model_cfg, config, heads=models.heads,
                              extra={"tokenizer": tok_spec})
  writer.text(describe(config, cfg, models, mesh, data, functions))
  fns = compile_rl(model_cfg=models.model_cfg, critic_cfg=models.critic_cfg, heads=models.heads,
                   reward_models=models.reward_models, rule=models.rule, cfg=cfg,
                   eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, mesh=mesh, rules=rules,
                   policy_shardings=pol_sh, critic_shardings=cri_sh, tx_policy=tx_policy,
                   tx_critic=tx_critic, with_ptx=ptx is not None, function_names=scorer.names)
  run = RLRun(config=config, cfg=cfg, workdir=workdir, mesh=mesh, rules=rules,
              tokenizer=tokenizer, model_cfg=models.model_cfg, heads=models.heads,
              critic_cfg=models.critic_cfg, ref_params=models.ref_params,
              rm_params=[rm.params for rm in models.reward_models], data=data, ptx=ptx, fns=fns,
              ckpt=ckpt, writer=writer, guard=nonfinite.Watch(config.stage, tc, ckpt, writer),
              scorer=scorer, checker=checker)
  return run, state
