"""Stored example -> model-ready clip: the per-example grain transforms of the input pipeline.

Training (one random draw per clip, docs/design.md section 4.3): sample T frames (`sampling`),
decode only those, RandAugment on the frames as stored, to float, random-resized crop straight to
image_size (bilinear), ImageNet normalisation, random erasing (cube mode). Normalising before or
after the crop is the same map (bilinear resizing is linear and normalisation is per channel), so
the crop runs first on the smaller data. Evaluation: the official centred frames, resize of the
short side to `eval_short_side` (bicubic), centre crop, normalisation.

With `data.augment.device=True` (`ClipSpec.device`) a training clip leaves the host as its frames
in a fixed uint8 canvas plus the parameters of every random choice, drawn with the clip's
generator in the same order and by the same functions as the PIL path (so both paths draw the
same values from the same generator; only the erasing noise is drawn on the device): the train
step applies them (glitr_jax/data/device_augment.py). See `device_train_clip`.

These objects are pickled into grain's worker processes: they hold only plain values.
"""

import dataclasses
import os

import grain.python as grain
import numpy as np
from PIL import Image

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
    device: training clips for the device path (`device_train_clip`) instead of finished clips.
    canvas: (height, width) of the device path's frame canvas.
  """

  num_frames: int
  image_size: int
  eval_short_side: int
  rand_augment: rand_augment_lib.RandAugment | None = None
  random_resized_crop: bool = True
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
  random_erasing: float = 0.0
  device: bool = False
  canvas: tuple[int, int] = (256, 456)


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


def decode_scale(
  frame_hw: tuple[int, int], crop_hw: tuple[int, int], image_size: int, canvas: tuple[int, int]
) -> int:
  """The JPEG decoding scale (1, 2, 4 or 8) of a device-path clip: the largest that the frame
  must be reduced by to fit the canvas, or that the crop allows (its sides at least `scale`
  times the output side, so the crop still shrinks or keeps its size), whichever is larger."""
  fit = max(frame_hw[0] / canvas[0], frame_hw[1] / canvas[1], 1.0)
  allowed = max(min(crop_hw) / image_size, 1.0)
  return next(s for s in (8, 4, 2, 1) if s <= max(fit, allowed))


def _decode_for_canvas(data: bytes, scale: int, canvas: tuple[int, int]) -> np.ndarray:
  frame_hwc = video_io.decode_jpeg_scaled(data, scale)
  h, w = frame_hwc.shape[:2]
  if h > canvas[0] or w > canvas[1]:  # Still too large: resize to fit, keeping the aspect.
    f = min(canvas[0] / h, canvas[1] / w)
    size = (min(canvas[1], max(1, round(w * f))), min(canvas[0], max(1, round(h * f))))
    frame_hwc = np.asarray(Image.fromarray(frame_hwc).resize(size, Image.BICUBIC))
  return frame_hwc


def device_train_clip(
  frames_jpeg: np.ndarray, spec: ClipSpec, rng: np.random.Generator
) -> dict[str, np.ndarray]:
  """A training clip for the device path: the sampled frames in a canvas and the clip's draws.

  The draws come from `rng` in the PIL path's order (frame indices, RandAugment, crop box,
  erasing box) and from the same functions, on the frames as stored (the JPEG header's size).
  The frames are then decoded at the `decode_scale` the crop allows (1 for SSv2 and Jester at 224
  px: their 256 and 100 px tall frames are never cropped to twice the output) into the top-left
  corner of a (T, Hc, Wc, 3) canvas; the crop box is mapped into the decoded frame and the
  geometric ops get the decoded frame's size (their arguments are relative to it).

  Args:
    frames_jpeg: object array (n,) of JPEG bytes, all frames of one size.
    spec: the clip's recipe, with `device` set.
    rng: the clip's generator.

  Returns:
    `frames` uint8 (T, Hc, Wc, 3), `extent` int32 (2,) the decoded (h, w), `crop_box` float32
    (4,) (top, left, height, width) in canvas pixels, `erase_box` int32 (5,) (apply, top, left,
    height, width) in output pixels, and `device_augment`'s `ra_*` arrays (L = the policy's
    num_layers, 0 without RandAugment).
  """
  indices = sampling.train_frame_indices(len(frames_jpeg), spec.num_frames, rng)
  width, height = video_io.jpeg_size(bytes(frames_jpeg[indices[0]]))
  ops = spec.rand_augment.draw(rng) if spec.rand_augment is not None else []
  top, left, h, w = transforms.random_resized_crop_params(
    height, width, spec.scale, spec.ratio, rng
  )
  size = spec.image_size
  erase = transforms.random_erase_params(size, size, spec.random_erasing, rng)

  scale = decode_scale((height, width), (h, w), size, spec.canvas)
  decoded = {
    i: _decode_for_canvas(bytes(frames_jpeg[i]), scale, spec.canvas) for i in set(indices.tolist())
  }
  dec_h, dec_w = next(iter(decoded.values())).shape[:2]
  canvas = np.empty((spec.num_frames, *spec.canvas, 3), np.uint8)
  canvas[:, dec_h:] = 0  # the padding is zeros (batches are deterministic)
  canvas[:, :dec_h, dec_w:] = 0
  for t, i in enumerate(indices.tolist()):
    canvas[t, :dec_h, :dec_w] = decoded[i]
  if (dec_h, dec_w) == (-(-height // scale), -(-width // scale)):
    ry = rx = 1.0 / scale  # DCT scaling: decoded pixel i covers stored pixels [s i, s (i + 1))
  else:  # Resized to fit the canvas.
    ry, rx = dec_h / height, dec_w / width
  num_layers = spec.rand_augment.num_layers if spec.rand_augment is not None else 0
  return {
    'frames': canvas,
    'extent': np.array([dec_h, dec_w], np.int32),
    'crop_box': np.array([top * ry, left * rx, h * ry, w * rx], np.float32),
    'erase_box': np.array((1, *erase) if erase else (0, 0, 0, 0, 0), np.int32),
    **rand_augment_lib.device_params(ops, dec_w, dec_h, num_layers),
  }


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
  """Stored example -> {'video', 'label'[, 'offline_logits']} with the training augmentation, or
  with `spec.device` {device_train_clip's entries, 'label'[, 'offline_logits']}."""

  def __init__(self, spec: ClipSpec, offline: OfflineLogits | None = None):
    self.spec = spec
    self.offline = offline

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    if self.spec.device:
      out = device_train_clip(element['video'], self.spec, rng)
    else:
      out = {'video': train_clip(element['video'], self.spec, rng)}
    out['label'] = np.int32(element['label'])
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
