"""Weight matrices vs norm gains and biases, by name: the weight-decay mask (issue 14, item 4)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax.models import ModelConfig, init_params
from rlhf_jax.models.param_kinds import is_weight_matrix
from rlhf_jax.train_state import OptimConfig

GPT2 = ModelConfig(vocab_size=61, hidden=16, num_layers=2, num_heads=2, num_kv_heads=2,
                   mlp_dim=32, max_seq_len=16, norm="layer", position="learned", mlp="gelu",
                   qkv_bias=True, out_bias=True, mlp_bias=True, tie_embeddings=False)
VECTORS = ("scale", "bias", "q_bias", "k_bias", "v_bias", "o_bias", "up_bias", "down_bias",
           "score_bias")


@pytest.mark.parametrize("scan", [True, False])
def test_weight_decay_reaches_weight_matrices_only(scan):
  # With a zero gradient AdamW's step is the decay alone: w <- w - lr * wd * w on decayed leaves.
  # Under scan_layers the norm gains are [L, D] and the q/k/v biases [L, H, Dh]; they must not
  # decay any more than the unscanned final norm does. Embedding tables decay (GPT-2 / nanoGPT).
  cfg = GPT2.replace(scan_layers=scan)
  params = init_params(cfg, jax.random.key(0), heads="lm+score")
  params = jax.tree.map(lambda x: x + 0.5, params)  # no zero leaf: every decay would show
  tx = OptimConfig(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, grad_clip_norm=0).make()
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  new = optax.apply_updates(params, updates)
  lr0 = float(OptimConfig(learning_rate=0.1, warmup_steps=0).schedule()(0))
  seen = set()
  for (path, old), upd in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(new)):
    name = str(path[-1].key)
    seen.add(name)
    if name in VECTORS:
      np.testing.assert_array_equal(np.asarray(upd), np.asarray(old),
                                    err_msg=jax.tree_util.keystr(path))
    else:
      np.testing.assert_allclose(np.asarray(upd), np.asarray(old) * (1 - lr0 * 0.5), rtol=1e-6,
                                 err_msg=jax.tree_util.keystr(path))
  assert {"scale", "q_bias", "embed", "pos_embed", "lm_head", "score_kernel"} <= seen


def test_parameter_kinds_by_name_not_rank():
  cfg = GPT2.replace(lora_rank=2)
  params = init_params(cfg, jax.random.key(0), heads="lm+score")
  kinds = {jax.tree_util.keystr(p): is_weight_matrix(p)
           for p, _ in jax.tree_util.tree_leaves_with_path(params)}
  assert kinds["['layers']['attn_norm']['scale']"] is False  # [L, D]
  assert kinds["['layers']['attn']['q_bias']"] is False  # [L, H, Dh]
  assert kinds["['layers']['attn']['q_lora_a']"] is True
  assert kinds["['embed']"] is True and kinds["['score_bias']"] is False
  with pytest.raises(ValueError, match="unknown kind"):
    is_weight_matrix((jax.tree_util.DictKey("layers"), jax.tree_util.DictKey("gamma")))
