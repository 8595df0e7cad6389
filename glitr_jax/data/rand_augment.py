"""RandAugment for videos with timm's semantics, as the official GliTr (VideoMAE) code runs it.

`rand-m7-n4-mstd0.5-inc1`: pick n=4 operations (with replacement) from the 15 'increasing'
transforms; each applies with probability 0.5 at a magnitude drawn from N(7, 0.5) clipped to
[0, 10]. A clip draws all of this once and applies the same operations with the same arguments to
every frame (PIL ops on the frames as stored; bicubic resampling, fill (128, 128, 128)).

Two details follow the official code rather than its comments: translations are the relative ones
(`TranslateXRel`: up to 0.45 of the image width at magnitude 10; the `translate_const` it passes
is unused by these ops), and the fill is timm's default (128, 128, 128) since `img_mean` is not
passed. The official parser treats any `inc` value as on (`bool('0')`); here `inc0` means off.

`device_params` turns a clip's draw into the arrays with which glitr_jax/data/device_augment.py
applies the same ops on the accelerator (`data.augment.device=True`).
"""

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0
FILL = (128, 128, 128)
TRANSLATE_PCT = 0.45

# Op name -> (function(image, *args, fill, resample), level function(level, rng) -> args).
_Op = tuple[Callable[..., Image.Image], Callable[[float, np.random.Generator], tuple] | None]


# The geometric ops' output -> source matrices (PIL's AFFINE data) for a width x height image.
def _shear_x_matrix(factor, width, height):
  return (1.0, factor, 0.0, 0.0, 1.0, 0.0)


def _shear_y_matrix(factor, width, height):
  return (1.0, 0.0, 0.0, factor, 1.0, 0.0)


def _translate_x_rel_matrix(pct, width, height):
  return (1.0, 0.0, pct * width, 0.0, 1.0, 0.0)


def _translate_y_rel_matrix(pct, width, height):
  return (1.0, 0.0, 0.0, 0.0, 1.0, pct * height)


def _rotate_matrix(degrees, width, height):
  """The matrix `Image.rotate(degrees)` (no expand, centre (w / 2, h / 2)) transforms with; its
  fast paths (0, 90, 180, 270 degrees) are this matrix's exact sampling too."""
  angle = -math.radians(degrees % 360.0)
  cos, sin = round(math.cos(angle), 15), round(math.sin(angle), 15)
  cx, cy = width / 2, height / 2
  return (cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)


def _affine_op(matrix_fn) -> Callable[..., Image.Image]:
  def transform(image, value, fill, resample):
    matrix = matrix_fn(value, *image.size)
    return image.transform(image.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)

  return transform


def _rotate(image, degrees, fill, resample):
  return image.rotate(degrees, resample=resample, fillcolor=fill)


def _auto_contrast(image, fill, resample):
  return ImageOps.autocontrast(image)


def _invert(image, fill, resample):
  return ImageOps.invert(image)


def _equalize(image, fill, resample):
  return ImageOps.equalize(image)


def _solarize(image, threshold, fill, resample):
  return ImageOps.solarize(image, threshold)


def _solarize_add(image, add, fill, resample, threshold=128):
  lut = [min(255, i + add) if i < threshold else i for i in range(256)]
  return image.point(lut * len(image.getbands()))


def _posterize(image, bits, fill, resample):
  return image if bits >= 8 else ImageOps.posterize(image, bits)


def _enhancer(kind) -> Callable[..., Image.Image]:
  def enhance(image, factor, fill, resample):
    return kind(image).enhance(factor)

  return enhance


def _negate(value: float, rng: np.random.Generator) -> float:
  """timm's `_randomly_negate`: the sign flips with probability 1/2."""
  return -value if rng.random() > 0.5 else value


def _rotate_level(level, rng):
  return (_negate(level / MAX_LEVEL * 30.0, rng),)


def _enhance_level(level, rng):
  return (level / MAX_LEVEL * 1.8 + 0.1,)


