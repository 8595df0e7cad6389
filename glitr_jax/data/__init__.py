"""Datasets and the input pipeline.

Importing this package registers the TFDS builders `something_something_v2`, `jester`,
`video_folder` and `glitr_synthetic`. Every example has `video` (uint8 (n, H, W, 3), stored as one
JPEG per frame), `label`, `video_id` and `num_frames`; class names are in the dataset metadata
(`dataset_info(...).class_names`) in the official index order.

Prepare a real dataset once: `python -m glitr_jax.data.prepare --dataset=NAME --manual_dir=M
--data_dir=D` (see glitr_jax/data/prepare.py); `glitr_synthetic` builds itself on first use.
"""

from glitr_jax.data.config import get_data_config
from glitr_jax.data.jester import Jester
from glitr_jax.data.mixup import mixup_cutmix
from glitr_jax.data.pipeline import (
  DatasetInfo,
  DatasetNotPreparedError,
  EvalIterable,
  create_eval_iterator,
  create_train_iterator,
  dataset_info,
  make_builder,
  prepare_dataset,
)
from glitr_jax.data.ssv2 import SomethingSomethingV2
from glitr_jax.data.synthetic import GlitrSynthetic
from glitr_jax.data.video_folder import VideoFolder

__all__ = [
  'DatasetInfo',
  'DatasetNotPreparedError',
  'EvalIterable',
  'GlitrSynthetic',
  'Jester',
  'SomethingSomethingV2',
  'VideoFolder',
  'create_eval_iterator',
  'create_train_iterator',
  'dataset_info',
  'get_data_config',
  'make_builder',
  'mixup_cutmix',
  'prepare_dataset',
]
