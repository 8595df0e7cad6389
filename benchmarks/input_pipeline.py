r"""Input pipeline throughput on the host, for both augmentation paths, and what accelerators need.

Writes a Jester-format fixture (folders of JPEG frames, by default SSv2-sized: 45 frames of
256x340) or a glitr_synthetic set into a temporary folder, prepares it, then times the training
iterator of each path (`data.augment.device` False and True), the paths alternated `--rounds`
times so that a load from elsewhere hits both alike, and prints ONE JSON object:

  paths.pil       the reference: frame sampling, JPEG decoding of the sampled frames, RandAugment
                  (PIL), random-resized crop, normalisation, random erasing, batching, all on the
                  host.
  paths.device    the host's part of the device path: sampling, decoding into the uint8 canvas
                  and drawing the recipe's parameters (glitr_jax/data/clips.py); plus
                  `device_augment`: the jitted augmentation (glitr_jax/data/device_augment.py) of
                  one of its batches on JAX's default backend (this machine's CPU unless an
                  accelerator is present), median of `--device_batches` calls.
  Each path: `runs` (one per round: videos/s, videos/s per core = / max(worker_count, 1), and
  videos per CPU-second of this process, which a shared machine's other load does not deflate;
  null with worker processes), their medians and [min, max].
  accelerators    what one accelerator consumes: videos/s = peak x `--assumed_mfu` / the analytic
                  FLOPs of a training step per video (`model_flops` of benchmarks/flop_count.py,
                  for the SSv2 student and teacher configs), and the host cores
                  each path needs to feed it (that rate / the path's videos per CPU-second, or per
                  core without a CPU-time figure). Peaks: `ACCELERATORS` below (dense, per chip).

  python benchmarks/input_pipeline.py                          # SSv2-like, 16 x 224, in process
  python benchmarks/input_pipeline.py --paths=device --rounds=1 --device_batches=5
  python benchmarks/input_pipeline.py --worker_count=2         # grain worker processes
  python benchmarks/input_pipeline.py --dataset=glitr_synthetic --num_frames=8 --image_size=64
  python benchmarks/input_pipeline.py --data_dir=/data/tfds --dataset=jester    # a prepared set
"""

import json
import os
import resource
import statistics
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

import flop_count  # noqa: E402  (benchmarks/flop_count.py, beside this script)
import jax  # noqa: E402

from configs import ssv2_student, ssv2_teacher  # noqa: E402
from glitr_jax import data  # noqa: E402
from glitr_jax.data import device_augment  # noqa: E402

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
_NUM_BATCHES = flags.DEFINE_integer('num_batches', 12, 'Timed batches per run.')
_WARMUP = flags.DEFINE_integer('warmup_batches', 2, 'Untimed batches first (worker start-up).')
_RAND_AUGMENT = flags.DEFINE_string('rand_augment', 'rand-m7-n4-mstd0.5-inc1', "'' = off.")
_ERASING = flags.DEFINE_float('random_erasing', 0.25, 'Random erasing probability.')
_PATHS = flags.DEFINE_list('paths', ['pil', 'device'], 'Augmentation paths to time: pil, device.')
_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Timed runs per path, the paths alternated.')
_DEVICE_BATCHES = flags.DEFINE_integer(
  'device_batches', 3, 'Device path: timed calls of the jitted augmentation (0 = skip).'
)
_CANVAS = flags.DEFINE_list('canvas', ['256', '456'], 'Device path: data.augment.device_canvas.')
_MFU = flags.DEFINE_float('assumed_mfu', 0.4, 'MFU an accelerator reaches on the training step.')

