"""Speed measurements with random weights and synthetic token ids, ours beside PyTorch peers.

  python -m rlhf_jax.bench hardware                                    # matmul peak, copy GB/s
  python -m rlhf_jax.bench generate --shape=qwen05b --batch=64,256 --peer --out=bench.jsonl
  python -m rlhf_jax.bench train --shape=llama1b --loss=sft,rm --batch=8 --seq=2048 --peer
  python -m rlhf_jax.bench rl --shape=qwen05b --batch=64 --prompt=128 --new=128 --peer
  python -m rlhf_jax.bench report bench.jsonl                          # the table again

Every figure is a median over `--repeats` calls after an excluded warm-up call (compilation),
with the device synchronised before every clock read. Each measurement is one JSON record
(`common.record`: what, implementation, device, software versions, setting, figures) appended
to `--out`. `--peer` runs the same setting through the peer (Hugging Face `generate` and a
PyTorch training step; TRL's GRPO trainer for `rl`) in a child process, so the two frameworks
never share the accelerator's memory, and prints ours, theirs and the ratio. `--dtype` (bfloat16
by default, or float32) is the compute dtype of both sides; a record pairs only with a peer's of
the same dtype.
Modules: `common` (clock, records), `hardware` (device limits), `ours`, `peers`, `__main__`.
"""
