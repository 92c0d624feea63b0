"""Command line of the benchmark harness; see `rlhf_jax.bench` for what it measures.

`--impl` picks who runs the measurement in this process (ours, or a peer: hf, trl); `--peer`
starts a child process with the peer's `--impl` on the same arguments and reads its records
back, so a table of ours / theirs / ratio comes out of one command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from rlhf_jax.bench.common import HEADLINE

WHATS = ("hardware", "generate", "train", "rl", "report")
PEER_OF = {"generate": "hf", "train": "hf", "rl": "trl"}


def _ints(text: str) -> list[int]:
  try:
    out = [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: expected integers separated by commas")
  if not out or min(out) < 1:
    raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
  return out


def parse(argv):
  p = argparse.ArgumentParser(prog="python -m rlhf_jax.bench",
                              description=sys.modules["rlhf_jax.bench"].__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("what", choices=WHATS)
  p.add_argument("files", nargs="*", help="report: JSONL files written by --out")
  p.add_argument("--shape", default="qwen05b", help="a models.PRESETS name")
  p.add_argument("--batch", type=_ints, default=None,
                 help="comma list; default 64 (generate, rl) or 8 (train)")
  p.add_argument("--prompt", type=int, default=128)
  p.add_argument("--new", type=int, default=128)
  p.add_argument("--seq", type=int, default=2048, help="train: tokens per row")
  p.add_argument("--loss", default="sft", help="train: comma list of sft, rm")
  p.add_argument("--epochs", type=int, default=1, help="rl: PPO epochs")
  p.add_argument("--minibatches", type=int, default=4, help="rl: PPO minibatches")
  p.add_argument("--generations", type=int, default=8, help="rl: GRPO group size")
  p.add_argument("--algorithm", default="ppo", choices=("ppo", "grpo"),
                 help="rl, ours: PPO with a critic, or GRPO (no critic, as the TRL peer)")
  p.add_argument("--remat", default="dots_no_batch", help="ours: none, full, dots, "
                 "dots_no_batch")
  p.add_argument("--attention", default="", help="ours: the attention kernel (auto, einsum, "
                 "xla, cudnn); default: the model's own (auto)")
  p.add_argument("--lora_rank", type=int, default=0,
                 help="rl, ours: LoRA adapters of this rank on policy and critic (0 = off)")
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"),
                 help="compute dtype of ours and the peer alike (weights stay float32 master "
                 "copies where a step trains them)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--impl", default="ours", choices=("ours", "hf", "trl"))
  p.add_argument("--peer", action="store_true", help="also run the peer, in a child process")
  p.add_argument("--peak_tflops", type=float, default=0.0,
                 help="MFU denominator; 0 = measure a bf16 matmul in this run")
  p.add_argument("--gb_per_s", type=float, default=0.0,
                 help="memory roofline; 0 = measure a copy in this run")
  p.add_argument("--out", default="", help="append one JSON line per measurement")
  args = p.parse_args(argv)
  if args.what != "report" and args.files:
    p.error(f"positional files are for `report`, not `{args.what}`")
  if args.what == "report" and not args.files:
    p.error("report needs the JSONL files to read")
  if args.repeats < 1:
    p.error("--repeats must be >= 1")
  if args.batch is None:
    args.batch = [8] if args.what == "train" else [64]
  args.losses = [x.strip() for x in args.loss.split(",") if x.strip()]
  bad = [x for x in args.losses if x not in ("sft", "rm")]
  if bad:
    p.error(f"--loss: {bad} not in sft, rm")
  return args


def _hardware(args) -> list[dict]:
  from rlhf_jax.bench import hardware  # pylint: disable=g-import-not-at-top
  from rlhf_jax.bench.common import jax_device, record, versions  # pylint: disable=g-import-not-at-top
  dev, ver = jax_device(), versions("jax", "jaxlib")
  return [record("matmul_peak", "jax", dev, {"n": 8192, "dtype": "bfloat16"},
                 hardware.matmul_peak(), ver),
          record("copy_bandwidth", "jax", dev, {"mib": 1024}, hardware.copy_bandwidth(), ver)]


def _limits(args, records: list[dict]) -> tuple[float, float]:
  """(peak TFLOP/s, copy GB/s): given on the command line, else measured now (and recorded)."""
  if args.impl != "ours" or (args.peak_tflops and args.gb_per_s):
    return args.peak_tflops, args.gb_per_s
  hw = _hardware(args)
  records.extend(hw)
  return (args.peak_tflops or hw[0]["figures"]["tflops"],
          args.gb_per_s or hw[1]["figures"]["gb_per_s"])


def measure(args) -> list[dict]:
  """The records of this process's implementation."""
  out: list[dict] = []
  if args.what == "hardware":
    return _hardware(args)
  peak, gbs = _limits(args, out) if args.what in ("generate", "train") else (0.0, 0.0)
  if args.impl == "ours":
    from rlhf_jax.bench import ours  # pylint: disable=g-import-not-at-top
  else:
    from rlhf_jax.bench import peers  # pylint: disable=g-import-not-at-top
  for b in args.batch:
    if args.what == "generate":
      if args.impl == "ours":
        out.append(ours.bench_generate(args.shape, b, args.prompt, args.new, args.repeats, gbs,
                                       args.attention, args.dtype))
      else:
        out.append(peers.hf_generate(args.shape, b, args.prompt, args.new, args.repeats,
                                     args.dtype))
    elif args.what == "train":
      for loss in args.losses:
        if args.impl == "ours":
          out.append(ours.bench_train(args.shape, loss, b, args.seq, args.repeats, args.remat,
                                      peak, args.attention, args.dtype))
        else:
          out.append(peers.hf_train(args.shape, loss, b, args.seq, args.repeats, peak,
                                    args.dtype))
    elif args.what == "rl":
      if args.impl == "ours":
        out.append(ours.bench_rl_iteration(args.shape, b, args.prompt, args.new, args.epochs,
                                           args.minibatches, args.repeats, args.remat,
                                           args.lora_rank, args.attention, args.dtype,
                                           args.algorithm, args.generations))
      else:
        out.append(peers.trl_grpo(args.shape, b, args.prompt, args.new, args.generations,
                                  args.repeats, dtype=args.dtype))
  return out


