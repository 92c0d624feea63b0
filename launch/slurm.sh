#!/usr/bin/env bash
# Submit a stage to SLURM on several GPU nodes: one process per node, each with all of that
# node's GPUs; JAX's SLURM detection joins them into one mesh.
#
#   launch/slurm.sh [--nodes 2] [--gpus_per_node 8] [--partition P] [--time 04:00:00]
#                   [--account A] [--venv PATH] [--dry-run] -- --config=configs/ppo.py [...]
#
#   launch/slurm.sh --nodes 4 --partition gpu -- --config=configs/sft.py:hf \
#       --config.init.hf_checkpoint=/ckpt/Llama-3.2-1B --workdir=/shared/runs/sft
#
# Writes the batch script below and submits it with sbatch (--dry-run prints it and stops).
# The workdir must be on a filesystem every node sees (checkpoints are written by every
# process); logs go to slurm-<jobid>.out.
set -euo pipefail

nodes=2 gpus=8 partition="" time_limit="04:00:00" account="" venv="" dry=0
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --gpus_per_node) gpus="$2"; shift 2 ;;
    --partition) partition="$2"; shift 2 ;;
    --time) time_limit="$2"; shift 2 ;;
    --account) account="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "launch/slurm.sh: unknown option $1 (stage arguments go after --)" >&2; exit 2 ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "launch/slurm.sh: no stage arguments; put e.g. --config=configs/ppo.py after --" >&2
  exit 2
fi
for v in nodes gpus; do
  if ! [[ "${!v}" =~ ^[1-9][0-9]*$ ]]; then
    echo "launch/slurm.sh: --$v must be a positive integer, got '${!v}'" >&2; exit 2
  fi
done

repo_dir=$(cd "$(dirname "$0")/.." && pwd)
script=$(cat <<SCRIPT
#!/usr/bin/env bash
#SBATCH --job-name=rlhf_jax
#SBATCH --nodes=$nodes
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$gpus
#SBATCH --time=$time_limit
${partition:+#SBATCH --partition=$partition}
${account:+#SBATCH --account=$account}
set -euo pipefail
cd $(printf '%q' "$repo_dir")
${venv:+source $(printf '%q' "$venv")/bin/activate}
# One task per node: each process sees its node's $gpus GPUs; JAX reads SLURM_* to join.
srun python -m rlhf_jax.main $(printf '%q ' "$@")
SCRIPT
)
script=$(printf '%s\n' "$script" | sed '/^$/d')
if [[ $dry == 1 ]]; then
  printf '%s\n' "$script"
  echo "(dry run: would submit the script above with sbatch)"
  exit 0
fi
printf '%s\n' "$script" | sbatch
