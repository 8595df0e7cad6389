"""Per-clip spatial transforms on the host (NumPy/PIL): crops, resizes, normalisation, erasing.

Each random transform draws once per clip and applies the same draw to every frame (VideoMAE's
recipe that the official GliTr code uses, docs/design.md section 4.3). Shapes: frames (T, H, W, 3).
"""

import math

import numpy as np
from PIL import Image

# Random erasing (timm's RandomErasing as VideoMAE configures it: mode 'pixel', one box).
ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_ASPECT = (0.3, 1.0 / 0.3)


def random_resized_crop_params(
  height: int,
  width: int,
  scale: tuple[float, float],
  ratio: tuple[float, float],
  rng: np.random.Generator,
) -> tuple[int, int, int, int]:
  """A crop box (top, left, h, w) as VideoMAE's `_get_param_spatial_crop` draws it.

  Ten tries of an area fraction U(scale) and a log-uniform aspect ratio (w / h) in `ratio`; if
  none fits, the largest centred crop whose aspect is within `ratio`.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = rng.uniform(*scale) * area
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices and weights of bilinear resizing with align_corners=False (no antialias).

  Matches torch.nn.functional.interpolate(mode='bilinear', align_corners=False): the source
  coordinate (dst + 0.5) * in / out - 0.5 is clamped at 0 and blends two neighbours.
  """
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
  src = np.maximum(src, 0.0)
  lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  hi = np.minimum(lo + 1, in_size - 1)
  frac = (src - lo).astype(np.float32)
  return lo, hi, frac


def resize_bilinear(frames_thwc: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """Bilinear resize (T, H, W, C) -> float32 (T, out_h, out_w, C), align_corners=False.

  The input may be uint8: rows are gathered before the conversion, which saves memory traffic.
  """
  # np.take is several times faster than fancy indexing along an inner axis.
  lo, hi, frac = _linear_taps(frames_thwc.shape[1], out_h)
  rows = np.take(frames_thwc, lo, axis=1).astype(np.float32)
  rows *= (1 - frac)[None, :, None, None]
  rows += np.take(frames_thwc, hi, axis=1) * frac[None, :, None, None]
  lo, hi, frac = _linear_taps(frames_thwc.shape[2], out_w)
  out = np.take(rows, lo, axis=2)
  out *= (1 - frac)[None, None, :, None]
  out += np.take(rows, hi, axis=2) * frac[None, None, :, None]
  return out


def random_resized_crop(
  frames_thwc: np.ndarray,
  size: int,
  scale: tuple[float, float],
  ratio: tuple[float, float],
  rng: np.random.Generator,
) -> np.ndarray:
  """One random crop box for the whole clip, resized (bilinear) straight to size x size.

  Args:
    frames_thwc: uint8 or float frames (T, H, W, 3).
    size: output side.
    scale, ratio: the area fraction and aspect ranges.
    rng: the clip's generator.

  Returns:
    float32 (T, size, size, 3), values in the input's units.
  """
  top, left, h, w = random_resized_crop_params(*frames_thwc.shape[1:3], scale, ratio, rng)
  return resize_bilinear(frames_thwc[:, top : top + h, left : left + w], size, size)


def short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
  """(new width, new height) with the short side `short_side` (torchvision's Resize(int))."""
  if width <= height:
    return short_side, int(short_side * height / width)
  return int(short_side * width / height), short_side


def resize_and_center_crop(images: list[Image.Image], short_side: int, size: int) -> np.ndarray:
  """Evaluation geometry: resize the short side to `short_side` (bicubic), centre-crop size.

  Args:
    images: a clip's RGB PIL frames.
    short_side: target of the short side (>= size).
    size: the crop side.

  Returns:
    uint8 (T, size, size, 3).
  """
  out = []
  for image in images:
    new_size = short_side_size(*image.size, short_side)
    if new_size != image.size:
      image = image.resize(new_size, Image.BICUBIC)
    w, h = image.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    out.append(np.asarray(image.crop((left, top, left + size, top + size))))
  return np.stack(out)


def random_erase_params(
  height: int, width: int, probability: float, rng: np.random.Generator
) -> tuple[int, int, int, int] | None:
  """The box (top, left, h, w) random erasing fills, or None (no erasing for this clip).

  With probability `probability`, up to 100 tries of an area fraction U(0.02, 1/3) and a
  log-uniform aspect in (0.3, 1/0.3); the first box strictly inside the frame (timm's
  RandomErasing, one box). Nothing is drawn when `probability` <= 0.
  """
  if probability <= 0 or rng.random() > probability:
    return None
  log_aspect = (math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1]))
  for _ in range(100):
    target_area = rng.uniform(*ERASE_AREA) * height * width
    aspect = math.exp(rng.uniform(*log_aspect))
    h = int(round(math.sqrt(target_area * aspect)))
    w = int(round(math.sqrt(target_area / aspect)))
    if w < width and h < height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  return None


def random_erase_cube(
  frames_thwc: np.ndarray, probability: float, rng: np.random.Generator, in_place: bool = False
) -> np.ndarray:
  """Random erasing in cube mode: one box for all frames, per-pixel N(0, 1) noise.

  The box is `random_erase_params`'s; it is filled, in every frame, with fresh standard-normal
  noise drawn after it (the frames are normalised, so that is 'random pixels').

  Args:
    frames_thwc: normalised float32 frames (T, H, W, C).
    probability: chance that a box is erased.
    rng: the clip's generator.
    in_place: erase in `frames_thwc` itself (else in a copy).

  Returns:
    The frames, with the box erased or unchanged.
  """
  t, height, width, channels = frames_thwc.shape
  box = random_erase_params(height, width, probability, rng)
  if box is None:
    return frames_thwc
  top, left, h, w = box
  out = frames_thwc if in_place else frames_thwc.copy()
  noise = rng.standard_normal((t, h, w, channels), dtype=np.float32)
  out[:, top : top + h, left : left + w] = noise
  return out
