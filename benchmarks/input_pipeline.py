r"""Input pipeline throughput: decoded + augmented training videos per second, per core and total.

Writes a Jester-format fixture (folders of JPEG frames, by default SSv2-sized: 45 frames of
256x340) or a glitr_synthetic set into a temporary folder, prepares it, then times the training
iterator (frame sampling, JPEG decoding of the sampled frames, RandAugment, random-resized crop,
normalisation, random erasing, batching) and prints ONE JSON object.

  python benchmarks/input_pipeline.py                          # SSv2-like, 16 x 224, in process
  python benchmarks/input_pipeline.py --worker_count=2         # grain worker processes
  python benchmarks/input_pipeline.py --dataset=glitr_synthetic --num_frames=8 --image_size=64
  python benchmarks/input_pipeline.py --data_dir=/data/tfds --dataset=jester --keep_data  # yours

`videos_per_second_per_core` divides by the cores doing the work: max(worker_count, 1), capped by
the machine's cores.
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags
from PIL import Image

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

from glitr_jax import data  # noqa: E402

_DATASET = flags.DEFINE_enum('dataset', 'jester', ['jester', 'glitr_synthetic'], 'Fixture kind.')
_DATA_DIR = flags.DEFINE_string(
  'data_dir', '', 'Use this prepared TFDS data dir instead of writing a fixture.'
)
_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 48, 'Fixture videos.')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 45, 'Frames per fixture video (SSv2: ~45).')
_FRAME_HEIGHT = flags.DEFINE_integer('frame_height', 256, 'Fixture frame height (SSv2: 256).')
_FRAME_WIDTH = flags.DEFINE_integer('frame_width', 340, 'Fixture frame width (SSv2: ~340).')
_NUM_FRAMES = flags.DEFINE_integer('num_frames', 16, 'T, frames per clip.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Output frame side.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Batch size (this host).')
_WORKER_COUNT = flags.DEFINE_integer('worker_count', 0, 'grain worker processes (0 = in process).')
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 12, 'Timed batches.')
_WARMUP = flags.DEFINE_integer('warmup_batches', 2, 'Untimed batches first (worker start-up).')
_RAND_AUGMENT = flags.DEFINE_string('rand_augment', 'rand-m7-n4-mstd0.5-inc1', "'' = off.")
_ERASING = flags.DEFINE_float('random_erasing', 0.25, 'Random erasing probability.')


def _write_jester_fixture(root: str) -> None:
  """Folders of JPEG frames + the CSV files; smooth random content, one class per video."""
  rng = np.random.default_rng(0)
  h, w = _FRAME_HEIGHT.value, _FRAME_WIDTH.value
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  names = ['class a', 'class b', 'class c']
  with open(os.path.join(root, 'jester-v1-labels.csv'), 'w') as f:
    f.write('\n'.join(names) + '\n')
  lines = []
  for v in range(_NUM_VIDEOS.value):
    folder = os.path.join(root, '20bn-jester-v1', f'{v}')
    os.makedirs(folder)
    base = rng.uniform(30, 200, size=3)
    for k in range(_VIDEO_FRAMES.value):
      phase = k / _VIDEO_FRAMES.value * 2 * np.pi
      frame = (
        base
        + 40 * np.sin(xx[..., None] / 17 + phase + np.arange(3))
        + 30 * np.cos(yy[..., None] / 23)
      )
      image = np.clip(frame + rng.normal(0, 8, size=frame.shape), 0, 255).astype(np.uint8)
      Image.fromarray(image).save(os.path.join(folder, f'{k + 1:05d}.jpg'), quality=90)
    lines.append(f'{v};{names[v % 3]}')
  for split in ('train', 'validation'):
    with open(os.path.join(root, f'jester-v1-{split}.csv'), 'w') as f:
      f.write('\n'.join(lines) + '\n')


def _data_config(tmp: str):
  name = _DATASET.value
  config = data.get_data_config(
    name=name,
    data_dir=_DATA_DIR.value or os.path.join(tmp, 'tfds'),
    manual_dir=os.path.join(tmp, 'raw'),
    worker_count=_WORKER_COUNT.value,
    eval_short_side=max(_IMAGE_SIZE.value, 1),
  )
  config.augment.rand_augment = _RAND_AUGMENT.value
  config.augment.random_erasing = _ERASING.value
  if name == 'glitr_synthetic':
    config.synthetic.train_examples = _NUM_VIDEOS.value
    config.synthetic.validation_examples = 1
  if not _DATA_DIR.value:
    if name == 'jester':
      os.makedirs(config.manual_dir)
      _write_jester_fixture(config.manual_dir)
    data.prepare_dataset(config, num_workers=1)
  return config


def main(argv: list[str]) -> None:
  del argv
  tfds.disable_progress_bar()
  with tempfile.TemporaryDirectory() as tmp:
    config = _data_config(tmp)
    info = data.dataset_info(config)
    iterator = data.create_train_iterator(
      config,
      batch_size=_BATCH_SIZE.value,
      num_frames=_NUM_FRAMES.value,
      image_size=_IMAGE_SIZE.value,
      seed=0,
      process_index=0,
      process_count=1,
    )
    for _ in range(_WARMUP.value):
      next(iterator)
    start = time.perf_counter()
    for _ in range(_NUM_BATCHES.value):
      batch = next(iterator)
    seconds = time.perf_counter() - start
  videos = _NUM_BATCHES.value * _BATCH_SIZE.value
  cores = min(max(_WORKER_COUNT.value, 1), os.cpu_count() or 1)
  print(
    json.dumps(
      {
        'dataset': '/'.join(filter(None, (info.name, info.config_name))),
        'stored_frames': (
          [_VIDEO_FRAMES.value, _FRAME_HEIGHT.value, _FRAME_WIDTH.value]
          if _DATASET.value == 'jester' and not _DATA_DIR.value
          else None
        ),
        'clip': list(batch['video'].shape[1:]),
        'rand_augment': _RAND_AUGMENT.value,
        'random_erasing': _ERASING.value,
        'batch_size': _BATCH_SIZE.value,
        'worker_count': _WORKER_COUNT.value,
        'cores_used': cores,
        'machine_cores': os.cpu_count(),
        'videos': videos,
        'seconds': round(seconds, 3),
        'videos_per_second': round(videos / seconds, 2),
        'videos_per_second_per_core': round(videos / seconds / cores, 2),
      }
    )
  )


if __name__ == '__main__':
  app.run(main)
