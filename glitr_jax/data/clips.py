"""Stored example -> model-ready clip: the per-example grain transforms of the input pipeline.

Training (one random draw per clip, DESIGN.md section 4): sample T frames (`sampling`), decode
only those, RandAugment on the frames as stored, to float, random-resized crop straight to
image_size (bilinear), ImageNet normalisation, random erasing (cube mode). Normalising before or
after the crop is the same map (bilinear resizing is linear and normalisation is per channel), so
the crop runs first on the smaller data. Evaluation: the official centred frames, resize of the
short side to `eval_short_side` (bicubic), centre crop, normalisation.

These objects are pickled into grain's worker processes: they hold only plain values.
"""

import dataclasses
import os

import grain.python as grain
import numpy as np

from glitr_jax import pixels
from glitr_jax.data import rand_augment as rand_augment_lib
from glitr_jax.data import sampling, transforms, video_io


@dataclasses.dataclass(frozen=True)
class ClipSpec:
  """What turns a stored video into a clip.

  Attributes:
    num_frames: T, frames per clip.
    image_size: side of the square output frames.
    eval_short_side: evaluation (and crop-free training) resizes the short side to this.
    rand_augment: the training RandAugment policy, or None.
    random_resized_crop: training crop; False = the evaluation geometry.
    scale: area fraction range of the random-resized crop.
    ratio: aspect ratio range of the random-resized crop.
    random_erasing: probability of erasing a box (cube mode).
  """

  num_frames: int
  image_size: int
  eval_short_side: int
  rand_augment: rand_augment_lib.RandAugment | None = None
  random_resized_crop: bool = True
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
  random_erasing: float = 0.0


def _decode(frames_jpeg: np.ndarray, indices: np.ndarray) -> list:
  """PIL images of the sampled frames, decoding each distinct frame once."""
  decoded = {}
  for i in set(indices.tolist()):
    decoded[i] = video_io.decode_jpeg_pil(bytes(frames_jpeg[i]))
  return [decoded[i] for i in indices.tolist()]


def train_clip(frames_jpeg: np.ndarray, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
  """A training clip from a video's JPEG frames.

  Args:
    frames_jpeg: object array (n,) of JPEG bytes.
    spec: the clip's recipe.
    rng: the clip's generator (every random choice of the clip comes from it).

  Returns:
    float32 (T, image_size, image_size, 3), ImageNet-normalised.
  """
  indices = sampling.train_frame_indices(len(frames_jpeg), spec.num_frames, rng)
  images = _decode(frames_jpeg, indices)
  if spec.rand_augment is not None:
    images = spec.rand_augment(images, rng)
  if spec.random_resized_crop:
    frames = np.stack([np.asarray(image) for image in images])
    video = transforms.random_resized_crop(frames, spec.image_size, spec.scale, spec.ratio, rng)
  else:
    video = transforms.resize_and_center_crop(images, spec.eval_short_side, spec.image_size)
  video = pixels.normalize(video, max_value=255.0)
  return transforms.random_erase_cube(video, spec.random_erasing, rng, in_place=True)


def eval_clip(frames_jpeg: np.ndarray, spec: ClipSpec) -> np.ndarray:
  """The deterministic evaluation clip: float32 (T, image_size, image_size, 3), normalised."""
  indices = sampling.eval_frame_indices(len(frames_jpeg), spec.num_frames)
  images = _decode(frames_jpeg, indices)
  frames = transforms.resize_and_center_crop(images, spec.eval_short_side, spec.image_size)
  return pixels.normalize(frames, max_value=255.0)


class OfflineLogits:
  """Precomputed offline-model logits (an .npz with `video_ids` (N,) str and `logits` (N, C'))
  looked up by video id. Loads lazily in each process (only the path is pickled)."""

  def __init__(self, path: str):
    self.path = path
    self._rows: dict[str, int] | None = None
    self._logits: np.ndarray | None = None
    self._load()  # Fail early, in the main process, on a bad file.

  def _load(self) -> None:
    if not os.path.isfile(self.path):
      raise FileNotFoundError(f'data.offline_logits={self.path}: file not found')
    with np.load(self.path, allow_pickle=False) as data:
      missing = {'video_ids', 'logits'} - set(data.files)
      if missing:
        raise ValueError(
          f'data.offline_logits={self.path}: lacks array(s) {sorted(missing)} '
          f'(has {sorted(data.files)})'
        )
      ids, logits = data['video_ids'], data['logits']
    if logits.ndim != 2 or len(ids) != len(logits):
      raise ValueError(
        f'data.offline_logits={self.path}: expected video_ids (N,) and logits (N, C), got '
        f'{ids.shape} and {logits.shape}'
      )
    self._rows = {(i.decode() if isinstance(i, bytes) else str(i)): r for r, i in enumerate(ids)}
    self._logits = logits.astype(np.float32)

  @property
  def num_outputs(self) -> int:
    if self._logits is None:
      self._load()
    return self._logits.shape[1]

  def __getstate__(self):
    return {'path': self.path}

  def __setstate__(self, state):
    self.path = state['path']
    self._rows = None
    self._logits = None

  def __call__(self, video_id: str) -> np.ndarray:
    """float32 (C',) logits of `video_id`; ValueError naming the file when it is not there."""
    if self._rows is None:
      self._load()
    row = self._rows.get(video_id)
    if row is None:
      raise ValueError(f'video id {video_id!r} is not in data.offline_logits={self.path}')
    return self._logits[row]


def _video_id(example: dict) -> str:
  video_id = example['video_id']
  return video_id.decode() if isinstance(video_id, bytes) else str(video_id)


class LongEnough(grain.FilterTransform):
  """Keeps training videos with at least `sampling.MIN_TRAIN_FRAMES` frames (the official list)."""

  def filter(self, element: dict) -> bool:
    return int(element['num_frames']) >= sampling.MIN_TRAIN_FRAMES


class TrainClip(grain.RandomMapTransform):
  """Stored example -> {'video', 'label'[, 'offline_logits']} with the training augmentation."""

  def __init__(self, spec: ClipSpec, offline: OfflineLogits | None = None):
    self.spec = spec
    self.offline = offline

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    out = {
      'video': train_clip(element['video'], self.spec, rng),
      'label': np.int32(element['label']),
    }
    if self.offline is not None:
      out['offline_logits'] = self.offline(_video_id(element))
    return out


class EvalClip(grain.MapTransform):
  """Global example index (-1 = padding) -> {'video', 'label', 'mask', 'index', 'video_id'}."""

  def __init__(self, source, spec: ClipSpec):
    self.source = source
    self.spec = spec

  def map(self, index: int) -> dict:
    index = int(index)
    if index < 0:
      size = self.spec.image_size
      return {
        'video': np.zeros((self.spec.num_frames, size, size, 3), np.float32),
        'label': np.int32(0),
        'mask': np.bool_(False),
        'index': np.int64(-1),
        'video_id': np.str_(''),
      }
    element = self.source[index]
    return {
      'video': eval_clip(element['video'], self.spec),
      'label': np.int32(element['label']),
      'mask': np.bool_(True),
      'index': np.int64(index),
      'video_id': np.str_(_video_id(element)),
    }
