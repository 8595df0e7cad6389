"""Datasets, the input pipeline and the training augmentation.

Every example has `video` (uint8 (n, H, W, 3), stored as one JPEG per frame), `label`, `video_id`
and `num_frames`; class names are in the dataset metadata (`dataset_info(...).class_names`) in the
official index order.

Prepare a real dataset once: `python -m glitr_jax.data.prepare --dataset=NAME --manual_dir=M
--data_dir=D` (see glitr_jax/data/prepare.py); `glitr_synthetic` builds itself on first use.

Importing this package is light (no TensorFlow Datasets, no grain): the modules the train step
needs (`mixup`, `device_augment`, `config`) import JAX or NumPy only. The pipeline's names below
(`dataset_info`, `create_train_iterator`, ...) load `glitr_jax.data.pipeline` on first use, which
imports TFDS and grain and registers the TFDS builders `something_something_v2`, `jester`,
`video_folder` and `glitr_synthetic`.
"""

import importlib

# Public name -> the submodule that defines it.
_EXPORTS = {
  'DatasetInfo': 'pipeline',
  'DatasetNotPreparedError': 'pipeline',
  'EvalIterable': 'pipeline',
  'create_eval_iterator': 'pipeline',
  'create_train_iterator': 'pipeline',
  'dataset_info': 'pipeline',
  'make_builder': 'pipeline',
  'prepare_dataset': 'pipeline',
  'get_data_config': 'config',
  'mixup_cutmix': 'mixup',
  'GlitrSynthetic': 'synthetic',
  'Jester': 'jester',
  'SomethingSomethingV2': 'ssv2',
  'VideoFolder': 'video_folder',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  """Loads the submodule that defines `name` (PEP 562) and caches the attribute."""
  module = _EXPORTS.get(name)
  if module is None:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  value = getattr(importlib.import_module(f'{__name__}.{module}'), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))