# Dense peak FLOP/s per chip from the vendors' data sheets: bfloat16 matmuls, and float32 matmuls
# at JAX's default precision (TF32 tensor cores on these GPUs, bfloat16 passes on TPUs).
ACCELERATORS = {
  'A100': {'bfloat16': 312e12, 'float32': 156e12},
  'H100': {'bfloat16': 989e12, 'float32': 495e12},  # SXM; the PCIe card: 756e12 / 378e12
  'H200': {'bfloat16': 989e12, 'float32': 495e12},
  'TPU v4': {'bfloat16': 275e12, 'float32': 275e12},
  'TPU v5e': {'bfloat16': 197e12, 'float32': 197e12},
}
# jax.Device.device_kind substrings -> ACCELERATORS names (first match wins).
_DEVICE_KINDS = (
  ('H100 PCIe', None),
  ('H100', 'H100'),
  ('H200', 'H200'),
  ('A100', 'A100'),
  ('TPU v4', 'TPU v4'),
  ('TPU v5 lite', 'TPU v5e'),
  ('TPU v5e', 'TPU v5e'),
)


def accelerator_name(device_kind: str) -> str | None:
  """The `ACCELERATORS` entry of a `jax.Device.device_kind`, or None (not in the table)."""
  for pattern, name in _DEVICE_KINDS:
    if pattern in device_kind:
      return name
  return None


def step_flops_per_video() -> dict[str, int]:
  """Analytic FLOPs of one training step per video, for the SSv2 student and teacher configs."""
  return {
    stage: flop_count.model_flops(stage, 1, c.model.num_frames, c.model)['total']
    for stage, c in (('student', ssv2_student.get_config()), ('teacher', ssv2_teacher.get_config()))
  }


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
  config.augment.device_canvas = tuple(int(s) for s in _CANVAS.value)
  if name == 'glitr_synthetic':
    config.synthetic.train_examples = _NUM_VIDEOS.value
    config.synthetic.validation_examples = 1
  if not _DATA_DIR.value:
    if name == 'jester':
      os.makedirs(config.manual_dir)
      _write_jester_fixture(config.manual_dir)
    data.prepare_dataset(config, num_workers=1)
  return config


def _iterator(config):
  return data.create_train_iterator(
    config,
    batch_size=_BATCH_SIZE.value,
    num_frames=_NUM_FRAMES.value,
    image_size=_IMAGE_SIZE.value,
    seed=0,
    process_index=0,
    process_count=1,
  )


def time_host(config) -> tuple[dict, dict]:
  """One timed run of the training iterator: (rates, the last batch)."""
  iterator = _iterator(config)
  for _ in range(_WARMUP.value):
    next(iterator)
  cpu_start = resource.getrusage(resource.RUSAGE_SELF)
  start = time.perf_counter()
  for _ in range(_NUM_BATCHES.value):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  cpu_end = resource.getrusage(resource.RUSAGE_SELF)
  del iterator
  videos = _NUM_BATCHES.value * _BATCH_SIZE.value
  cores = min(max(_WORKER_COUNT.value, 1), os.cpu_count() or 1)
  cpu_seconds = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
  return {
    'seconds': round(seconds, 3),
    'videos_per_second': round(videos / seconds, 2),
    'videos_per_second_per_core': round(videos / seconds / cores, 2),
    # Worker processes' CPU time is not this process's: no figure with them.
    'videos_per_cpu_second': (
      round(videos / cpu_seconds, 2) if _WORKER_COUNT.value == 0 and cpu_seconds > 0 else None
    ),
    'load_avg_1min': os.getloadavg()[0],
  }, batch


def time_device_augment(config, batch: dict) -> dict:
  """The jitted device augmentation of one host batch on JAX's default backend."""
  arrays = {k: jax.device_put(batch[k]) for k in device_augment.PARAM_KEYS}
  augment = jax.jit(
    lambda b, key: device_augment.augment_batch(
      b, key, image_size=_IMAGE_SIZE.value, random_erasing=config.augment.random_erasing > 0
    )
  )
  start = time.perf_counter()
  augment(arrays, jax.random.key(0)).block_until_ready()
  compile_s = time.perf_counter() - start
  times = []
  for i in range(_DEVICE_BATCHES.value):
    start = time.perf_counter()
    augment(arrays, jax.random.key(i + 1)).block_until_ready()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {
    'backend': jax.default_backend(),
    'device_kind': jax.devices()[0].device_kind,
    'canvas': list(batch['frames'].shape[2:4]),
    'first_call_s': round(compile_s, 3),
    'seconds_per_batch': round(median, 4),
    'seconds_per_batch_runs': [round(t, 4) for t in times],
    'videos_per_second': round(_BATCH_SIZE.value / median, 2),
  }


