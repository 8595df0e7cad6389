"""The modules a train step needs load neither TensorFlow Datasets nor grain (issue 27).

Each check imports the modules in a fresh interpreter, so what the test session itself has
imported does not hide a heavy import.
"""

import json
import subprocess
import sys

import pytest

HEAVY = ('tensorflow_datasets', 'grain', 'tensorflow')
# What `glitr_jax.train.steps.make_train_step` runs: the model, the losses, the on-device batch
# augmentation (mixup / CutMix and the device path of the training augmentation).
TRAIN_STEP_MODULES = (
  'glitr_jax.train.steps',
  'glitr_jax.losses',
  'glitr_jax.data.mixup',
  'glitr_jax.data.device_augment',
  'glitr_jax.models.glitr',
)


def _heavy_modules_after_importing(modules: tuple[str, ...]) -> list[str]:
  code = (
    'import importlib, json, sys\n'
    f'for name in {list(modules)!r}:\n'
    '  importlib.import_module(name)\n'
    f'print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))\n'
  )
  out = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, check=True, timeout=300
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_train_step_modules_import_neither_tfds_nor_grain():
  assert _heavy_modules_after_importing(TRAIN_STEP_MODULES) == []


@pytest.mark.parametrize('module', ['glitr_jax.data', 'glitr_jax.data.config'])
def test_the_data_package_and_its_config_are_light(module):
  # configs/common.py imports glitr_jax.data.config: reading a config must not load TFDS.
  assert _heavy_modules_after_importing((module,)) == []


def test_the_data_package_still_exposes_the_pipeline_names():
  code = (
    'import sys\n'
    'from glitr_jax import data\n'
    "names = ['dataset_info', 'create_train_iterator', 'create_eval_iterator',\n"
    "         'DatasetNotPreparedError', 'DatasetInfo', 'EvalIterable', 'make_builder',\n"
    "         'prepare_dataset', 'get_data_config', 'mixup_cutmix', 'Jester',\n"
    "         'SomethingSomethingV2', 'VideoFolder', 'GlitrSynthetic']\n"
    'missing = [n for n in names if not hasattr(data, n)]\n'
    'assert not missing, missing\n'
    'assert issubclass(data.DatasetNotPreparedError, FileNotFoundError)\n'
    "assert 'tensorflow_datasets' in sys.modules  # the pipeline names load it, on first use\n"
    'try:\n'
    '  data.no_such_name\n'
    'except AttributeError as e:\n'
    "  assert 'no_such_name' in str(e)\n"
    'else:\n'
    "  raise AssertionError('expected AttributeError')\n"
  )
  subprocess.run([sys.executable, '-c', code], check=True, timeout=300)
