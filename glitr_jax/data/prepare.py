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

The prepared dataset records a fingerprint of the raw release it was built from (every file's
path and size, and the contents of files under 1 MB: label files and lists). Preparing again
over a raw release that changed since refuses to reuse the stored dataset; --overwrite rebuilds
it.
"""

import hashlib
import json
import os
import shutil

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
_OVERWRITE = flags.DEFINE_bool(
  'overwrite', False, 'Rebuild the dataset when the raw release changed since it was prepared.'
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


FINGERPRINT_FILE = 'raw_fingerprint.json'
_HASHED_BELOW = 1 << 20  # files smaller than this are hashed whole (labels, lists, CSVs)


def raw_fingerprint(manual_dir: str) -> dict[str, object]:
  """What identifies a raw release: its file count, total size and a digest of its listing.

  Args:
    manual_dir: the raw release's folder.

  Returns:
    {'files': N, 'bytes': B, 'sha256': digest of (path, size[, contents' digest]) per file}.
  """
  digest, files, total = hashlib.sha256(), 0, 0
  for root, dirs, names in os.walk(manual_dir):
    dirs.sort()
    for name in sorted(names):
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      line = f'{os.path.relpath(path, manual_dir)}\t{size}'
      if size < _HASHED_BELOW:
        with open(path, 'rb') as f:
          line += '\t' + hashlib.sha256(f.read()).hexdigest()
      digest.update(line.encode() + b'\n')
      files, total = files + 1, total + size
  return {'files': files, 'bytes': total, 'sha256': digest.hexdigest()}


def check_raw_release(data_config: ml_collections.ConfigDict, overwrite: bool) -> dict | None:
  """Compares the raw release with the one the stored dataset was built from.

  Returns:
    The fingerprint to record beside the dataset once it is prepared (None: record nothing; a
    generated dataset has no raw release, and an old dataset without one is not vouched for).

  Raises:
    app.UsageError: the stored dataset was built from another raw release and not `overwrite`.
  """
  if not data_config.manual_dir:
    return None
  if not os.path.isdir(data_config.manual_dir):
    raise app.UsageError(f'--manual_dir={data_config.manual_dir}: no such directory')
  builder = pipeline.make_builder(data_config)
  stored_dir = str(builder.data_dir)
  current = raw_fingerprint(data_config.manual_dir)
  if not os.path.exists(os.path.join(stored_dir, 'dataset_info.json')):
    return current
  path = os.path.join(stored_dir, FINGERPRINT_FILE)
  stored = None
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
  if stored == current:
    return current
  if stored is None:
    logging.warning(
      '%s records no fingerprint of its raw release: reusing it as it is (--overwrite rebuilds)',
      stored_dir,
    )
    return None  # not recorded now either: nothing says the stored dataset matches it
  if not overwrite:
    raise app.UsageError(
      f'{data_config.manual_dir} changed since {stored_dir} was prepared from it '
      f'({stored["files"]} files, {stored["bytes"]} bytes then; {current["files"]} files, '
      f'{current["bytes"]} bytes now): pass --overwrite to rebuild the dataset'
    )
  logging.warning('The raw release changed: removing %s to rebuild it', stored_dir)
  shutil.rmtree(stored_dir)
  return current


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  data_config = _data_config_from_flags()
  fingerprint = check_raw_release(data_config, _OVERWRITE.value)
  info = pipeline.prepare_dataset(data_config, num_workers=_NUM_WORKERS.value)
  if fingerprint is not None:
    with open(os.path.join(info.data_dir, FINGERPRINT_FILE), 'w') as f:
      json.dump(fingerprint, f)
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