def _summary(runs: list[dict]) -> dict:
  out = {'runs': runs}
  for key in ('videos_per_second_per_core', 'videos_per_cpu_second'):
    values = [r[key] for r in runs if r[key] is not None]
    out[key] = round(statistics.median(values), 2) if values else None
    out[f'{key}_range'] = [min(values), max(values)] if values else None
  return out


def consumption(flops: dict[str, int], paths: dict[str, dict]) -> dict:
  """Videos/s one accelerator consumes per stage, and the host cores each path needs for it."""
  rows = []
  for name, peaks in ACCELERATORS.items():
    row = {'accelerator': name, 'bfloat16_peak_flops_per_s': peaks['bfloat16']}
    for stage, per_video in sorted(flops.items()):
      rate = peaks['bfloat16'] * _MFU.value / per_video
      row[f'{stage}_videos_per_s'] = round(rate, 1)
      for path, summary in paths.items():
        per_core = summary['videos_per_cpu_second'] or summary['videos_per_second_per_core']
        row[f'{stage}_host_cores_{path}'] = round(rate / per_core, 1) if per_core else None
    rows.append(row)
  return {
    'assumed_mfu': _MFU.value,
    'dtype': 'bfloat16',
    'step_flops_per_video': flops,
    'flops_source': 'benchmarks/flop_count.py model_flops, configs/ssv2_student.py and '
    'ssv2_teacher.py (T = 16)',
    'rows': rows,
  }


def main(argv: list[str]) -> None:
  del argv
  tfds.disable_progress_bar()
  unknown = set(_PATHS.value) - {'pil', 'device'}
  if unknown:
    raise app.UsageError(f'--paths: unknown {sorted(unknown)} (pil, device)')
  runs = {path: [] for path in _PATHS.value}
  device = None
  with tempfile.TemporaryDirectory() as tmp:
    config = _data_config(tmp)
    info = data.dataset_info(config)
    for _ in range(_ROUNDS.value):
      for path in _PATHS.value:
        config.augment.device = path == 'device'
        rates, batch = time_host(config)
        runs[path].append(rates)
        if path == 'device' and device is None and _DEVICE_BATCHES.value > 0:
          device = time_device_augment(config, batch)
        clip = (
          list(batch['video'].shape[1:])
          if path == 'pil'
          else [_NUM_FRAMES.value, _IMAGE_SIZE.value, _IMAGE_SIZE.value, 3]
        )
  paths = {path: _summary(r) for path, r in runs.items()}
  if 'device' in paths:
    paths['device']['device_augment'] = device
  out = {
    'dataset': '/'.join(filter(None, (info.name, info.config_name))),
    'stored_frames': (
      [_VIDEO_FRAMES.value, _FRAME_HEIGHT.value, _FRAME_WIDTH.value]
      if _DATASET.value == 'jester' and not _DATA_DIR.value
      else None
    ),
    'clip': clip,
    'rand_augment': _RAND_AUGMENT.value,
    'random_erasing': _ERASING.value,
    'batch_size': _BATCH_SIZE.value,
    'batches_per_run': _NUM_BATCHES.value,
    'rounds': _ROUNDS.value,
    'worker_count': _WORKER_COUNT.value,
    'cores_used': min(max(_WORKER_COUNT.value, 1), os.cpu_count() or 1),
    'machine_cores': os.cpu_count(),
    'paths': paths,
  }
  out['accelerators'] = consumption(step_flops_per_video(), paths)
  print(json.dumps(out))


if __name__ == '__main__':
  app.run(main)
