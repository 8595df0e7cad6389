"""Tiny raw releases in the real formats, written by the data tests into temporary folders.

SSv2: VP9 webm videos (encoded with PyAV) + the JSON label files; Jester: folders of JPEG frames +
the CSV files; the TSM frame-folder layout: category.txt + list files + JPEG frames.
"""

import json
import os
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image

from glitr_jax.data import config as config_lib


def smooth_frames(seed: int, num_frames: int, height: int, width: int) -> np.ndarray:
  """uint8 (n, H, W, 3) frames that codecs keep well: gradients plus a moving soft blob.

  Every video (seed) and frame differ in their mean colour, so frames can be told apart.
  """
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  base = rng.uniform(40, 200, size=3)
  frames = []
  for k in range(num_frames):
    cx, cy = (k + 1) * width / (num_frames + 1), height / 2
    blob = 60 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (height / 5) ** 2))
    frame = np.stack(
      [
        base[0] + 30 * xx / width + blob,
        base[1] + 30 * yy / height - blob / 2,
        np.full_like(xx, (base[2] + 12 * k) % 256),
      ],
      axis=-1,
    )
    frames.append(np.clip(frame, 0, 255).astype(np.uint8))
  return np.stack(frames)


def encode_webm(path: str, frames: np.ndarray, fps: int = 12) -> None:
  """Writes frames (n, H, W, 3) as a VP9 webm (H and W even)."""
  with av.open(path, 'w', format='webm') as container:
    stream = container.add_stream('libvpx-vp9', rate=fps)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    stream.options = {'crf': '4', 'deadline': 'realtime', 'cpu-used': '8'}
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def write_jpeg_frames(folder: str, frames: np.ndarray, template: str) -> list[str]:
  """Writes frames 1..n as JPEG files named by `template`; returns their paths."""
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i, frame in enumerate(frames, start=1):
    path = os.path.join(folder, template.format(i))
    Image.fromarray(frame).save(path, quality=95)
    paths.append(path)
  return paths


def decode_file(path: str) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert('RGB'))


# SSv2: labels.json lists the classes in an order that differs from their indices.
SSV2_LABELS = {
  'Pushing something from left to right': '1',
  'Holding something': '0',
  'Dropping something': '2',
}
SSV2_CLASSES = ('Holding something', 'Pushing something from left to right', 'Dropping something')
SSV2_TEMPLATES = (
  'Holding [something]',
  'Pushing [something] from left to right',
  'Dropping [something]',
)


def write_ssv2_release(
  root: str, splits: dict[str, Sequence[tuple[str, int, np.ndarray]]]
) -> dict[str, np.ndarray]:
  """Writes an SSv2-format release: webm videos + labels/split JSON files.

  Args:
    root: the manual dir.
    splits: split -> [(video id, class index, frames)].

  Returns:
    video id -> the frames that were encoded.
  """
  os.makedirs(os.path.join(root, '20bn-something-something-v2'), exist_ok=True)
  with open(os.path.join(root, 'something-something-v2-labels.json'), 'w') as f:
    json.dump(SSV2_LABELS, f)
  originals = {}
  for split, videos in splits.items():
    items = []
    for video_id, label, frames in videos:
      encode_webm(os.path.join(root, '20bn-something-something-v2', f'{video_id}.webm'), frames)
      template = SSV2_TEMPLATES[label]
      items.append(
        {
          'id': video_id,
          'label': template.replace('[', '').lower(),
          'template': template,
          'placeholders': ['x'],
        }
      )
      originals[video_id] = frames
    with open(os.path.join(root, f'something-something-v2-{split}.json'), 'w') as f:
      json.dump(items, f)
  return originals


# Jester: the labels file is not sorted; the dataset's class order is.
JESTER_LABELS_FILE_ORDER = ('Swiping Left', 'Doing other things', 'Zooming In')
JESTER_CLASSES = ('Doing other things', 'Swiping Left', 'Zooming In')


def write_jester_release(
  root: str, splits: dict[str, Sequence[tuple[str, str, np.ndarray]]]
) -> dict[str, list[str]]:
  """Writes a Jester-format release: 20bn-jester-v1/<id>/00001.jpg ... + the CSV files.

  Args:
    root: the manual dir.
    splits: split -> [(video id, class name, frames)].

  Returns:
    video id -> the frame file paths.
  """
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'jester-v1-labels.csv'), 'w') as f:
    f.write('\n'.join(JESTER_LABELS_FILE_ORDER) + '\n')
  paths = {}
  for split, videos in splits.items():
    lines = []
    for video_id, name, frames in videos:
      folder = os.path.join(root, '20bn-jester-v1', video_id)
      paths[video_id] = write_jpeg_frames(folder, frames, '{:05d}.jpg')
      lines.append(f'{video_id};{name}')
    with open(os.path.join(root, f'jester-v1-{split}.csv'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  return paths


def write_tsm_layout(
  root: str,
  categories: Sequence[str],
  splits: dict[str, Sequence[tuple[str, int, np.ndarray]]],
  frames_dir: str = '20bn-jester-v1',
  template: str = '{:05d}.jpg',
  list_frames: dict[str, int] | None = None,
) -> dict[str, list[str]]:
  """Writes the TSM frame-folder layout: category.txt, {train,val}_videofolder.txt, frames.

  Args:
    root: the manual dir.
    categories: class names in index order.
    splits: 'train' / 'validation' -> [(folder, label index, frames)].
    frames_dir: the folder of frame folders.
    template: frame file names.
    list_frames: folder -> the frame count to write in the list (default: the frames written).

  Returns:
    folder -> the frame file paths.
  """
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, 'category.txt'), 'w') as f:
    f.write('\n'.join(categories) + '\n')
  list_frames = list_frames or {}
  paths = {}
  for split, videos in splits.items():
    lines = []
    for folder, label, frames in videos:
      paths[folder] = write_jpeg_frames(os.path.join(root, frames_dir, folder), frames, template)
      lines.append(f'{folder} {list_frames.get(folder, len(frames))} {label}')
    name = 'train_videofolder.txt' if split == 'train' else 'val_videofolder.txt'
    with open(os.path.join(root, name), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  return paths


def data_config(name: str, data_dir: str, manual_dir: str = '', **overrides):
  """A data config for tests: in-process loading (worker_count=0)."""
  return config_lib.get_data_config(
    name=name, data_dir=str(data_dir), manual_dir=str(manual_dir), worker_count=0, **overrides
  )
