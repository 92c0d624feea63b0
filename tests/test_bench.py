"""The benchmark harness: roofline arithmetic, the clock, records and the comparison table, and
the command line end to end at a tiny shape (ours, and the Hugging Face peer where torch is)."""

import json

import pytest

from rlhf_jax.bench import __main__ as cli
from rlhf_jax.bench import common, hardware
from rlhf_jax.models import PRESETS


def test_decode_bound_by_hand_at_qwen05b():
  cfg = PRESETS["qwen05b"]  # bf16 compute, tied embeddings, 24 layers, 2 KV heads of 64
  # Weights read per step: every matrix once plus the tied table as the LM head, 2 bytes each.
  d, f, layers, v = 896, 4864, 24, 151936
  attn = d * 64 * (14 * 2 + 2 * 2) + 64 * (14 + 2 * 2)  # q, o (14 heads), k, v (2), qkv biases
  per_layer = attn + 3 * d * f + 2 * d
  weights = layers * per_layer + d + v * d
  kv_per_token = 2 * layers * 2 * 64 * 2
  assert hardware.kv_bytes_per_token(cfg) == kv_per_token
  ctx = 128 + 64  # prompt + half the new tokens: the average filled cache
  assert hardware.decode_bytes_per_step(cfg, 64, ctx) == pytest.approx(
      2 * weights + 64 * ctx * kv_per_token)
  bound = hardware.decode_bound_tokens_per_s(cfg, 64, 128, 128, 2550.0)
  # The design card's figure for this setting at the H100's measured 2.55 TB/s: about 142K.
  assert 138_000 < bound < 146_000


def test_time_calls_excludes_warmup_and_takes_median():
  calls = []
  t = common.time_calls(lambda: calls.append(1), repeats=5, warmup=2)
  assert len(calls) == 7 and len(t["times_s"]) == 5
  assert t["min_s"] <= t["median_s"] <= max(t["times_s"])
  with pytest.raises(ValueError):
    common.time_calls(lambda: None, repeats=0)


def _rec(what, impl, fig, value, **setting):
  return common.record(what, impl, "dev", setting, {fig: value}, {})


def test_table_pairs_ours_with_the_peer_of_the_same_setting():
  recs = [_rec("generate", "rlhf_jax", "tokens_per_s", 30_000.0, shape="s", batch=64),
          _rec("generate", "hf_transformers", "tokens_per_s", 3_000.0, shape="s", batch=64),
          _rec("generate", "hf_transformers", "tokens_per_s", 1.0, shape="s", batch=8),
          _rec("rl_iteration", "rlhf_jax", "iteration_s", 1.0, shape="s", batch=64),
          _rec("rl_iteration", "trl_grpo", "iteration_s", 6.0, shape="s", batch=64)]
  recs[3]["figures"].update(generate_s=0.5, score_s=0.2, update_s=0.3)
  out = cli.table(recs).splitlines()
  gen = next(l for l in out if l.startswith("generate batch=64"))
  assert "10.00x" in gen  # higher is better: ours / peer
  rl = next(l for l in out if l.startswith("rl_iteration"))
  assert "6.00x" in rl  # a time: peer / ours
  assert len(out) == 3  # the header and our two records; peers are columns, not rows


def test_cli_rejects_bad_arguments():
  with pytest.raises(SystemExit):
    cli.parse(["train", "--loss=dpo"])
  with pytest.raises(SystemExit):
    cli.parse(["generate", "--batch=0"])
  with pytest.raises(SystemExit):
    cli.parse(["report"])


def test_generate_and_train_records_end_to_end(tmp_path, capsys):
  out = tmp_path / "b.jsonl"
  common_args = ["--shape=tiny", "--repeats=1", "--peak_tflops=1", "--gb_per_s=10",
                 f"--out={out}"]
  assert cli.main(["generate", "--batch=8", "--prompt=8", "--new=4", *common_args]) == 0
  assert cli.main(["train", "--batch=8", "--seq=16", "--loss=sft,rm", *common_args]) == 0
  recs = [json.loads(l) for l in out.read_text().splitlines()]
  assert [r["what"] for r in recs] == ["generate", "train", "train"]
  gen, sft, rm = recs
  assert gen["setting"]["batch"] == 8 and gen["figures"]["tokens_per_s"] > 0
  assert 0 < gen["figures"]["fraction_of_hbm_bound"]
  assert {"jax", "flax", "optax", "python"} <= set(gen["versions"])
  assert sft["setting"]["loss"] == "sft" and rm["setting"]["loss"] == "rm"
  # The tiny preset computes in float32; --dtype's default (bfloat16) is what was measured.
  assert {r["setting"]["dtype"] for r in recs} == {"bfloat16"}
  # MFU is model FLOPs over the given peak: tokens/s × FLOPs per token / 1 TFLOP/s.
  for r in (sft, rm):
    f = r["figures"]
    assert f["mfu"] == pytest.approx(f["tokens_per_s"] * r["setting"]["flops_per_token"] / 1e12)
  assert rm["setting"]["flops_per_token"] < sft["setting"]["flops_per_token"]  # no LM head
  assert "generate batch=8" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_peer_runs_in_a_child_process_and_lands_in_the_table(tmp_path, capsys, dtype):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  out = tmp_path / "b.jsonl"
  assert cli.main(["generate", "--shape=tiny", "--batch=8", "--prompt=8", "--new=4",
                   "--repeats=1", "--peak_tflops=1", "--gb_per_s=10", "--peer",
                   f"--dtype={dtype}", f"--out={out}"]) == 0
  recs = [json.loads(l) for l in out.read_text().splitlines()]
  assert [r["impl"] for r in recs] == ["rlhf_jax", "hf_transformers"]
  # Both sides computed in the asked dtype, and the key says so: no cross-dtype pairing.
  assert [r["setting"]["dtype"] for r in recs] == [dtype, dtype]
  assert recs[0]["key"] == recs[1]["key"] and f"dtype={dtype}" in recs[0]["key"]
  assert {"torch", "transformers"} <= set(recs[1]["versions"])
  line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("generate batch=8"))
  assert line.split()[-1] != "" and "x" in line  # a ratio column


def test_rl_iteration_grpo_has_no_critic(tmp_path):
  # --algorithm=grpo: the TRL peer's algorithm (no critic, group advantages), same programs.
  out = tmp_path / "b.jsonl"
  assert cli.main(["rl", "--shape=tiny", "--batch=8", "--prompt=8", "--new=4",
                   "--generations=4", "--minibatches=2", "--repeats=1", "--algorithm=grpo",
                   "--peak_tflops=1", "--gb_per_s=10", f"--out={out}"]) == 0
  (rec,) = [json.loads(l) for l in out.read_text().splitlines()]
  s, f = rec["setting"], rec["figures"]
  assert s["algorithm"] == "grpo" and s["num_generations"] == 4 and "critic" not in s["models"]
  assert f["iteration_s"] == pytest.approx(f["generate_s"] + f["score_s"] + f["update_s"])
  assert rec["key"].startswith("rl_iteration batch=8")  # pairs with trl_grpo's record
