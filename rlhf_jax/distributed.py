"""Starting JAX's multi-controller runtime when this process is one of several.

One process per host (TPU VM workers, SLURM tasks, MPI ranks, or local processes on one
machine) runs the same program; `jax.distributed.initialize` joins them into one set of global
devices, and the mesh spans them all. `initialize_from(flags, environ)` decides whether to join
and how:
- explicit: `--coordinator=host:port --num_processes=N --process_id=i` (flags of `main`), or the
  environment variables RLHF_JAX_COORDINATOR, RLHF_JAX_NUM_PROCESSES, RLHF_JAX_PROCESS_ID
  (flags win);
- SLURM (more than one task in the step), Open MPI (more than one rank) and multi-host Cloud
  TPU VMs (TPU_WORKER_HOSTNAMES naming several workers): JAX's own cluster detection fills
  every argument; RLHF_JAX_DISTRIBUTED=auto asks for that detection where the environment
  does not show it (launch/tpu_vm.sh sets it: a TPU VM keeps its topology in metadata);
- otherwise one process: nothing is initialised.
On CPU the cross-process collectives go through gloo (the only CPU implementation that needs no
MPI), so the same code runs a 2-process test on one machine.
Not for: data placement across processes (`parallel.put_batch`, `parallel.to_host`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from rlhf_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Plan:
  """How to join: `kind` is "explicit", "slurm", "ompi", "tpu" or "auto"; the arguments are None where
  JAX's cluster detection supplies them."""

  kind: str
  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


def _int(environ: Mapping[str, str], name: str) -> int | None:
  v = environ.get(name)
  if v in (None, ""):
    return None
  try:
    return int(v)
  except ValueError:
    raise ConfigError(f"environment variable {name}={v!r} must be an integer") from None


def plan(coordinator: str | None = None, num_processes: int | None = None,
         process_id: int | None = None, environ: Mapping[str, str] | None = None) -> Plan | None:
  """The way this process joins a multi-process run, or None for a single-process run."""
  env = os.environ if environ is None else environ
  coordinator = coordinator or env.get("RLHF_JAX_COORDINATOR") or None
  if num_processes is None:
    num_processes = _int(env, "RLHF_JAX_NUM_PROCESSES")
  if process_id is None:
    process_id = _int(env, "RLHF_JAX_PROCESS_ID")
  if coordinator or (num_processes or 1) > 1:
    missing = [n for n, v in (("coordinator", coordinator), ("num_processes", num_processes),
                              ("process_id", process_id)) if v is None]
    if missing:
      raise ConfigError(f"a multi-process run needs --coordinator, --num_processes and "
                        f"--process_id (or RLHF_JAX_*); missing: {', '.join(missing)}")
    if ":" not in coordinator:
      raise ConfigError(f"--coordinator={coordinator!r} must be host:port of process 0")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ConfigError(f"--process_id={process_id} must be in [0, --num_processes="
                        f"{num_processes})")
    return Plan("explicit", coordinator, num_processes, process_id)
  forced = env.get("RLHF_JAX_DISTRIBUTED", "")
  if forced not in ("", "auto"):
    raise ConfigError(f"RLHF_JAX_DISTRIBUTED={forced!r}: the only value is 'auto'")
  if forced == "auto":
    return Plan("auto")
  tasks = _int(env, "SLURM_STEP_NUM_TASKS") or _int(env, "SLURM_NTASKS")
  if "SLURM_JOB_ID" in env and (tasks or 1) > 1:
    return Plan("slurm")
  if (_int(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return Plan("ompi")
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return Plan("tpu")
  return None


def initialize(p: Plan | None) -> bool:
  """Joins the run `p` describes (before any JAX computation); False when single-process."""
  if p is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  # Only the CPU backend reads this; GPU and TPU use their own collectives.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(p.coordinator, p.num_processes, p.process_id)
  print(f"[distributed] process {jax.process_index()} of {jax.process_count()} ({p.kind}): "
        f"{jax.local_device_count()} local / {jax.device_count()} global devices", flush=True)
  return True