def _enhance_increasing_level(level, rng):
  return (1.0 + _negate(level / MAX_LEVEL * 0.9, rng),)


def _shear_level(level, rng):
  return (_negate(level / MAX_LEVEL * 0.3, rng),)


def _translate_rel_level(level, rng):
  return (_negate(level / MAX_LEVEL * TRANSLATE_PCT, rng),)


def _posterize_level(level, rng):
  return (int(level / MAX_LEVEL * 4),)


def _posterize_increasing_level(level, rng):
  return (4 - int(level / MAX_LEVEL * 4),)


def _solarize_level(level, rng):
  return (int(level / MAX_LEVEL * 256),)


def _solarize_increasing_level(level, rng):
  return (256 - int(level / MAX_LEVEL * 256),)


def _solarize_add_level(level, rng):
  return (int(level / MAX_LEVEL * 110),)


OPS: dict[str, _Op] = {
  'AutoContrast': (_auto_contrast, None),
  'Equalize': (_equalize, None),
  'Invert': (_invert, None),
  'Rotate': (_rotate, _rotate_level),
  'Posterize': (_posterize, _posterize_level),
  'PosterizeIncreasing': (_posterize, _posterize_increasing_level),
  'Solarize': (_solarize, _solarize_level),
  'SolarizeIncreasing': (_solarize, _solarize_increasing_level),
  'SolarizeAdd': (_solarize_add, _solarize_add_level),
  'Color': (_enhancer(ImageEnhance.Color), _enhance_level),
  'ColorIncreasing': (_enhancer(ImageEnhance.Color), _enhance_increasing_level),
  'Contrast': (_enhancer(ImageEnhance.Contrast), _enhance_level),
  'ContrastIncreasing': (_enhancer(ImageEnhance.Contrast), _enhance_increasing_level),
  'Brightness': (_enhancer(ImageEnhance.Brightness), _enhance_level),
  'BrightnessIncreasing': (_enhancer(ImageEnhance.Brightness), _enhance_increasing_level),
  'Sharpness': (_enhancer(ImageEnhance.Sharpness), _enhance_level),
  'SharpnessIncreasing': (_enhancer(ImageEnhance.Sharpness), _enhance_increasing_level),
  'ShearX': (_affine_op(_shear_x_matrix), _shear_level),
  'ShearY': (_affine_op(_shear_y_matrix), _shear_level),
  'TranslateXRel': (_affine_op(_translate_x_rel_matrix), _translate_rel_level),
  'TranslateYRel': (_affine_op(_translate_y_rel_matrix), _translate_rel_level),
}

RAND_TRANSFORMS = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'Posterize',
  'Solarize',
  'SolarizeAdd',
  'Color',
  'Contrast',
  'Brightness',
  'Sharpness',
  'ShearX',
  'ShearY',
  'TranslateXRel',
  'TranslateYRel',
)
RAND_INCREASING_TRANSFORMS = (
  'AutoContrast',
  'Equalize',
  'Invert',
  'Rotate',
  'PosterizeIncreasing',
  'SolarizeIncreasing',
  'SolarizeAdd',
  'ColorIncreasing',
  'ContrastIncreasing',
  'BrightnessIncreasing',
  'SharpnessIncreasing',
  'ShearX',
  'ShearY',
  'TranslateXRel',
  'TranslateYRel',
)
# timm's `_RAND_CHOICE_WEIGHTS_0` ('w0'), keyed by the non-increasing names.
_CHOICE_WEIGHTS = {
  'Rotate': 0.3,
  'ShearX': 0.2,
  'ShearY': 0.2,
  'TranslateXRel': 0.1,
  'TranslateYRel': 0.1,
  'Color': 0.025,
  'Sharpness': 0.025,
  'AutoContrast': 0.025,
  'Solarize': 0.005,
  'SolarizeAdd': 0.005,
  'Contrast': 0.005,
  'Brightness': 0.005,
  'Equalize': 0.005,
  'Posterize': 0.0,
  'Invert': 0.0,
}


