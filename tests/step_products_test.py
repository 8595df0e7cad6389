"""benchmarks/hlo_products.py finds every product of a compiled program; step_products.py runs.

Only the flag-free hlo_products is imported here: step_products.py defines absl flags (train_step's
own among them) and runs in a subprocess, as a user runs it.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / 'benchmarks'))

import hlo_products  # noqa: E402  (benchmarks/hlo_products.py)


def _compiled_text(f, *args) -> str:
  return jax.jit(f).lower(*args).compile().as_text()


def test_a_linear_layers_forward_and_backward_are_three_products_of_its_flops():
  x, w = jnp.ones((96, 32)), jnp.ones((32, 48))
  loss = lambda x, w: jnp.sum(jnp.tanh(x @ w))
  dots = hlo_products.hlo_dots(_compiled_text(jax.grad(loss, argnums=(0, 1)), x, w))
  # Forward, input gradient, weight gradient: each 2 x 96 x 32 x 48 FLOPs, whatever layouts and
  # runtimes XLA chose for them.
  assert sum(dots.values()) == 3
  assert sum(n * d.flops for d, n in dots.items()) == 3 * 2 * 96 * 32 * 48
  assert all(d.dtype == 'f32' and d.runtime for d in dots)


def test_batched_attention_products_keep_their_batch_and_contracting_dimensions():
  q, k = jnp.ones((2, 3, 40, 16)), jnp.ones((2, 3, 40, 16))
  scores = lambda q, k: jnp.einsum('bhqd,bhkd->bhqk', q, k, precision='highest')
  (dot,) = hlo_products.hlo_dots(_compiled_text(scores, q, k))
  assert len(dot.lhs_batch) == len(dot.rhs_batch) == 2
  assert dot.flops == 2 * 2 * 3 * 40 * 40 * 16
  assert dot.precision == 'highest'
  # Timing it alone runs a product of the same shapes: it takes time and returns.
  assert hlo_products.time_dot(dot, repeats=2) > 0


def test_library_fusions_and_dot_thunks_are_told_apart():
  fusion_config = '{"fusion_config":{"kind":"__ynn_fusion"}}'
  text = '\n'.join(
    [
      'HloModule m',
      '',
      '%fused_computation.1 (param_0.1: f32[4,8], param_1.1: f32[8,5]) -> f32[4,5] {',
      '  %param_0.1 = f32[4,8]{1,0} parameter(0)',
      '  %param_1.1 = f32[8,5]{1,0} parameter(1)',
      '  ROOT %dot.1 = f32[4,5]{1,0} dot(%param_0.1, %param_1.1), lhs_contracting_dims={1},'
      ' rhs_contracting_dims={0}',
      '}',
      '',
      'ENTRY %main.2 (a: f32[4,8], b: f32[8,5], c: f32[8,4]) -> (f32[4,5], f32[5,4]) {',
      '  %a = f32[4,8]{1,0} parameter(0)',
      '  %b = f32[8,5]{1,0} parameter(1)',
      '  %c = f32[8,4]{1,0} parameter(2)',
      '  %ynn_fusion.1 = f32[4,5]{1,0} fusion(%a, %b), kind=kCustom, calls=%fused_computation.1,'
      f' backend_config={fusion_config}',
      '  %dot.2 = f32[5,4]{1,0} dot(%b, %c), lhs_contracting_dims={0}, rhs_contracting_dims={0}',
      '  ROOT %tuple = (f32[4,5]{1,0}, f32[5,4]{1,0}) tuple(%ynn_fusion.1, %dot.2)',
      '}',
    ]
  )
  dots = hlo_products.hlo_dots(text)
  by_runtime = {d.runtime: d for d in dots}
  assert set(by_runtime) == {'ynn_fusion', 'dot'}
  assert by_runtime['ynn_fusion'].lhs == (4, 8) and by_runtime['ynn_fusion'].flops == 2 * 4 * 5 * 8
  assert by_runtime['dot'].lhs_contracting == (0,) and by_runtime['dot'].flops == 2 * 5 * 4 * 8
  with pytest.raises(ValueError, match='cannot read this HLO dot'):
    hlo_products.hlo_dots('  %d = f32[2]{0} dot(f32[2,3] %x, f32[3] %y)')
  with pytest.raises(ValueError, match='no definition of operand %y'):
    hlo_products.hlo_dots('  %x = f32[2,3]{1,0} parameter(0)\n  %d = f32[2]{0} dot(%x, %y)')
  with pytest.raises(ValueError, match='cannot time a s8 product'):
    hlo_products.time_dot(by_runtime['dot']._replace(dtype='s8'), repeats=1)


@pytest.mark.parametrize('stage', ['teacher', 'student'])
def test_a_tiny_step_reports_its_products_and_the_ceiling_they_allow(stage):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  done = subprocess.run(
    [
      sys.executable,
      str(REPO / 'benchmarks' / 'step_products.py'),
      f'--stage={stage}',
      '--batch=2',
      '--frames=2',
      '--image_size=32',
      '--glimpse=16',
      '--depth=1',
      '--num_classes=5',
      '--matmul_size=128',
      '--repeats=2',
    ],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])
  assert out['stage'] == stage and out['products'] >= out['distinct_products'] > 0
  assert out['products_s'] > 0 and out['matmul_flops_per_s'] > 0
  # The runtimes' shares add up to the whole.
  parts = out['by_runtime'].values()
  assert sum(p['flops'] for p in parts) == out['products_flops']
  assert abs(sum(p['s'] for p in parts) - out['products_s']) <= 1e-9 * out['products_s'] + 1e-12
  ceiling = out['model_flops_per_step'] / out['products_s'] / out['matmul_flops_per_s']
  assert abs(out['products_mfu_ceiling'] - ceiling) <= 1e-9 * ceiling
  assert 0 < len(out['slowest']) <= 12
  assert all(row['s'] > 0 and row['count'] > 0 for row in out['slowest'])
