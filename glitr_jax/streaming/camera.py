"""Cameras: the only way pixels reach a streaming agent, one glimpse per stream and step.

A `Camera` serves B synchronised streams. `read_glimpse(locations (B, 2), g)` advances every
stream to its next frame and hands over only the g x g glimpse at each location, or None when a
stream has no frame left. Every implementation counts what it hands over (`pixels_read`: g * g per
live stream and step; streams masked off with `active` get zeros and count nothing). A real
small-field-of-view sensor implements `_capture` directly; the two simulated cameras here hold a
frame internally and crop it with the official bilinear crop (`glitr_jax.glimpse.extract`), so the
agent sees exactly the pixels `glitr_jax.inference.student_forward` would crop from that frame.

Pixels are what glitr_jax's models expect: float32, RGB, ImageNet-normalised (docs/design.md
section 1), frames of the model's size before cropping.
"""

import abc
import os
from collections.abc import Sequence

import av
import jax
import numpy as np
from absl import logging
from PIL import Image

from glitr_jax import glimpse, pixels

# The evaluation geometry (docs/design.md 4.3): short side to 256, centre crop 224.
EVAL_CROP_FRACTION = 224 / 256

_extract = jax.jit(glimpse.extract, static_argnums=2)


def normalize(frames_uint8: np.ndarray) -> np.ndarray:
  """uint8 RGB (..., 3) -> float32 ImageNet-normalised: (x / 255 - mean) / std."""
  return pixels.normalize(frames_uint8, max_value=255.0)


def prepare_frame(
  image: Image.Image, frame_size: int, crop_fraction: float = EVAL_CROP_FRACTION
) -> np.ndarray:
  """A decoded frame as the model sees it: resize, centre crop, normalise.

  The short side is resized (bicubic) to round(frame_size / crop_fraction), then the centre
  frame_size x frame_size square is kept: for 224-px models that is the evaluation transform
  (short side 256, centre crop 224). crop_fraction=1 keeps the largest centred square.

  Args:
    image: an RGB PIL image of any size.
    frame_size: the model's frame side (model_config.image_size).
    crop_fraction: frame_size / resized short side, in (0, 1].

  Returns:
    (frame_size, frame_size, 3) float32, ImageNet-normalised.
  """
  if not 0.0 < crop_fraction <= 1.0:
    raise ValueError(f'crop_fraction={crop_fraction!r}: must be in (0, 1]')
  short = max(frame_size, int(round(frame_size / crop_fraction)))
  w, h = image.size
  if w <= h:
    new_w, new_h = short, max(short, int(round(h * short / w)))
  else:
    new_w, new_h = max(short, int(round(w * short / h))), short
  image = image.convert('RGB')
  if (new_w, new_h) != (w, h):
    image = image.resize((new_w, new_h), Image.BICUBIC)
  left, top = (new_w - frame_size) // 2, (new_h - frame_size) // 2
  image = image.crop((left, top, left + frame_size, top + frame_size))
  return normalize(np.asarray(image))


class Camera(abc.ABC):
  """A small-field-of-view camera for B synchronised streams.

  Attributes:
    batch_size: number of streams B.
    pixels_read: total pixels handed over (g * g per live stream and read; a pixel is one RGB
      sample).
    pixels_read_per_stream: (B,) int64, the same per stream.
    reads: number of read_glimpse calls that returned pixels.
  """

  def __init__(self, batch_size: int):
    if batch_size < 1:
      raise ValueError(f'batch_size={batch_size!r}: a camera serves at least one stream')
    self.batch_size = batch_size
    self.pixels_read = 0
    self.pixels_read_per_stream = np.zeros(batch_size, np.int64)
    self.reads = 0

  @property
  @abc.abstractmethod
  def frame_hw(self) -> tuple[int, int]:
    """(H, W) of the frames that normalised locations refer to."""

  @abc.abstractmethod
  def _capture(self, locations_b2: np.ndarray, glimpse_pixels: int) -> np.ndarray | None:
    """Advances every stream one frame and returns (B, g, g, 3) pixels there, or None at the end."""

  def read_glimpse(
    self,
    locations: np.ndarray,
    glimpse_pixels: int,
    active: np.ndarray | None = None,
  ) -> np.ndarray | None:
    """The next frame's glimpse for every stream.

    Args:
      locations: (B, 2) glimpse centres (lx, ly) in normalised frame coordinates.
      glimpse_pixels: glimpse side g.
      active: optional (B,) bool; inactive streams (e.g. done ones) still advance in time but
        get zeros and are not counted.

    Returns:
      (B, g, g, 3) float32 normalised pixels, or None when the video has ended.
    """
    locations_b2 = np.asarray(locations, np.float32)
    if locations_b2.shape != (self.batch_size, 2):
      raise ValueError(
        f'locations has shape {locations_b2.shape}; this camera serves '
        f'{self.batch_size} stream(s): expected ({self.batch_size}, 2)'
      )
    if not np.isfinite(locations_b2).all():
      raise ValueError(f'locations are not finite: {locations_b2.tolist()}')
    active_b = np.ones(self.batch_size, bool) if active is None else np.asarray(active, bool)
    if active_b.shape != (self.batch_size,):
      raise ValueError(f'active has shape {active_b.shape}; expected ({self.batch_size},)')
    pixels = self._capture(locations_b2, int(glimpse_pixels))
    if pixels is None:
      return None
    pixels = np.asarray(pixels, np.float32)
    expected = (self.batch_size, glimpse_pixels, glimpse_pixels, 3)
    if pixels.shape != expected:
      raise ValueError(
        f'{type(self).__name__}._capture returned {pixels.shape}; a camera hands over only the '
        f'glimpse, expected {expected}'
      )
    pixels = np.where(active_b[:, None, None, None], pixels, np.float32(0.0))
    counted = active_b.astype(np.int64) * glimpse_pixels * glimpse_pixels
    self.pixels_read_per_stream += counted
    self.pixels_read += int(counted.sum())
    self.reads += 1
    return pixels