@dataclasses.dataclass(frozen=True)
class RandAugment:
  """A parsed RandAugment policy; call it on a clip's frames with the clip's generator.

  Attributes:
    ops: the op names to choose from.
    magnitude: mean magnitude in [0, 10].
    num_layers: ops applied per clip.
    magnitude_std: std of the per-op magnitude noise (0 = fixed magnitude).
    weights: choice probabilities (None = uniform, with replacement; else without).
    resample: PIL resampling of the geometric ops.
  """

  ops: tuple[str, ...]
  magnitude: float = MAX_LEVEL
  num_layers: int = 2
  magnitude_std: float = 0.0
  weights: tuple[float, ...] | None = None
  resample: int = Image.BICUBIC

  @classmethod
  def parse(cls, config: str) -> 'RandAugment':
    """Parses timm's string, e.g. 'rand-m7-n4-mstd0.5-inc1' (keys m, n, mstd, inc, w).

    Raises:
      ValueError: naming the part of `config` that is not understood.
    """
    parts = config.split('-')
    if parts[0] != 'rand':
      raise ValueError(f'RandAugment policy {config!r} must start with "rand-"')
    magnitude, num_layers, std, increasing, weight_idx = MAX_LEVEL, 2, 0.0, False, None
    for part in parts[1:]:
      match = re.fullmatch(r'([a-z]+)(\d.*)', part)
      if not match:
        raise ValueError(f'RandAugment policy {config!r}: cannot parse {part!r}')
      key, value = match.groups()
      try:
        if key == 'm':
          magnitude = float(int(value))
        elif key == 'n':
          num_layers = int(value)
        elif key == 'mstd':
          std = float(value)
        elif key == 'inc':
          increasing = int(value) != 0
        elif key == 'w':
          weight_idx = int(value)
        else:
          raise ValueError(f'unknown key {key!r} (known: m, n, mstd, inc, w)')
      except ValueError as e:
        raise ValueError(f'RandAugment policy {config!r}: {part!r}: {e}') from e
    ops = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
    weights = None
    if weight_idx is not None:
      if weight_idx != 0:
        raise ValueError(f'RandAugment policy {config!r}: only weights w0 exist')
      raw = np.array([_CHOICE_WEIGHTS[name] for name in RAND_TRANSFORMS])
      weights = tuple(float(w) for w in raw / raw.sum())
    return cls(ops, magnitude, num_layers, std, weights)

  def draw(self, rng: np.random.Generator) -> list[tuple[str, tuple]]:
    """One clip's draw: the ops that apply, each with its arguments."""
    chosen = rng.choice(
      len(self.ops), self.num_layers, replace=self.weights is None, p=self.weights
    )
    applied = []
    for i in chosen:
      name = self.ops[i]
      if rng.random() > 0.5:  # Each op applies with probability 0.5.
        continue
      magnitude = self.magnitude
      if self.magnitude_std > 0:
        magnitude = rng.normal(magnitude, self.magnitude_std)
      magnitude = min(MAX_LEVEL, max(0.0, magnitude))
      level_fn = OPS[name][1]
      applied.append((name, level_fn(magnitude, rng) if level_fn else ()))
    return applied

  def __call__(self, frames: Sequence[Image.Image], rng: np.random.Generator) -> list[Image.Image]:
    """Applies one draw to every frame of a clip.

    Args:
      frames: the clip's RGB PIL images (all the same size).
      rng: the clip's generator.

    Returns:
      The augmented frames.
    """
    return apply_ops(frames, self.draw(rng), self.resample)


def apply_ops(
  frames: Sequence[Image.Image], ops: Sequence[tuple[str, tuple]], resample: int = Image.BICUBIC
) -> list[Image.Image]:
  """Applies the (name, args) ops in order to every frame."""
  out = list(frames)
  for name, args in ops:
    fn = OPS[name][0]
    out = [fn(image, *args, fill=FILL, resample=resample) for image in out]
  return out


