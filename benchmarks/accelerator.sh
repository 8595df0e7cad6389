#!/usr/bin/env bash
# One accelerator check, for when a GPU or TPU is lent: prints ONE JSON object (in <= 5 minutes).
#
#   benchmarks/accelerator.sh           # the paper's per-device batches on JAX's default device
#   TINY=1 benchmarks/accelerator.sh    # tiny sizes (CPU, about two minutes): what the test runs
#   benchmarks/accelerator.sh --tiny    # the same
#
# It runs, each in its own process and in this order of priority, until the time budget (BUDGET_S,
# default 285 s) would be exceeded; a run that does not fit is listed with status "skipped":
#   train_steps     benchmarks/train_step.py for the SSv2 student (per-device batch 90 = 360 / 4
#                   A100s, T = 16, 96-px glimpses) and teacher (15 = 60 / 4, T = 16), bfloat16 and
#                   float32, without then with `model.remat` (--remat). Beside its JSON: `mfu`
#                   against the device's dense peak for the dtype (benchmarks/input_pipeline.py
#                   ACCELERATORS; null for a device not in the table, e.g. a CPU), the device's peak
#                   memory (`memory_stats()['peak_bytes_in_use']` after the run; null on CPU, where
#                   `peak_memory_mib` is the process's resident peak), and train_step's own MFU
#                   against its measured matmul rate as `mfu_vs_measured_matmul`. The teacher step
#                   has no L_dist (train_step.py runs no VideoMAE).
#   inference       benchmarks/inference.py: one stream (B = 1), T = 16, online latency per step.
#   input_pipeline  benchmarks/input_pipeline.py --paths=device: the host's videos/s per core
#                   (this machine's CPU) and the device augmentation of one batch of 90 clips;
#                   `device_augment_vs_student_step` sets its time per video beside the first
#                   student step's (what the augmentation adds to a step on this device).
# JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR, default .jax_cache/) makes a
# second run compile nothing. PYTHON picks the interpreter (default .venv/bin/python, else python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ "${1:-}" == "--tiny" ]]; then
  export TINY=1
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/.jax_cache}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

exec "$PYTHON" - <<'PY'
import json
import os
import subprocess
import sys
import time

START = time.monotonic()
REPO = os.getcwd()
BENCH = os.path.join(REPO, 'benchmarks')
TINY = os.environ.get('TINY', '0') not in ('', '0')
BUDGET_S = float(os.environ.get('BUDGET_S', '285'))
RESERVE_S = 5.0 if TINY else 20.0  # a run is started only with this much time left for it
CHILD_ENV = dict(os.environ)
os.environ['JAX_PLATFORMS'] = 'cpu'  # this process must not take the accelerator's memory
sys.path[:0] = [REPO, BENCH]
import input_pipeline  # noqa: E402  (the peak table)

if TINY:
  STEP_SIZES = {
    'student': ['--batch=1', '--frames=2'],
    'teacher': ['--batch=1', '--frames=2'],
  }
  STEP_COMMON = [
    '--image_size=32', '--glimpse=16', '--depth=1', '--num_classes=5', '--steps=5',
    '--warmup=0', '--matmul_size=64',
  ]
  INFERENCE = ['--frames=2', '--batch=1', '--repeats=1', '--glimpse=16']
  PIPELINE = [
    '--num_videos=4', '--video_frames=4', '--frame_height=24', '--frame_width=32',
    '--num_frames=2', '--image_size=16', '--batch_size=2', '--num_batches=1',
    '--warmup_batches=0', '--device_batches=1', '--canvas=24,32',
  ]
else:
  STEP_SIZES = {
    'student': ['--batch=90', '--frames=16'],
    'teacher': ['--batch=15', '--frames=16'],
  }
  STEP_COMMON = ['--glimpse=96', '--num_classes=174', '--steps=5', '--warmup=1']
  INFERENCE = ['--frames=16', '--batch=1', '--repeats=3']
  PIPELINE = ['--batch_size=90', '--num_batches=2', '--warmup_batches=1', '--device_batches=3']

# train_step.py inside a process that reports the device's peak memory after it.
_WRAPPED = r"""
import json, runpy, sys
sys.path[:0] = [{repo!r}, {bench!r}]
sys.argv = ['train_step.py'] + {args!r}
try:
  runpy.run_path({script!r}, run_name='__main__')
except SystemExit as e:
  if e.code not in (0, None):
    raise
import jax
stats = jax.local_devices()[0].memory_stats() or {{}}
print(json.dumps({{'device_peak_bytes': stats.get('peak_bytes_in_use')}}))
"""


def elapsed() -> float:
  return time.monotonic() - START


def run(argv: list[str]) -> tuple[str, list[dict], float, str]:
  """(status, the JSON objects printed, seconds, stderr's tail) of one benchmark process."""
  left = BUDGET_S - elapsed()
  if left < RESERVE_S:
    return 'skipped', [], 0.0, f'{left:.0f} s of the {BUDGET_S:.0f} s budget left'
  begin = time.monotonic()
  try:
    done = subprocess.run(
      argv, capture_output=True, text=True, timeout=left - 2, cwd=REPO, env=CHILD_ENV
    )
  except subprocess.TimeoutExpired:
    return 'timeout', [], time.monotonic() - begin, 'killed at the end of the time budget'
  seconds = time.monotonic() - begin
  objects = []
  for line in done.stdout.splitlines():
    if line.startswith('{'):
      try:
        objects.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  if done.returncode:
    return 'failed', objects, seconds, done.stderr.strip()[-2000:]
  return 'ok', objects, seconds, ''


