"""The launch scripts' dry runs say what they would do (and shellcheck finds nothing, where it is
installed), bad usage stops with one line, and `distributed.plan` reads flags and cluster
environments the way the scripts rely on."""

import os
import shutil
import subprocess

import pytest

from rlhf_jax import distributed
from rlhf_jax.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("local.sh", "tpu_vm.sh", "slurm.sh")


def _run(script, *args):
  return subprocess.run(["bash", os.path.join(REPO, "launch", script), *args],
                        capture_output=True, text=True, timeout=60)


def test_local_dry_run_names_every_process():
  r = _run("local.sh", "--processes", "3", "--cpu_devices", "2", "--port", "4321", "--dry-run",
           "--", "python", "-m", "rlhf_jax.main", "--config=configs/sft.py")
  assert r.returncode == 0, r.stderr
  for i in range(3):
    assert (f"[p{i}] env RLHF_JAX_COORDINATOR=127.0.0.1:4321 RLHF_JAX_NUM_PROCESSES=3 "
            f"RLHF_JAX_PROCESS_ID={i} JAX_PLATFORMS=cpu "
            "XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m rlhf_jax.main") in r.stdout
  assert "dry run" in r.stdout


def test_local_propagates_a_failure_and_stops_the_others():
  r = _run("local.sh", "--processes", "2", "--", "bash", "-c",
           'if [ "$RLHF_JAX_PROCESS_ID" = 1 ]; then exit 3; fi; sleep 60')
  assert r.returncode == 3
  assert "exited with 3" in r.stderr


def test_tpu_and_slurm_dry_runs():
  r = _run("tpu_vm.sh", "--name", "rl", "--zone", "us-west4-a", "--type", "v5litepod-16",
           "--create", "--setup", "--delete", "--dry-run", "--", "--config=configs/ppo.py",
           "--workdir=gs://b/run")
  assert r.returncode == 0, r.stderr
  lines = [l for l in r.stdout.splitlines() if l.startswith("+ gcloud")]
  assert [l.split()[5] for l in lines] == ["create", "scp", "ssh", "ssh", "delete"]
  assert "--accelerator-type=v5litepod-16" in lines[0] and "--worker=all" in lines[3]
  assert "RLHF_JAX_DISTRIBUTED=auto" in lines[3] and "configs/ppo.py" in lines[3]
  r = _run("slurm.sh", "--nodes", "4", "--gpus_per_node", "8", "--partition", "gpu",
           "--dry-run", "--", "--config=configs/sft.py", "--config.train.steps=10")
  assert r.returncode == 0, r.stderr
  assert "#SBATCH --nodes=4" in r.stdout and "#SBATCH --gpus-per-node=8" in r.stdout
  assert "#SBATCH --partition=gpu" in r.stdout
  assert "srun python -m rlhf_jax.main --config=configs/sft.py --config.train.steps=10" in r.stdout


@pytest.mark.parametrize("script,args", [
    ("local.sh", ["--processes", "0", "--", "true"]),
    ("local.sh", ["--dry-run"]),
    ("tpu_vm.sh", ["--zone", "z", "--", "--config=configs/ppo.py"]),
    ("slurm.sh", ["--nodes", "x", "--", "--config=configs/ppo.py"]),
    ("slurm.sh", ["--bogus"]),
])
def test_bad_usage_is_one_line_and_status_2(script, args):
  r = _run(script, *args)
  assert r.returncode == 2
  assert len(r.stderr.strip().splitlines()) == 1 and script in r.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
  r = subprocess.run(["shellcheck", *(os.path.join(REPO, "launch", s) for s in SCRIPTS)],
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stdout


def test_distributed_plan():
  assert distributed.plan(environ={}) is None
  p = distributed.plan("10.0.0.1:1234", 4, 3, environ={})
  assert (p.kind, p.coordinator, p.num_processes, p.process_id) == ("explicit", "10.0.0.1:1234",
                                                                    4, 3)
  env = {"RLHF_JAX_COORDINATOR": "h:1", "RLHF_JAX_NUM_PROCESSES": "2",
         "RLHF_JAX_PROCESS_ID": "1"}
  assert distributed.plan(environ=env).process_id == 1
  assert distributed.plan(process_id=0, environ=env).process_id == 0  # a flag beats the env
  assert distributed.plan(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}).kind == "slurm"
  assert distributed.plan(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
  assert distributed.plan(environ={"OMPI_COMM_WORLD_SIZE": "2"}).kind == "ompi"
  assert distributed.plan(environ={"TPU_WORKER_HOSTNAMES": "a,b"}).kind == "tpu"
  assert distributed.plan(environ={"TPU_WORKER_HOSTNAMES": "a"}) is None
  assert distributed.plan(environ={"RLHF_JAX_DISTRIBUTED": "auto"}).kind == "auto"
  for bad in ({"RLHF_JAX_NUM_PROCESSES": "2"},  # no coordinator, no id
              {"RLHF_JAX_COORDINATOR": "nohostport", "RLHF_JAX_NUM_PROCESSES": "2",
               "RLHF_JAX_PROCESS_ID": "0"},
              {"RLHF_JAX_COORDINATOR": "h:1", "RLHF_JAX_NUM_PROCESSES": "2",
               "RLHF_JAX_PROCESS_ID": "2"},
              {"RLHF_JAX_NUM_PROCESSES": "two"},
              {"RLHF_JAX_DISTRIBUTED": "yes"}):
    with pytest.raises(ConfigError):
      distributed.plan(environ=bad)
