#!/usr/bin/env bash
# Several JAX processes on this machine, joined into one multi-process run (one global mesh):
# the way to test multi-host code without a cluster, and to use several local GPUs one process
# each.
#
#   launch/local.sh [--processes N] [--cpu_devices D | --gpus_per_process G] [--port P]
#                   [--logdir DIR] [--dry-run] -- COMMAND [ARGS...]
#
#   launch/local.sh --processes 2 --cpu_devices 4 -- \
#       python -m rlhf_jax.main --config=configs/sft.py --workdir=runs/sft_2proc
#
# Process i gets RLHF_JAX_COORDINATOR=127.0.0.1:P, RLHF_JAX_NUM_PROCESSES=N and
# RLHF_JAX_PROCESS_ID=i, which `python -m rlhf_jax.main` reads (rlhf_jax/distributed.py).
# --cpu_devices D: JAX on the CPU with D devices per process (cross-process collectives: gloo).
# --gpus_per_process G: CUDA_VISIBLE_DEVICES gives process i GPUs i*G .. i*G+G-1.
# Output: each line prefixed "[pI]" on this terminal, or one file per process under --logdir.
# If any process fails, the others are stopped (they would wait for it forever) and this
# script exits with that process's status.
set -euo pipefail

processes=2
cpu_devices=""
gpus=""
port=""
logdir=""
dry=0
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --processes) processes="$2"; shift 2 ;;
    --cpu_devices) cpu_devices="$2"; shift 2 ;;
    --gpus_per_process) gpus="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --logdir) logdir="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "launch/local.sh: unknown option $1 (the command goes after --)" >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "launch/local.sh: no command; put it after --" >&2; exit 2
fi
if ! [[ "$processes" =~ ^[1-9][0-9]*$ ]]; then
  echo "launch/local.sh: --processes must be a positive integer, got '$processes'" >&2; exit 2
fi
if [[ -n "$cpu_devices" && -n "$gpus" ]]; then
  echo "launch/local.sh: --cpu_devices and --gpus_per_process exclude each other" >&2; exit 2
fi
if [[ -z "$port" ]]; then
  # A free port on this machine (the coordinator is process 0 here).
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

env_of() {  # the environment of process $1, as NAME=VALUE words
  local i=$1
  local e=("RLHF_JAX_COORDINATOR=127.0.0.1:$port" "RLHF_JAX_NUM_PROCESSES=$processes"
           "RLHF_JAX_PROCESS_ID=$i")
  if [[ -n "$cpu_devices" ]]; then
    e+=("JAX_PLATFORMS=cpu" "XLA_FLAGS=--xla_force_host_platform_device_count=$cpu_devices")
  fi
  if [[ -n "$gpus" ]]; then
    local ids
    ids=$(seq -s, $((i * gpus)) $((i * gpus + gpus - 1)))
    e+=("CUDA_VISIBLE_DEVICES=$ids")
  fi
  printf '%s\n' "${e[@]}"
}

echo "launch/local.sh: $processes process(es), coordinator 127.0.0.1:$port${cpu_devices:+,}" \
     "${cpu_devices:+$cpu_devices CPU devices each}${gpus:+, $gpus GPU(s) each}"
for ((i = 0; i < processes; i++)); do
  mapfile -t envs < <(env_of "$i")
  echo "  [p$i] env ${envs[*]} $*${logdir:+ > $logdir/process_$i.log}"
done
if [[ $dry == 1 ]]; then
  echo "(dry run: nothing started)"
  exit 0
fi
[[ -n "$logdir" ]] && mkdir -p "$logdir"

pids=()
for ((i = 0; i < processes; i++)); do
  mapfile -t envs < <(env_of "$i")
  if [[ -n "$logdir" ]]; then
    env "${envs[@]}" "$@" > "$logdir/process_$i.log" 2>&1 &
  else
    env "${envs[@]}" "$@" > >(sed -u "s/^/[p$i] /") 2>&1 &
  fi
  pids+=($!)
done

status=0
live=("${pids[@]}")
while (( ${#live[@]} > 0 )); do
  set +e
  wait -n -p done_pid "${live[@]}"
  rc=$?
  set -e
  rest=()
  for p in "${live[@]}"; do [[ $p != "$done_pid" ]] && rest+=("$p"); done
  live=("${rest[@]}")
  if (( rc != 0 )); then
    echo "launch/local.sh: process $done_pid exited with $rc; stopping the others" >&2
    status=$rc
    for p in "${live[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    break
  fi
done
exit "$status"
