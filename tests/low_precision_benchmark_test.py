"""benchmarks/low_precision.py: its comparison arithmetic, its workdir inputs, and a tiny run."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp
import pytest
from tiny import tiny_model_config, tiny_train_config

from glitr_jax import inference, pixels
from glitr_jax.data import synthetic
from glitr_jax.models import config as model_config_lib
from glitr_jax.train import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'benchmarks' / 'low_precision.py'
FIGURES = (
  'max_abs_logit_diff',
  'mean_abs_logit_diff',
  'top1_agreement_last_step',
  'top1_agreement_all_steps',
  'max_abs_location_diff',
  'mean_abs_location_diff',
  'accuracy_at_T',
  'weight_dtypes',
)


@pytest.fixture(scope='module')
def lp():
  """The script as a module (its flags are defined only when it runs as a script)."""
  sys.path.insert(0, str(SCRIPT.parent))  # its `import machine`
  try:
    spec = importlib.util.spec_from_file_location('low_precision_benchmark', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    sys.path.remove(str(SCRIPT.parent))
  return module


def test_abs_diff_stats(lp):
  a = np.array([[0.0, 1.0], [2.0, 3.0]])
  b = np.array([[0.5, 1.0], [1.0, 3.0]], np.float32)
  assert lp.abs_diff_stats(a, b) == (1.0, 0.375)
  assert lp.abs_diff_stats(a, a) == (0.0, 0.0)
  with pytest.raises(ValueError, match='shapes differ'):
    lp.abs_diff_stats(a, a[:1])


def test_top1_agreement_and_accuracy(lp):
  # 2 videos, 3 steps, 3 classes; the reference's argmax per (video, step): [[0, 1, 2], [2, 2, 0]].
  eye = np.eye(3)
  reference = np.stack([eye[[0, 1, 2]], eye[[2, 2, 0]]])
  other = np.stack([eye[[0, 2, 2]], eye[[2, 2, 1]]])  # differs at (0, 1) and (1, 2)
  assert lp.top1_agreement(reference, other) == (0.5, 4 / 6)
  assert lp.top1_agreement(reference, reference) == (1.0, 1.0)
  assert lp.accuracy_at_last_step(reference, np.array([2, 0])) == 1.0
  assert lp.accuracy_at_last_step(other, np.array([2, 0])) == 0.5
  with pytest.raises(ValueError, match='3 labels for 2 videos'):
    lp.accuracy_at_last_step(reference, np.array([0, 1, 2]))

  ref = {'logits': reference, 'locations': np.zeros((2, 3, 2))}
  path = {'logits': other, 'locations': np.full((2, 3, 2), -0.25)}
  figures = lp.compare(ref, path, np.array([2, 0]))
  assert figures == {
    'max_abs_logit_diff': 1.0,
    'mean_abs_logit_diff': 4 / 18,
    'top1_agreement_last_step': 0.5,
    'top1_agreement_all_steps': 4 / 6,
    'max_abs_location_diff': 0.25,
    'mean_abs_location_diff': 0.25,
    'accuracy_at_T': 0.5,
  }
  assert lp.compare(ref, path)['accuracy_at_T'] is None


def test_path_inputs_store_the_paths_weights(lp):
  config = tiny_model_config()
  params = lp.machine.random_params(inference.model_for(config))
  kernel = params['temporal_head']['blocks_0']['attn']['qkv']
  for path, dtype, quantized in (
    ('float32', 'float32', False),
    ('bfloat16', 'bfloat16', False),
    ('int8_heads', 'int8', True),
  ):
    path_config, path_params = lp.path_inputs(path, config, params)
    assert path_config.compute_dtype == ('float32' if path == 'float32' else 'bfloat16')
    stored = path_params['temporal_head']['blocks_0']['attn']['qkv']
    assert str(stored['kernel'].dtype) == dtype and ('kernel_scale' in stored) == quantized
  assert config.compute_dtype == 'float32'  # the caller's config is not changed
  assert str(kernel['kernel'].dtype) == 'float32'
  with pytest.raises(ValueError, match='unknown path'):
    lp.path_inputs('float16', config, params)


def test_workdir_inputs_render_the_first_validation_videos(lp, tmp_path):
  config = tiny_train_config('student')
  params = lp.machine.random_params(inference.model_for(config.model))
  workdir = str(tmp_path / 'student')
  manager = ocp.CheckpointManager(
    checkpoints.checkpoint_dir(workdir),
    item_names=('params',),
    options=ocp.CheckpointManagerOptions(create=True),
  )
  manager.save(3, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
  manager.wait_until_finished()
  manager.close()
  checkpoints.write_run_info(workdir, config, [f'class {i}' for i in range(4)])

  mc, loaded, frames, labels, step = lp.workdir_inputs(workdir, 5)
  assert step == 3 and mc.image_size == 32 and mc.num_frames == 4
  np.testing.assert_array_equal(
    loaded['temporal_head']['head']['kernel'], params['temporal_head']['head']['kernel']
  )
  sp = synthetic.SyntheticParams.from_config(config.data.synthetic)
  np.testing.assert_array_equal(labels, synthetic.labels_for_split(sp, 'validation')[:5])
  assert frames.shape == (5, 4, 32, 32, 3) and frames.dtype == np.float32
  video, _ = synthetic.render_video(sp, int(labels[4]), 'validation', 4)
  np.testing.assert_allclose(frames[4], pixels.normalize(video.astype(np.float32), 255.0))
  with pytest.raises(ValueError, match='num_videos must be in'):
    lp.workdir_inputs(workdir, sp.validation_examples + 1)


def test_script_compares_the_paths_of_a_tiny_random_model():
  # The tiny model at depth 1 (a few seconds); num_frames follows --frames.
  tiny = tiny_model_config(depth=1, temporal_hidden_size=32, temporal_depth=1)
  skip = ('num_frames', 'drop_path_rate')
  args = [f'--model.{k}={tiny[k]}' for k in model_config_lib.FIELDS if k not in skip]
  done = subprocess.run(
    [sys.executable, str(SCRIPT), '--num_videos=5', '--batch=5', '--frames=3', *args],
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_PLATFORMS='cpu'),
    cwd=REPO,
    timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  out = json.loads(done.stdout.strip().splitlines()[-1])  # ONE JSON object, last on stdout
  assert out['source'] == 'random weights' and out['checkpoint_step'] is None
  assert (out['num_videos'], out['batch'], out['frames'], out['image_size']) == (5, 5, 3, 32)
  assert out['float32_accuracy_at_T'] is None and out['float32_weight_dtypes'] == ['float32']
  assert out['backend'] == 'cpu' and out['cpus'] >= 1
  assert set(out['paths']) == {'bfloat16', 'int8_heads'}
  for name, figures in out['paths'].items():
    assert set(figures) == set(FIGURES), name
    assert figures['accuracy_at_T'] is None
    for key in ('top1_agreement_last_step', 'top1_agreement_all_steps'):
      assert 0 <= figures[key] <= 1, (name, key)
    # The dtype took effect: bfloat16 rounding changes every path's outputs a little.
    for kind in ('logit', 'location'):
      assert 0 < figures[f'mean_abs_{kind}_diff'] <= figures[f'max_abs_{kind}_diff'] < 1, name
  assert out['paths']['bfloat16']['weight_dtypes'] == ['bfloat16', 'float32']
  assert out['paths']['int8_heads']['weight_dtypes'] == ['bfloat16', 'float32', 'int8']
