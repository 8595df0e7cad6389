#!/usr/bin/env bash
# Create a Cloud TPU VM slice, install glitr-jax on every worker, and run main.py on all of them.
#
#   TPU_NAME=glitr ZONE=us-central2-b ACCELERATOR=v4-32 \
#     launch/tpu_vm.sh configs/ssv2_student.py gs://my-bucket/runs/ssv2_student \
#       --config.teacher_checkpoint=gs://my-bucket/runs/ssv2_teacher \
#       --config.data.data_dir=gs://my-bucket/tensorflow_datasets
#
# Every worker runs the same command; jax.distributed.initialize() finds the other workers on its
# own on TPU, each worker reads its own shard of the data, and process 0 writes metrics. Workdirs
# and data on GCS (gs://...) are shared by all workers. Re-running the script resumes the run
# from the newest checkpoint in WORKDIR. Set CREATE=0 to reuse an existing TPU VM, DELETE=1 to
# delete it when the run ends. Needs the gcloud CLI, authenticated, with the TPU API enabled.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
source "$repo/launch/args.sh"
parse_run_args "TPU_NAME=... ZONE=... ACCELERATOR=v4-8 $0 CONFIG WORKDIR [main.py flags...]" "$@"
: "${TPU_NAME:?set TPU_NAME}"
: "${ZONE:?set ZONE (e.g. us-central2-b)}"
ACCELERATOR=${ACCELERATOR:-v4-8}
RUNTIME=${RUNTIME:-tpu-ubuntu2204-base}
CREATE=${CREATE:-1}
DELETE=${DELETE:-0}
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project="$PROJECT"); fi

if [[ "$CREATE" == 1 ]]; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" "${PROJECT_FLAG[@]}" --zone="$ZONE" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME"
fi

# Copy this checkout (without virtual environments or local workdirs) to every worker.
tarball=$(mktemp -t glitr-jax.XXXXXX.tar.gz)
tar -C "$repo" --exclude=.venv --exclude=.git --exclude=.jax_cache --exclude=workdirs -czf "$tarball" .
gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME":~/glitr-jax.tar.gz "${PROJECT_FLAG[@]}" \
  --zone="$ZONE" --worker=all
rm -f "$tarball"

setup='set -e; mkdir -p ~/glitr-jax && tar -C ~/glitr-jax -xzf ~/glitr-jax.tar.gz && cd ~/glitr-jax
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q "jax[tpu]==0.10.2" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
fi'
gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${PROJECT_FLAG[@]}" --zone="$ZONE" --worker=all \
  --command="$setup"

# Quote every argument for the remote shell.
args=$(printf '%q ' --config="$config" --workdir="$workdir" "${run_args[@]}")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${PROJECT_FLAG[@]}" --zone="$ZONE" --worker=all \
  --command="cd ~/glitr-jax && .venv/bin/python main.py $args 2>&1 | tee -a ~/glitr-jax-run.log"

if [[ "$DELETE" == 1 ]]; then
  gcloud compute tpus tpu-vm delete "$TPU_NAME" "${PROJECT_FLAG[@]}" --zone="$ZONE" --quiet
fi
