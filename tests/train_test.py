"""Training: one device == four, frozen weights stay frozen, resume == uninterrupted, errors."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_train_config

from glitr_jax import optim, sharding, weights
from glitr_jax.models import glitr
from glitr_jax.train import checkpoints, loop, steps

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def random_batches(config, n, seed=0):
  rng = np.random.default_rng(seed)
  m = config.model
  shape = (config.batch_size, m.num_frames, m.image_size, m.image_size, 3)
  return [
    {
      'video': rng.normal(size=shape).astype(np.float32),
      'label': rng.integers(0, m.num_classes, size=config.batch_size).astype(np.int32),
    }
    for _ in range(n)
  ]


def run_steps(config, mesh, batches, frozen=None, params=None, total_steps=100):
  """Runs the jitted train step over `batches` on `mesh`; returns (losses, final params)."""
  model = glitr.GliTr.from_config(config.model)
  tx = optim.make_optimizer(config, total_steps, 10)
  params = model.init(jax.random.key(0)) if params is None else params
  state = sharding.replicate(steps.create_state(params, tx, config.seed), mesh)
  frozen = sharding.replicate(frozen or {}, mesh)
  rep = sharding.replicated(mesh)
  step = jax.jit(
    steps.make_train_step(model, config, tx, optim.schedules(config, total_steps, 10)),
    in_shardings=(rep, sharding.batch_sharding(mesh), rep),
    out_shardings=(rep, rep),
  )
  losses = []
  for batch in batches:
    state, metrics = step(state, sharding.to_global(batch, mesh), frozen)
    losses.append(float(metrics['loss']))
  return losses, jax.device_get(state.params)


@pytest.mark.parametrize('stage', ['teacher', 'student'])
def test_four_devices_give_the_losses_of_one(stage):
  config = tiny_train_config(stage)
  if stage == 'teacher':  # exercise mixup/cutmix and drop-path in the sharded step
    config.data.augment.mixup, config.data.augment.cutmix = 0.8, 1.0
  batches = random_batches(config, 4)
  frozen = None
  if stage == 'student':
    frozen = {'teacher': glitr.GliTr.from_config(config.model).init(jax.random.key(9))}
  one, params_one = run_steps(
    config, sharding.make_mesh(devices=jax.devices()[:1]), batches, frozen
  )
  four, params_four = run_steps(
    config, sharding.make_mesh(devices=jax.devices()[:4]), batches, frozen
  )
  np.testing.assert_allclose(four, one, rtol=1e-5)
  assert len(set(one)) == 4  # the loss changes: parameters are being updated
  # Adam divides by sqrt(v): where gradients are ~0, float noise of the reduction order shows up
  # as ~1e-6 in the parameters (the step size is 3e-3).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), params_one, params_four)


def test_teacher_consistency_losses_reach_only_tl_and_init_loc():
  config = tiny_train_config('teacher')
  config.loss.ce, config.loss.dist = 0.0, 0.0
  model = glitr.GliTr.from_config(config.model)
  params = model.init(jax.random.key(0))
  batch = jax.tree.map(jnp.asarray, random_batches(config, 1)[0])

  def loss(p):
    return steps.stage_loss(model, config, p, batch, jax.random.key(1), {})[0]

  grads = jax.jit(jax.grad(loss))(params)
  for name in ('backbone', 'temporal_head'):
    for leaf in jax.tree.leaves(grads[name]):
      assert float(jnp.abs(leaf).max()) == 0.0, name
  assert float(jnp.abs(grads['temploc_head']['init_loc']).max()) > 0
  assert all(
    float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads['temploc_head']['blocks_0'])
  )
  # With CE on, Tf and Tc learn too (the frozen copies are only the consistency branch's).
  config.loss.ce = 1.0
  grads = jax.jit(jax.grad(loss))(params)
  assert float(jnp.abs(grads['backbone']['patch_embed']['kernel']).max()) > 0


def test_student_loss_terms_and_the_frozen_teacher_never_changes():
  config = tiny_train_config('student')
  model = glitr.GliTr.from_config(config.model)
  teacher = model.init(jax.random.key(3))
  before = jax.tree.map(np.array, teacher)
  mesh = sharding.make_mesh(devices=jax.devices()[:1])
  losses, params = run_steps(config, mesh, random_batches(config, 3), {'teacher': teacher}, teacher)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(teacher), before)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params, before)
  assert max(jax.tree.leaves(moved)) > 0  # the student, a copy of the teacher, did train


def test_loss_falls_on_a_tiny_synthetic_set_and_metrics_are_logged(data_dir, tmp_path):
  config = tiny_train_config('teacher', data_dir)
  config.num_train_steps = 40
  config.log_every_steps = 5
  config.checkpoint_every_steps = 20
  config.eval_every_steps = 20
  config.data.synthetic.train_examples = 16  # 20 epochs of 2 batches: the model can fit them
  config.optim.lr_tf = config.optim.lr_tc = config.optim.lr_tl = 5e-2  # peak 3e-3 at batch 8
  config.loss.spatial = config.loss.temporal = config.loss.label_smoothing = 0.0
  config.model.drop_path_rate = 0.0
  loop.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['step'] for r in rows] == list(range(5, 41, 5))
  late = np.mean([r['ce'] for r in rows[-2:]])
  assert late < 0.85 * rows[0]['ce'], [r['ce'] for r in rows]
  expected = {'loss', 'ce', 'lr_tf', 'lr_tc', 'lr_tl', 'steps_per_sec', 'grad_norm'}
  expected |= {f'accuracy_t{t}' for t in range(1, 5)}
  assert expected <= set(rows[0])
  assert {f'eval_accuracy_t{t}' for t in range(1, 5)} <= set(rows[-1])
  assert rows[-1]['eval_examples'] == config.data.synthetic.validation_examples
  assert json.load(open(tmp_path / 'class_names.json'))
  # Checkpoints: the last ones, and loading the parameters back.
  params, step = weights.load_params(str(tmp_path), config.model)
  assert step == 40
  # A workdir from another config is an error that lists the differences, never a re-init.
  other = config.copy_and_resolve_references()
  other.model.hidden_size = 48
  with pytest.raises(
    ValueError, match='(?s)another config.*model.hidden_size: recorded 32, given 48'
  ):
    loop.train_and_evaluate(other, str(tmp_path))


def test_non_finite_loss_stops_naming_the_step_and_keeps_good_checkpoints(data_dir, tmp_path):
  config = tiny_train_config('teacher', data_dir)
  config.num_train_steps = 10
  config.checkpoint_every_steps = 1
  config.log_every_steps = 5
  config.optim.lr_tf = config.optim.lr_tc = config.optim.lr_tl = 1e35  # diverges within steps
  with pytest.raises(loop.NonFiniteLossError, match=r'non-finite \w+ .* at step \d+'):
    loop.train_and_evaluate(config, str(tmp_path))
  ckpt = pathlib.Path(checkpoints.checkpoint_dir(str(tmp_path)))
  for step_dir in sorted(p for p in ckpt.iterdir() if p.name.isdigit()):
    params, _ = weights.load_params(str(step_dir), config.model)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params)), step_dir


def test_batch_size_not_divisible_by_devices_is_a_clear_error():
  mesh = sharding.make_mesh(devices=jax.devices()[:4])
  with pytest.raises(ValueError, match='batch_size=6 is not divisible by the 4 devices'):
    sharding.check_batch_size(6, mesh)


# ---------------------------------------------------------------- subprocess runs of main.py ----
def main_command(workdir, data_dir, *flags):
  return [
    sys.executable,
    str(REPO / 'main.py'),
    '--config=tests/tiny_config.py:teacher',
    f'--workdir={workdir}',
    f'--config.data.data_dir={data_dir}',
    *flags,
  ]


def subprocess_env(devices=1):
  env = dict(os.environ)
  env['PYTHONPATH'] = f'{REPO / "tests"}{os.pathsep}{REPO}'
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def final_metrics(workdir):
  rows = [json.loads(line) for line in open(pathlib.Path(workdir) / 'metrics.jsonl')]
  for row in rows:
    row.pop('steps_per_sec', None)
  return rows


def test_run_killed_after_a_checkpoint_resumes_bit_for_bit(data_dir, tmp_path):
  flags = ['--config.num_train_steps=30', '--config.checkpoint_every_steps=10']
  # Build the dataset once, outside the timed runs.
  tiny_train_config('teacher', data_dir)
  from glitr_jax import data  # noqa: PLC0415

  data.dataset_info(tiny_train_config('teacher', data_dir).data)

  def run_to_the_end(workdir):
    subprocess.run(
      main_command(workdir, data_dir, *flags),
      env=subprocess_env(),
      check=True,
      cwd=REPO,
      capture_output=True,
    )

  straight = tmp_path / 'straight'
  run_to_the_end(straight)

  killed = tmp_path / 'killed'
  for _ in range(3):  # the kill must land between the step-10 checkpoint and the end
    proc = subprocess.Popen(main_command(killed, data_dir, *flags), env=subprocess_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    first = killed / 'checkpoints' / '10'
    while not first.exists() and proc.poll() is None:
      time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not (killed / 'checkpoints' / '30').exists():
      break
    subprocess.run(['rm', '-rf', str(killed)], check=True)
  else:
    pytest.fail('the run finished before it could be killed three times in a row')
  assert first.exists()
  run_to_the_end(killed)

  config = tiny_train_config('teacher', data_dir)
  a, step_a = weights.load_params(str(straight), config.model)
  b, step_b = weights.load_params(str(killed), config.model)
  assert step_a == step_b == 30
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert final_metrics(killed) == final_metrics(straight)


def test_two_processes_with_jax_distributed_match_one_process(data_dir, tmp_path):
  import portpicker  # noqa: PLC0415

  config = tiny_train_config('teacher', data_dir)
  from glitr_jax import data  # noqa: PLC0415

  data.dataset_info(config.data)  # build once
  port = portpicker.pick_unused_port()
  flags = ['--config.num_train_steps=4', '--config.checkpoint_every_steps=4']
  procs = [
    subprocess.Popen(
      main_command(
        tmp_path / 'multi',
        data_dir,
        *flags,
        f'--coordinator_address=localhost:{port}',
        '--num_processes=2',
        f'--process_id={i}',
      ),
      env=subprocess_env(devices=1),
      cwd=REPO,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )  # fmt: skip
    for i in range(2)
  ]
  for p in procs:
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
  multi, step = weights.load_params(str(tmp_path / 'multi'), config.model)
  assert step == 4

  # One process, two devices, fed exactly the two hosts' shards side by side.
  iters = [
    data.create_train_iterator(config.data, batch_size=config.batch_size, num_frames=4,
                               image_size=32, seed=config.seed, process_index=i, process_count=2)
    for i in range(2)
  ]  # fmt: skip
  batches = []
  for _ in range(4):
    parts = [next(it) for it in iters]
    batches.append({k: np.concatenate([p[k] for p in parts]) for k in ('video', 'label')})
  mesh = sharding.make_mesh(devices=jax.devices()[:2])
  model = glitr.GliTr.from_config(config.model)
  init = model.init(jax.random.key(config.seed))
  single_losses, single = run_steps(config, mesh, batches, params=init, total_steps=4)
  jax.tree_util.tree_map_with_path(
    lambda p, a, b: np.testing.assert_allclose(a, b, atol=1e-6, err_msg=jax.tree_util.keystr(p)),
    multi,
    single,
  )
  multi_rows = final_metrics(tmp_path / 'multi')
  np.testing.assert_allclose([r['loss'] for r in multi_rows], single_losses, rtol=1e-5)
