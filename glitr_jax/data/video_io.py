"""Reading raw videos (webm with PyAV, folders of JPEG frames) and JPEG coding of frames.

Used while preparing datasets (in worker processes, so this module imports no TensorFlow) and by
the input pipeline, which decodes only the frames it samples.
"""

import io
import os
import re
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image

from glitr_jax.data import errors

# A webm whose decoded frame count falls short of its header's duration by more than this
# (and by more than 2 frames) is reported as truncated rather than silently kept shorter.
TRUNCATION_TOLERANCE = 0.05


class BadVideoError(errors.FileProblemError):
  """A video that cannot be read: names the file and the problem."""


def encode_jpeg(frame_hwc: np.ndarray, quality: int = 90, subsampling: int = -1) -> bytes:
  """Encodes one uint8 RGB frame (H, W, 3) as JPEG.

  Args:
    frame_hwc: uint8 array (H, W, 3).
    quality: JPEG quality (1-95).
    subsampling: PIL's chroma subsampling (-1 = PIL's default 4:2:0, 0 = 4:4:4).

  Returns:
    The JPEG bytes.
  """
  buffer = io.BytesIO()
  Image.fromarray(frame_hwc).save(buffer, format='JPEG', quality=quality, subsampling=subsampling)
  return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
  """Decodes JPEG bytes into a uint8 RGB array (H, W, 3)."""
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert('RGB'))


def jpeg_size(data: bytes) -> tuple[int, int]:
  """(width, height) of JPEG bytes, from the header (nothing is decoded)."""
  with Image.open(io.BytesIO(data)) as image:
    return image.size