class FrameCamera(Camera):
  """A simulated camera: holds each stream's current frame and crops the glimpse from it."""

  @abc.abstractmethod
  def _next_frames(self) -> np.ndarray | None:
    """(B, H, W, 3) float32 normalised frames of the next time step, or None at the end."""

  def _capture(self, locations_b2: np.ndarray, glimpse_pixels: int) -> np.ndarray | None:
    frames_bhwc = self._next_frames()
    if frames_bhwc is None:
      return None
    # The official crop, so the pixels equal those student_forward takes from the same frames.
    return np.asarray(_extract(frames_bhwc, locations_b2, glimpse_pixels))


class ArrayCamera(FrameCamera):
  """Streams from frames in memory (a numpy clip, a synthetic-benchmark video).

  uint8 frames are ImageNet-normalised; float frames are taken as already normalised. Frames must
  already be the model's size (e.g. `glitr_jax.data.synthetic.render_video(...)[0]` at the
  synthetic config's frame size).
  """

  def __init__(self, frames: np.ndarray):
    """Args: frames: (T, H, W, 3) for one stream or (B, T, H, W, 3) for B streams."""
    frames = np.asarray(frames)
    if frames.ndim == 4:
      frames = frames[None]
    if frames.ndim != 5 or frames.shape[-1] != 3:
      raise ValueError(f'frames has shape {frames.shape}; expected (T, H, W, 3) or (B, T, H, W, 3)')
    if frames.dtype == np.uint8:
      frames = normalize(frames)
    elif not np.issubdtype(frames.dtype, np.floating):
      raise ValueError(f'frames has dtype {frames.dtype}; expected uint8 or normalised floats')
    super().__init__(frames.shape[0])
    self._frames_bthwc = frames.astype(np.float32)
    self._t = 0

  @property
  def frame_hw(self) -> tuple[int, int]:
    return tuple(self._frames_bthwc.shape[2:4])

  @property
  def num_frames(self) -> int:
    return self._frames_bthwc.shape[1]

  def _next_frames(self) -> np.ndarray | None:
    if self._t >= self.num_frames:
      return None
    self._t += 1
    return self._frames_bthwc[:, self._t - 1]


class VideoFileCamera(FrameCamera):
  """Streams from video files, decoding one frame per read with PyAV (webm, mp4, ...).

  Each file is one stream; all streams advance together, and the camera ends (read_glimpse
  returns None) when the shortest video has no frame left. Each frame is resized and centre
  cropped to the model's size (`prepare_frame`) and normalised; only the glimpse leaves the camera.
  """

  def __init__(
    self,
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    frame_size: int,
    *,
    frame_stride: int = 1,
    crop_fraction: float = EVAL_CROP_FRACTION,
  ):
    """Opens the videos.

    Args:
      paths: one video file or a sequence of them (one stream each).
      frame_size: the model's frame side (model_config.image_size).
      frame_stride: use every frame_stride-th frame (the model was trained on num_frames frames
        spread over a whole clip; a 30 fps camera may need a stride).
      crop_fraction: see `prepare_frame`.
    """
    paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if frame_stride < 1:
      raise ValueError(f'frame_stride={frame_stride!r}: must be >= 1')
    super().__init__(len(paths))
    self.paths = [os.fspath(p) for p in paths]
    self.frame_size = frame_size
    self.frame_stride = frame_stride
    self.crop_fraction = crop_fraction
    self.frames_decoded = 0  # over all streams, skipped (stride) frames included
    self._containers, self._frames = [], []
    for path in self.paths:
      if not os.path.isfile(path):
        self.close()
        raise FileNotFoundError(f'video file not found: {path}')
      try:
        container = av.open(path)
      except (av.error.FFmpegError, OSError) as e:
        self.close()
        raise ValueError(f'{path}: cannot open as a video ({type(e).__name__}: {e})') from e
      self._containers.append(container)
      if not container.streams.video:
        self.close()
        raise ValueError(f'{path}: no video stream')
      self._frames.append(container.decode(container.streams.video[0]))
    logging.info('VideoFileCamera: %d stream(s) from %s', len(paths), self.paths)

  @property
  def frame_hw(self) -> tuple[int, int]:
    return (self.frame_size, self.frame_size)

  def _decode_next(self, index: int) -> Image.Image | None:
    frame = None
    for _ in range(self.frame_stride):
      try:
        frame = next(self._frames[index])
      except StopIteration:
        return None
      except av.error.FFmpegError as e:
        raise ValueError(f'{self.paths[index]}: decoding failed ({e})') from e
      self.frames_decoded += 1
    return frame.to_image()

  def _next_frames(self) -> np.ndarray | None:
    images = [self._decode_next(i) for i in range(self.batch_size)]
    if any(image is None for image in images):
      return None
    return np.stack([prepare_frame(im, self.frame_size, self.crop_fraction) for im in images])

  def close(self) -> None:
    for container in self._containers:
      container.close()
    self._containers, self._frames = [], []

  def __enter__(self) -> 'VideoFileCamera':
    return self

  def __exit__(self, *exc) -> None:
    self.close()