# --- The device path (glitr_jax/data/device_augment.py): each op as one PIL primitive. ---
KIND_NONE = 0  # the layer's op did not apply
KIND_AFFINE = 1  # Image.transform(AFFINE, BICUBIC, fill)
KIND_LUT = 2  # a fixed table of the 256 levels, the same for every channel
KIND_AUTOCONTRAST = 3
KIND_EQUALIZE = 4
KIND_COLOR = 5  # the blends of ImageEnhance
KIND_CONTRAST = 6
KIND_BRIGHTNESS = 7
KIND_SHARPNESS = 8

_AFFINE_MATRICES = {
  'Rotate': _rotate_matrix,
  'ShearX': _shear_x_matrix,
  'ShearY': _shear_y_matrix,
  'TranslateXRel': _translate_x_rel_matrix,
  'TranslateYRel': _translate_y_rel_matrix,
}
_TABLE_OPS = (
  'Invert',
  'Posterize',
  'PosterizeIncreasing',
  'Solarize',
  'SolarizeIncreasing',
  'SolarizeAdd',
)
_OTHER_KINDS = {
  'AutoContrast': KIND_AUTOCONTRAST,
  'Equalize': KIND_EQUALIZE,
  'Color': KIND_COLOR,
  'ColorIncreasing': KIND_COLOR,
  'Contrast': KIND_CONTRAST,
  'ContrastIncreasing': KIND_CONTRAST,
  'Brightness': KIND_BRIGHTNESS,
  'BrightnessIncreasing': KIND_BRIGHTNESS,
  'Sharpness': KIND_SHARPNESS,
  'SharpnessIncreasing': KIND_SHARPNESS,
}
# The 256 levels as a 1 x 256 RGB image: a table op applied to it is its table.
_LEVELS = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))
IDENTITY_MATRIX = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def device_params(
  ops: Sequence[tuple[str, tuple]], width: int, height: int, num_layers: int
) -> dict[str, np.ndarray]:
  """A clip's draw (`RandAugment.draw`) as the arrays `device_augment.rand_augment_layer` takes.

  The applied ops fill the first layers in order; the rest are `KIND_NONE`. Geometric ops get
  PIL's matrix for a width x height frame (the frame as the device sees it), table ops their
  table (the PIL op applied to the 256 levels), blends their factor.

  Args:
    ops: (name, args) pairs in application order.
    width, height: the frame size the ops act on.
    num_layers: L, the policy's number of layers (>= len(ops)).

  Returns:
    `ra_kind` int32 (L,), `ra_affine` float32 (L, 6), `ra_factor` float32 (L,), `ra_lut` uint8
    (L, 256).
  """
  if len(ops) > num_layers:
    raise ValueError(f'{len(ops)} ops drawn for {num_layers} layers')
  kind = np.full(num_layers, KIND_NONE, np.int32)
  affine = np.tile(np.asarray(IDENTITY_MATRIX, np.float32), (num_layers, 1))
  factor = np.ones(num_layers, np.float32)
  lut = np.tile(np.arange(256, dtype=np.uint8), (num_layers, 1))
  for layer, (name, args) in enumerate(ops):
    if name in _AFFINE_MATRICES:
      kind[layer] = KIND_AFFINE
      affine[layer] = _AFFINE_MATRICES[name](*args, width, height)
    elif name in _TABLE_OPS:
      kind[layer] = KIND_LUT
      levels = OPS[name][0](_LEVELS, *args, fill=FILL, resample=Image.BICUBIC)
      lut[layer] = np.asarray(levels)[0, :, 0]
    elif name in _OTHER_KINDS:
      kind[layer] = _OTHER_KINDS[name]
      if args:
        factor[layer] = args[0]
    else:
      raise ValueError(f'RandAugment op {name!r} has no device form')
  return {'ra_kind': kind, 'ra_affine': affine, 'ra_factor': factor, 'ra_lut': lut}
