#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, each driving all GPUs of its node.
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/gpu_slurm.sh configs/ssv2_student.py /shared/runs/ssv2_student \
#     --config.teacher_checkpoint=/shared/runs/ssv2_teacher --config.data.data_dir=/shared/tfds
#
# jax.distributed.initialize() reads the SLURM environment (SLURM_NTASKS, SLURM_PROCID,
# SLURM_STEP_NODELIST) to find process 0, so main.py needs no coordinator flags here. Each process
# reads its own shard of the data; the global batch in the config is split over all GPUs of all
# nodes. WORKDIR must be on a file system every node sees. Requeueing the job (or re-running the
# same sbatch line) resumes from the newest checkpoint; SLURM's SIGTERM before a preemption makes
# the run save within a step and exit with status 75 (`--signal=TERM@120` gives it two minutes),
# on which this script requeues the job so that it resumes.
#
#SBATCH --job-name=glitr-jax
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=32
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output=glitr-jax-%j.log
set -euo pipefail
# sbatch runs a copy of this script: the checkout is where the job was submitted from.
repo=${GLITR_REPO:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}}
source "$repo/launch/args.sh"
parse_run_args "sbatch --nodes=N --gpus-per-node=G $0 CONFIG WORKDIR [main.py flags...]" "$@"
cd "$repo"
# One-time install on the shared file system: python3 -m venv .venv &&
#   .venv/bin/pip install -r requirements.txt "jax[cuda12]==0.10.2"
if [[ ! -x .venv/bin/python ]]; then
  echo "no .venv in $repo: install it once with the command above before submitting" >&2
  exit 1
fi
mkdir -p "$workdir"
status=0
srun --kill-on-bad-exit=1 .venv/bin/python main.py --config="$config" --workdir="$workdir" \
  "${run_args[@]}" ||
  status=$?
if [[ $status -eq 75 ]]; then  # main.py: preempted, state saved
  echo "preempted: requeueing job $SLURM_JOB_ID to resume" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
