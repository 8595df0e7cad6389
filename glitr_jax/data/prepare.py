r"""Prepares a dataset once: raw release -> TFDS ArrayRecord files that the input pipeline reads.

  python -m glitr_jax.data.prepare --dataset=something_something_v2 \
    --manual_dir=/data/ssv2_raw --data_dir=/data/tfds --num_workers=16 [--skip_bad_videos]
  python -m glitr_jax.data.prepare --dataset=jester --manual_dir=/data/jester_raw --data_dir=...
  python -m glitr_jax.data.prepare --dataset=video_folder --manual_dir=/data/tsm_ssv2 \
    --data_dir=... [--config_name=ssv2_frames --frames_dir=... --category_file=... \
    --train_list=... --val_list=... --frame_template='{:06d}.jpg']
  python -m glitr_jax.data.prepare --config=configs/demo.py   # the data section of a config

What each builder expects in the manual dir is in its MANUAL_DOWNLOAD_INSTRUCTIONS
(glitr_jax/data/ssv2.py, jester.py, video_folder.py). A progress bar counts the videos read. A
video that cannot be read (corrupt or truncated file, missing frame, unknown label) stops the run
with an error naming the file; with --skip_bad_videos such videos are skipped and listed at the
end (and kept in the dataset's metadata, `dataset_info(...).skipped_videos`).
"""

import os

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from glitr_jax.data import config as config_lib
from glitr_jax.data import pipeline

_CONFIG = config_flags.DEFINE_config_file(
  'config', None, 'Optional experiment config; its `data` section gives the defaults.'
)
_DATASET = flags.DEFINE_enum('dataset', None, config_lib.DATASETS, 'Which dataset (data.name).')
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Where the raw release lies.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir to write to.')
_SKIP = flags.DEFINE_bool('skip_bad_videos', None, 'Skip unreadable videos and report them.')
_NUM_WORKERS = flags.DEFINE_integer(
  'num_workers', os.cpu_count() or 1, 'Processes decoding videos (1 = in this process).'
)
_FRAME_HEIGHT = flags.DEFINE_integer(
  'frame_height', None, 'something_something_v2: stored frame height (0 = as decoded).'
)
_VIDEO_FOLDER = {
  name: flags.DEFINE_string(name, None, f'video_folder: data.video_folder.{name}.')
  for name in (
    'config_name',
    'frames_dir',
    'category_file',
    'train_list',
    'val_list',
    'frame_template',
  )
}


def _data_config_from_flags() -> ml_collections.ConfigDict:
  data_config = config_lib.get_data_config()
  if _CONFIG.value is not None:
    data_config.update(_CONFIG.value.data)
  overrides = {
    'name': _DATASET.value,
    'manual_dir': _MANUAL_DIR.value,
    'data_dir': _DATA_DIR.value,
    'skip_bad_videos': _SKIP.value,
    'frame_height': _FRAME_HEIGHT.value,
  }
  data_config.update({k: v for k, v in overrides.items() if v is not None})
  data_config.video_folder.update(
    {k: f.value for k, f in _VIDEO_FOLDER.items() if f.value is not None}
  )
  if _DATASET.value is None and _CONFIG.value is None:
    raise app.UsageError('Name the dataset with --dataset (or give --config).')
  return data_config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  data_config = _data_config_from_flags()
  info = pipeline.prepare_dataset(data_config, num_workers=_NUM_WORKERS.value)
  print(f'{info.name} ({info.config_name or "no config"}) in {info.data_dir}')
  print(f'  {info.num_classes} classes; examples: {info.num_examples}')
  for split, skipped in sorted(info.skipped_videos.items()):
    if skipped:
      print(f'  {split}: skipped {len(skipped)} bad video(s):')
      for video_id, problem in skipped.items():
        print(f'    {video_id}: {problem}')
  logging.info('Prepared %s', info)


if __name__ == '__main__':
  app.run(main)
