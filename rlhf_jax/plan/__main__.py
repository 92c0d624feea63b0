"""`python -m rlhf_jax.plan --config=configs/ppo.py[:preset] [--config.x=y] --devices=N
[--device=h100 | --memory_gib=80]`: will this run fit, before it is launched?

Builds every compiled program of the config's stage at its real shapes from abstract inputs
(nothing allocated), compiles them on this machine's backend for a mesh of N devices (on a CPU,
N fake devices stand in for the real ones), and prints per program and per device our byte count
beside XLA's memory and cost analysis, then the stage's peak against the device's memory with a
verdict, and the levers that would make an over-budget run fit.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config file[:preset].",
                                          lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 1, "Devices the run will have (fake CPU devices "
                                "stand in for them here).")
_DEVICE = flags.DEFINE_string("device", "h100", "Device kind for the verdict: h100, h200, "
                              "a100-40, a100-80, v4, v5e, v5p, v6e.")
_MEMORY = flags.DEFINE_float("memory_gib", 0.0, "Device memory in GiB (overrides --device).")
_MEASURE = flags.DEFINE_bool("measure", False, "Also run the train step of a pretrain/SFT config "
                             "here with random weights and print the memory it added beside the "
                             "prediction (Linux; see rlhf_jax/plan/measure.py).")


def _set_devices_before_jax(argv) -> None:
  """The fake device count must be set before JAX starts (a flag parsed by hand here)."""
  n = next((a.split("=", 1)[1] for a in argv if a.startswith("--devices=")), "1")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={int(n)}").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  if "--measure" in argv and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
    # Freed buffers must leave the process for the measure to see them go: large allocations
    # through mmap (the variable is read when the process starts, so start again with it).
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "131072"
    os.execv(sys.executable, [sys.executable, "-m", "rlhf_jax.plan", *argv[1:]])


def format_plan(plan, memory_gib: float, config, devices: int) -> str:
  from rlhf_jax.plan import memory  # pylint: disable=g-import-not-at-top
  from rlhf_jax.plan.programs import model_of  # pylint: disable=g-import-not-at-top
  cfg = model_of(config)
  lines = [f"[plan] {config.stage}: {cfg.num_params() / 1e9:.3f}B-param model on {devices} "
           f"device(s), mesh {dict(config.mesh)}; bytes per device (G = GiB, M = MiB)"]
  head = (f"  {'program':<12}{'ours: what':<44}{'XLA args':>10}{'outputs':>9}{'aliased':>9}"
          f"{'temps':>9}{'peak':>9}{'TFLOP':>9}")
  lines.append(head)
  for p in plan.programs:
    ours = ", ".join(f"{k} {memory.gib(v)}" for k, v in p.ours.items()) or "-"
    x = p.xla
    lines.append(f"  {p.name:<12}{ours:<44}{memory.gib(x['arguments']):>10}"
                 f"{memory.gib(x['outputs']):>9}{memory.gib(x['aliased']):>9}"
                 f"{memory.gib(x['temporaries']):>9}{memory.gib(p.xla_peak):>9}"
                 f"{x['flops'] * devices / 1e12:>9.2f}")
  lines.append("  resident between programs: " + ", ".join(
      f"{k} {memory.gib(v)}" for k, v in plan.resident.items()))
  lines.append("  " + memory.verdict(plan, memory_gib))
  if plan.peak() > 0.9 * memory_gib * memory.GIB:
    lines.append("  levers, largest first:")
    lines += [f"    - {t}" for t in memory.levers(plan, config, cfg, devices,
                                                    memory_gib * memory.GIB)]
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from rlhf_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  from rlhf_jax.plan import memory, programs  # pylint: disable=g-import-not-at-top
  try:
    config = _CONFIG.value
    config.stage  # pylint: disable=pointless-statement  (ml_collections raises on first use)
    memory_gib = _MEMORY.value or memory.device_memory_gib(_DEVICE.value)
    plan = programs.stage_plan(config)
  except (UserError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_plan(plan, memory_gib, config, _DEVICES.value))
  if _MEASURE.value:
    from rlhf_jax.plan import measure  # pylint: disable=g-import-not-at-top
    m = measure.measure_train_step(config)
    print(f"[plan] measured on this machine: the train step added {memory.gib(m['added'])} to "
          f"the process at its peak; predicted {memory.gib(m['predicted'])} (XLA outputs - "
          f"aliased + temporaries); ratio {m['added'] / max(m['predicted'], 1):.3f}")


if __name__ == "__main__":
  _set_devices_before_jax(sys.argv)
  app.run(main)
