#!/usr/bin/env bash
# Train or evaluate on this machine (CPU, one or several local GPUs, or a single-host TPU VM).
#
#   launch/local.sh configs/demo.py /tmp/glitr_demo
#   launch/local.sh configs/ssv2_student.py /data/runs/ssv2_student --config.teacher_checkpoint=/data/runs/ssv2_teacher
#   launch/local.sh configs/ssv2_student.py /data/runs/ssv2_student --mode=evaluate
#
# Creates .venv from requirements.txt on first use. Extra arguments go to main.py. All local
# devices are used (JAX sees every GPU; restrict with CUDA_VISIBLE_DEVICES). On GPUs, install the
# CUDA build of JAX once: .venv/bin/pip install "jax[cuda12]==0.10.2".
# Preloads tcmalloc when the system has it (apt install libtcmalloc-minimal4; GLITR_TCMALLOC=0
# keeps glibc's malloc): on the CPU it makes training steps faster (README, Performance).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/launch/args.sh"
parse_run_args "$0 CONFIG WORKDIR [main.py flags...]" "$@"
cd "$repo"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
fi
mkdir -p "$workdir"
# Preload tcmalloc if the system has it: faster CPU steps (launch/host_malloc.sh).
source launch/host_malloc.sh
preload_tcmalloc
.venv/bin/python main.py --config="$config" --workdir="$workdir" "${run_args[@]}" 2>&1 | tee -a "$workdir/log.txt"