def run_peer(argv: list[str], args, peak: float) -> list[dict]:
  """The peer's records, from a child process running the same command with its --impl."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "peer.jsonl")
    keep = [a for a in argv if a != "--peer" and not a.startswith(("--out", "--impl", "--peak_tflops"))]
    cmd = [sys.executable, "-m", "rlhf_jax.bench", *keep, f"--impl={PEER_OF[args.what]}",
           f"--out={out}"] + ([f"--peak_tflops={peak}"] if peak else [])
    # The peer never touches the accelerator through JAX (no preallocation fight with torch).
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    print("peer:", " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=env)
    if rc != 0 or not os.path.exists(out):
      print(f"!! the peer exited with {rc}; the table shows ours alone", flush=True)
      return []
    with open(out, encoding="utf-8") as f:
      return [json.loads(line) for line in f if line.strip()]


def table(records: list[dict]) -> str:
  """Ours beside the peer with the same key: the headline figure and the ratio."""
  lines = [f"{'measurement':<58} {'ours':>12} {'peer':>12} {'ratio':>7}  notes"]
  ours = [r for r in records if r["impl"] in ("rlhf_jax", "jax")]
  for r in ours:
    fig, higher = HEADLINE[r["what"]]
    peer = next((p for p in records if p["impl"] not in ("rlhf_jax", "jax")
                 and p["key"] == r["key"]), None)
    a = r["figures"][fig]
    b = peer["figures"][fig] if peer else None
    ratio = "" if not b else f"{(a / b if higher else b / a):.2f}x"
    f = r["figures"]
    notes = []
    if "mfu" in f:
      notes.append(f"MFU {f['mfu']:.1%}" + (f" (peer {peer['figures']['mfu']:.1%})"
                                            if peer and "mfu" in peer["figures"] else ""))
    if "fraction_of_hbm_bound" in f:
      notes.append(f"{f['fraction_of_hbm_bound']:.1%} of HBM bound "
                   f"{f['hbm_bound_tokens_per_s']:,.0f} tok/s")
    if "step_ms" in f:
      notes.append(f"step {f['step_ms']:.2f} ms" + (f" (peer {peer['figures']['step_ms']:.2f})"
                                                   if peer else ""))
    if r["what"] == "rl_iteration":
      notes.append(f"gen {f['generate_s']:.3f} / score {f['score_s']:.3f} / update "
                   f"{f['update_s']:.3f} s" + (f"; peer {peer['impl']}" if peer else ""))
    if f.get("peak_memory_gib"):
      notes.append(f"peak {f['peak_memory_gib']:.1f} GiB")
    if f.get("live_memory_gib"):
      notes.append(f"held {f['live_memory_gib']:.2f} GiB")
    label = f"{r['key']} [{fig}]"
    bs = "" if b is None else f"{b:,.3f}" if b < 100 else f"{b:,.0f}"
    as_ = f"{a:,.3f}" if a < 100 else f"{a:,.0f}"
    lines.append(f"{label:<58} {as_:>12} {bs:>12} {ratio:>7}  {'; '.join(notes)}")
  return "\n".join(lines)


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse(argv)
  if args.what == "report":
    records = []
    for path in args.files:
      with open(path, encoding="utf-8") as f:
        records += [json.loads(line) for line in f if line.strip()]
    print(table(records))
    return 0
  records = measure(args)
  if args.peer and args.what in PEER_OF and args.impl == "ours":
    peak = next((r["figures"]["tflops"] for r in records if r["what"] == "matmul_peak"), 0.0)
    records += run_peer(argv, args, peak or args.peak_tflops)
  for r in records:
    line = json.dumps(r)
    print(line, flush=True)
    if args.out:
      with open(args.out, "a", encoding="utf-8") as f:
        f.write(line + "\n")
  if args.impl == "ours":
    print()
    print(table(records))
  return 0


if __name__ == "__main__":
  sys.exit(main())