def step_job(stage: str, dtype: str, remat: bool):
  args = STEP_SIZES[stage] + STEP_COMMON + [
    f'--stage={stage}', f'--compute_dtype={dtype}', '--remat' if remat else '--noremat'
  ]
  code = _WRAPPED.format(
    repo=REPO, bench=BENCH, args=args, script=os.path.join(BENCH, 'train_step.py')
  )
  status, objects, seconds, error = run([sys.executable, '-c', code])
  row = {'stage': stage, 'compute_dtype': dtype, 'remat': remat, 'status': status}
  row['wall_s'] = round(seconds, 1)
  if error:
    row['error'] = error
  if status != 'ok' or len(objects) < 2:
    return row
  step, memory = objects[0], objects[1]
  kinds = step.get('devices') or ['']
  name = input_pipeline.accelerator_name(kinds[0])
  peak = input_pipeline.ACCELERATORS[name][dtype] if name else None
  row.update(
    batch=step['batch'],
    frames=step['frames'],
    median_step_s=step['median_step_s'],
    videos_per_s=step['videos_per_s'],
    model_flops_per_step=step['model_flops_per_step'],
    mfu=step['model_flops_per_step'] / step['median_step_s'] / peak if peak else None,
    peak_flops_per_s=peak,
    mfu_vs_measured_matmul=step['mfu'],
    device_peak_memory_mib=(
      memory['device_peak_bytes'] / 2**20 if memory['device_peak_bytes'] is not None else None
    ),
    peak_memory_mib=step['peak_memory_mib'],
    xla_temp_mib=step['xla_temp_mib'],
    loss=step['loss'],
    step_times_s=step['step_times_s'],
    backend=step['backend'],
    device_kind=kinds[0],
  )
  return row


def inference_job(dtype: str):
  script = os.path.join(BENCH, 'inference.py')
  status, objects, seconds, error = run(
    # Weights stored once in the compute dtype, as the streaming agent keeps them.
    [sys.executable, script, *INFERENCE, f'--compute_dtype={dtype}', '--param_dtype=compute']
  )
  out = {'compute_dtype': dtype, 'status': status, 'wall_s': round(seconds, 1)}
  if error:
    out['error'] = error
  if status == 'ok' and objects:
    out.update(objects[-1])
  return out


def pipeline_job():
  script = os.path.join(BENCH, 'input_pipeline.py')
  status, objects, seconds, error = run(
    [sys.executable, script, '--paths=device', '--rounds=1', *PIPELINE]
  )
  out = {'status': status, 'wall_s': round(seconds, 1)}
  if error:
    out['error'] = error
  if status == 'ok' and objects:
    out.update(objects[-1])
  return out


# Most wanted first: what a lent device shows first is what matters most.
steps_rows, inference_rows, pipeline = [], [], None
plan = [
  ('step', ('student', 'bfloat16', False)),
  ('step', ('teacher', 'bfloat16', False)),
  ('step', ('student', 'float32', False)),
  ('step', ('teacher', 'float32', False)),
  ('inference', ('float32',)),
  ('pipeline', ()),
  ('step', ('student', 'bfloat16', True)),
  ('step', ('teacher', 'bfloat16', True)),
  ('step', ('student', 'float32', True)),
  ('step', ('teacher', 'float32', True)),
  ('inference', ('bfloat16',)),
]
for kind, args in plan:
  if kind == 'step':
    steps_rows.append(step_job(*args))
  elif kind == 'inference':
    inference_rows.append(inference_job(*args))
  else:
    pipeline = pipeline_job()

# What the device augmentation adds to a student step, per video (bfloat16, no remat).
augment_share = None
student = next((r for r in steps_rows if r['stage'] == 'student' and r['status'] == 'ok'), None)
if student and pipeline['status'] == 'ok' and pipeline['paths']['device']['device_augment']:
  augment = pipeline['paths']['device']['device_augment']
  per_video = augment['seconds_per_batch'] / pipeline['batch_size']
  step_per_video = student['median_step_s'] / student['batch']
  augment_share = {
    'augment_s_per_video': per_video,
    'student_step_s_per_video': step_per_video,
    'student_step': f"{student['compute_dtype']}, remat={student['remat']}",
    'ratio': per_video / step_per_video,
  }
kinds = [r['device_kind'] for r in steps_rows if r.get('device_kind')]
name = input_pipeline.accelerator_name(kinds[0]) if kinds else None
result = {
  'tiny': TINY,
  'device_kind': kinds[0] if kinds else None,
  'accelerator': name,
  'peak_flops_per_s': input_pipeline.ACCELERATORS.get(name) if name else None,
  'budget_s': BUDGET_S,
  'elapsed_s': round(elapsed(), 1),
  'statuses': sorted({r['status'] for r in steps_rows + inference_rows + [pipeline]}),
  'train_steps': steps_rows,
  'inference': inference_rows,
  'input_pipeline': pipeline,
  'device_augment_vs_student_step': augment_share,
}
print(json.dumps(result))
PY
