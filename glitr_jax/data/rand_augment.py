"""RandAugment for videos with timm's semantics, as the official GliTr (VideoMAE) code runs it.

`rand-m7-n4-mstd0.5-inc1`: pick n=4 operations (with replacement) from the 15 'increasing'
transforms; each applies with probability 0.5 at a magnitude drawn from N(7, 0.5) clipped to
[0, 10]. A clip draws all of this once and applies the same operations with the same arguments to
every frame (PIL ops on the frames as stored; bicubic resampling, fill (128, 128, 128)).

Two details follow the official code rather than its comments: translations are the relative ones
(`TranslateXRel`: up to 0.45 of the image width at magnitude 10; the `translate_const` it passes
is unused by these ops), and the fill is timm's default (128, 128, 128) since `img_mean` is not
passed. The official parser treats any `inc` value as on (`bool('0')`); here `inc0` means off.
"""

import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0
FILL = (128, 128, 128)
TRANSLATE_PCT = 0.45

# Op name -> (function(image, *args, fill, resample), level function(level, rng) -> args).
_Op = tuple[Callable[..., Image.Image], Callable[[float, np.random.Generator], tuple] | None]


def _affine(image: Image.Image, matrix, fill, resample) -> Image.Image:
  return image.transform(image.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _shear_x(image, factor, fill, resample):
  return _affine(image, (1, factor, 0, 0, 1, 0), fill, resample)


def _shear_y(image, factor, fill, resample):
  return _affine(image, (1, 0, 0, factor, 1, 0), fill, resample)


def _translate_x_rel(image, pct, fill, resample):
  return _affine(image, (1, 0, pct * image.size[0], 0, 1, 0), fill, resample)


def _translate_y_rel(image, pct, fill, resample):
  return _affine(image, (1, 0, 0, 0, 1, pct * image.size[1]), fill, resample)


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
  'ShearX': (_shear_x, _shear_level),
  'ShearY': (_shear_y, _shear_level),
  'TranslateXRel': (_translate_x_rel, _translate_rel_level),
  'TranslateYRel': (_translate_y_rel, _translate_rel_level),
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