def decode_jpeg_scaled(data: bytes, scale: int = 1) -> np.ndarray:
  """Decodes JPEG bytes at 1/scale of their size in the DCT domain (libjpeg's scaled IDCT through
  PIL's `Image.draft`): fewer coefficients are inverse-transformed, so it is faster than a full
  decode, and each output pixel is the mean of its scale x scale block, to within the IDCT's
  smoothing.

  Args:
    data: JPEG bytes of a (W, H) image.
    scale: 1, 2, 4 or 8.

  Returns:
    uint8 RGB array (ceil(H / scale), ceil(W / scale), 3).
  """
  if scale not in (1, 2, 4, 8):
    raise ValueError(f'JPEG decoding scales are 1, 2, 4 and 8, not {scale}')
  with Image.open(io.BytesIO(data)) as image:
    if scale > 1:
      image.draft('RGB', (max(1, image.size[0] // scale), max(1, image.size[1] // scale)))
    if image.mode != 'RGB':
      image = image.convert('RGB')
    return np.asarray(image)


def decode_jpeg_pil(data: bytes) -> Image.Image:
  """Decodes JPEG bytes into an RGB PIL image (for PIL-based augmentation)."""
  with Image.open(io.BytesIO(data)) as image:
    return image.convert('RGB')


def resize_to_height(frame_hwc: np.ndarray, height: int) -> np.ndarray:
  """Resizes a frame to `height` rows keeping its aspect ratio (bicubic, as ffmpeg scale=-1:H).

  Args:
    frame_hwc: uint8 array (H, W, 3).
    height: the new height; 0 or the current height returns the frame unchanged.

  Returns:
    uint8 array (height, round(W * height / H), 3).
  """
  h, w = frame_hwc.shape[:2]
  if height in (0, h):
    return frame_hwc
  width = max(1, int(round(w * height / h)))
  image = Image.fromarray(frame_hwc).resize((width, height), Image.BICUBIC)
  return np.asarray(image)


def decode_webm(path: str) -> np.ndarray:
  """Decodes every frame of a video file with PyAV.

  Args:
    path: a .webm (VP9/VP8) or any container PyAV reads.

  Returns:
    uint8 array (n, H, W, 3), n >= 1.

  Raises:
    BadVideoError: the file is missing, does not decode, has no frames, or decodes to
      noticeably fewer frames than its header's duration says (a truncated file).
  """
  if not os.path.isfile(path):
    raise BadVideoError(path, 'file not found')
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise BadVideoError(path, 'no video stream')
      stream = container.streams.video[0]
      frames = [frame.to_ndarray(format='rgb24') for frame in container.decode(stream)]
      duration_s = container.duration / 1e6 if container.duration else None
      rate = float(stream.average_rate) if stream.average_rate else None
  except BadVideoError:
    raise
  except (av.error.FFmpegError, OSError, ValueError) as e:
    raise BadVideoError(path, f'cannot decode ({type(e).__name__}: {e})') from e
  if not frames:
    raise BadVideoError(path, 'no frames decoded (corrupt or truncated file)')
  if duration_s and rate:
    expected = duration_s * rate
    missing = expected - len(frames)
    if missing > max(2.0, TRUNCATION_TOLERANCE * expected):
      raise BadVideoError(
        path,
        f'truncated or corrupt: decoded {len(frames)} frames but the header says '
        f'{duration_s:.2f} s at {rate:g} fps (~{expected:.0f} frames)',
      )
  shapes = {f.shape for f in frames}
  if len(shapes) != 1:
    raise BadVideoError(path, f'frames change size within the video: {sorted(shapes)}')
  return np.stack(frames)


def frame_template_pattern(template: str) -> re.Pattern:
  """A regex matching the file names a frame template such as '{:05d}.jpg' produces."""
  match = re.fullmatch(r'(.*)\{:0?(\d*)d\}(.*)', template)
  if not match:
    raise ValueError(f'frame template {template!r} must contain one integer field like {{:05d}}')
  prefix, width, suffix = match.groups()
  digits = rf'\d{{{width},}}' if width else r'\d+'
  return re.compile(re.escape(prefix) + f'({digits})' + re.escape(suffix))


def count_frames(folder: str, template: str) -> int:
  """The number of frame files 1..n in `folder` named by `template`; checks none is missing.

  Raises:
    BadVideoError: the folder is missing or empty, or a frame between 1 and the largest index is
      missing (the error names the first missing file).
  """
  if not os.path.isdir(folder):
    raise BadVideoError(folder, 'frame folder not found')
  pattern = frame_template_pattern(template)
  indices = sorted(
    int(m.group(1)) for m in (pattern.fullmatch(name) for name in os.listdir(folder)) if m
  )
  if not indices:
    raise BadVideoError(folder, f'no frame files named like {template!r}')
  present = set(indices)
  for i in range(1, indices[-1] + 1):
    if i not in present:
      raise BadVideoError(os.path.join(folder, template.format(i)), 'missing frame file')
  return indices[-1]


def read_jpeg_frames(folder: str, template: str, num_frames: int) -> list[bytes]:
  """Reads frames 1..num_frames of a frame folder as JPEG bytes, checking each decodes.

  The bytes are kept as released (no re-encoding). Each frame is decoded (at reduced DCT
  resolution, which still reads all of its data) to catch corrupt or truncated files.

  Args:
    folder: the video's frame folder.
    template: file name of frame i (1-based), e.g. '{:05d}.jpg'.
    num_frames: how many frames to read.

  Returns:
    `num_frames` JPEG byte strings.

  Raises:
    BadVideoError: naming the missing, corrupt, non-JPEG or differently sized frame file.
  """
  if num_frames < 1:
    raise BadVideoError(folder, f'the video has {num_frames} frames')
  frames = []
  size = None
  for i in range(1, num_frames + 1):
    path = os.path.join(folder, template.format(i))
    try:
      with open(path, 'rb') as f:
        data = f.read()
    except FileNotFoundError as e:
      raise BadVideoError(path, 'missing frame file') from e
    frame_size = check_jpeg(path, data)
    if size is not None and frame_size != size:
      raise BadVideoError(path, f'frame size {frame_size} differs from the first frame {size}')
    size = frame_size
    frames.append(data)
  return frames


def check_jpeg(path: str, data: bytes) -> tuple[int, int]:
  """Checks that `data` is a complete JPEG image; returns its (width, height).

  Raises:
    BadVideoError: naming `path` when the data is not a JPEG or does not decode.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format != 'JPEG':
        raise BadVideoError(path, f'not a JPEG file ({image.format})')
      size = image.size
      image.draft('RGB', (max(1, size[0] // 8), max(1, size[1] // 8)))
      image.load()
  except BadVideoError:
    raise
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise BadVideoError(path, f'corrupt image ({e})') from e
  return size


def encode_frames(frames_nhwc: np.ndarray | Sequence[np.ndarray], quality: int = 90) -> list[bytes]:
  """Encodes every frame of a video as JPEG (see `encode_jpeg`)."""
  return [encode_jpeg(np.ascontiguousarray(f), quality=quality) for f in frames_nhwc]
