"""benchmarks/accelerator.sh at tiny sizes on CPU: every run finishes and reports sane figures."""

import json
import math
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_accelerator_script_runs_every_check_at_tiny_sizes():
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}  # one CPU device, as a GPU
  env.update(JAX_PLATFORMS='cpu', TINY='1', BUDGET_S='900')  # a loaded CPU: no run skipped
  done = subprocess.run(
    ['bash', str(REPO / 'benchmarks' / 'accelerator.sh')],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=1200,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])  # ONE JSON object, last on stdout

  assert out['tiny'] is True and out['statuses'] == ['ok'], [
    (r.get('stage'), r['status'], r.get('error', '')[-300:])
    for r in out['train_steps'] + out['inference'] + [out['input_pipeline']]
  ]
  assert out['device_kind'] == 'cpu' and out['accelerator'] is None  # no peak for a CPU
  assert 0 < out['elapsed_s'] <= out['budget_s']

  steps = out['train_steps']
  matrix = {(r['stage'], r['compute_dtype'], r['remat']) for r in steps}
  assert matrix == {
    (stage, dtype, remat)
    for stage in ('student', 'teacher')
    for dtype in ('bfloat16', 'float32')
    for remat in (False, True)
  }
  for r in steps:
    assert r['median_step_s'] > 0 and math.isclose(
      r['videos_per_s'], r['batch'] / r['median_step_s'], rel_tol=1e-6
    )
    assert r['model_flops_per_step'] > 0 and math.isfinite(r['loss'])
    assert r['mfu'] is None and r['peak_flops_per_s'] is None  # CPU: not in the peak table
    assert 0 < r['mfu_vs_measured_matmul'] < 2
    assert r['device_peak_memory_mib'] is None and r['peak_memory_mib'] > 0  # CPU: host RSS
    assert len(r['step_times_s']) == 5
  # The same model with and without rematerialisation: the same analytic FLOPs.
  by_key = {(r['stage'], r['compute_dtype'], r['remat']): r for r in steps}
  for stage in ('student', 'teacher'):
    assert (
      by_key[(stage, 'float32', True)]['model_flops_per_step']
      == by_key[(stage, 'float32', False)]['model_flops_per_step']
    )

  assert [r['compute_dtype'] for r in out['inference']] == ['float32', 'bfloat16']
  for r in out['inference']:
    (row,) = r['rows']
    assert row['frames'] == 2 and row['cached_s'] > 0 and row['first_step_s'] > 0

  pipeline = out['input_pipeline']
  device = pipeline['paths']['device']
  assert list(pipeline['paths']) == ['device']
  assert device['videos_per_second_per_core'] > 0 and device['videos_per_cpu_second'] > 0
  augment = device['device_augment']
  assert augment['backend'] == 'cpu' and augment['seconds_per_batch'] > 0
  assert augment['canvas'] == [24, 32]
  rows = {r['accelerator']: r for r in pipeline['accelerators']['rows']}
  assert set(rows) >= {'A100', 'H100', 'TPU v4', 'TPU v5e'}
  # 231 GFLOP per student video (SSv2, T = 16): an A100 at 40% of 312 TFLOP/s takes ~540/s.
  assert 500 < rows['A100']['student_videos_per_s'] < 580
  assert rows['A100']['student_host_cores_device'] > 0
  share = out['device_augment_vs_student_step']
  assert share['ratio'] > 0 and share['student_step'] == 'bfloat16, remat=False'
