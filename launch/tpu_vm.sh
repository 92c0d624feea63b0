#!/usr/bin/env bash
# Run a stage on a Cloud TPU VM or pod slice: every worker runs the same command and JAX joins
# them into one mesh.
#
#   launch/tpu_vm.sh --name NAME --zone ZONE [--type v5litepod-16] [--version RUNTIME]
#                    [--project PROJECT] [--create] [--setup] [--delete] [--dry-run]
#                    -- --config=configs/ppo.py [--config.key=value ...]
#
#   launch/tpu_vm.sh --name rlhf --zone us-west4-a --type v5litepod-16 --create --setup \
#       -- --config=configs/sft.py:hf --config.init.hf_checkpoint=/ckpt/Qwen2.5-0.5B
#
# Steps, each printed before it runs (--dry-run prints them and stops):
#   --create  gcloud compute tpus tpu-vm create NAME (accelerator --type, runtime --version);
#   --setup   copy this checkout to ~/rlhf_jax on every worker and `pip install -e .[tpu]` there;
#   always    run `python -m rlhf_jax.main ARGS` in ~/rlhf_jax on all workers (--worker=all),
#             with RLHF_JAX_DISTRIBUTED=auto so each process joins the slice's runtime;
#   --delete  delete the TPU VM afterwards.
# Workdirs: pass a gs:// bucket (--workdir=gs://bucket/run) so every worker writes its
# checkpoint shards to one place; a local path would be one directory per worker.
set -euo pipefail

name="" zone="" type="v5litepod-8" version="v2-alpha-tpuv5-lite" project=""
create=0 setup=0 delete=0 dry=0
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --zone) zone="$2"; shift 2 ;;
    --type) type="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --project) project="$2"; shift 2 ;;
    --create) create=1; shift ;;
    --setup) setup=1; shift ;;
    --delete) delete=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "launch/tpu_vm.sh: unknown option $1 (stage arguments go after --)" >&2; exit 2 ;;
  esac
done
if [[ -z "$name" || -z "$zone" ]]; then
  echo "launch/tpu_vm.sh: --name and --zone are required" >&2; exit 2
fi
if [[ $# -eq 0 ]]; then
  echo "launch/tpu_vm.sh: no stage arguments; put e.g. --config=configs/ppo.py after --" >&2
  exit 2
fi

gc=(gcloud compute tpus tpu-vm)
where=(--zone="$zone")
[[ -n "$project" ]] && where+=(--project="$project")
repo_dir=$(cd "$(dirname "$0")/.." && pwd)
quoted_args=$(printf '%q ' "$@")

step() {  # print a command, then run it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ $dry == 0 ]]; then "$@"; fi
}

if [[ $create == 1 ]]; then
  step "${gc[@]}" create "$name" "${where[@]}" --accelerator-type="$type" --version="$version"
fi
if [[ $setup == 1 ]]; then
  step "${gc[@]}" scp --recurse "$repo_dir" "$name":~/rlhf_jax --worker=all "${where[@]}"
  step "${gc[@]}" ssh "$name" --worker=all "${where[@]}" \
    --command="cd ~/rlhf_jax && python3 -m pip install -q -e '.[tpu]'"
fi
step "${gc[@]}" ssh "$name" --worker=all "${where[@]}" \
  --command="cd ~/rlhf_jax && RLHF_JAX_DISTRIBUTED=auto python3 -m rlhf_jax.main $quoted_args"
if [[ $delete == 1 ]]; then
  step "${gc[@]}" delete "$name" "${where[@]}" --quiet
fi
if [[ $dry == 1 ]]; then echo "(dry run: nothing ran)"; fi
