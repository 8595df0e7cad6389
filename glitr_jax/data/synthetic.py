"""`glitr_synthetic`: a procedural benchmark where WHERE one looks matters, built from a seed.

Each video shows a small *target* among *distractors* on a textured background:

* The target is a square split into two colours (left | right): its **identity** (e.g. red|blue).
  It has a white outline, and a soft **halo** (a brightness cone, `cue`, falling to zero at
  `cue_radius` pixels) surrounds it, so every glimpse sees which way the target lies. With
  `cue_tint` > 0 the halo's hue also says where the target is (red grows with its x, blue with
  its y), so one glimpse inside the halo tells a policy where to look next.
* The target **moves**: right, left, down, up, clockwise or counterclockwise (the first
  `num_motions` of these), at `speed` pixels per frame (x0.8-1.2 per video), from a random place
  that keeps its whole path inside the frame.
* The class is (identity, motion): `label = identity * num_motions + motion`. Telling the motion
  needs several frames, so accuracy grows with t (the first position says a little about a
  straight motion's direction, since the whole path must fit in the frame).
* With `num_places` = P > 0 the target's path is centred (within `place_jitter` pixels) at one of
  P places (`place_layout`: on a circle round the frame's centre, or on a row above it), and the
  place is part of the class:
  `label = (place * identities + identity) * num_motions + motion`. With `place_tint` the
  background's hue says the place, so any glimpse tells where the target is, and only a glimpse
  there tells its identity: *what one has seen says where to look next*, as where an action happens
  depends on the scene. A fixed or random glimpse sequence finds the target only by chance. With
  `place_tint_radius` > 0 the hue is a cone round the target instead (`place_tint` on it, falling
  linearly to 0 at that many pixels): a glimpse within reach tells the place, more surely the nearer
  it is, so the evidence for the class grows all the way to the target, and a policy trained through
  the crop (whose gradient otherwise reaches only as far as the target's pixels) has a slope to
  follow towards it from afar. `place_tint_floor` leaves that much hue on the whole frame (the cone
  rises from it), so every glimpse tells the place, faintly, and near the target clearly.
* With `ring_radius` > 0 (and no places) the path is centred on a ring round the frame's centre,
  at a uniformly random angle and a distance drawn within `ring_width` of the radius: a place
  drawn from a continuous distribution in every video, outside the class. A glimpse at the
  frame's centre, or at any fixed place, sees the target in few videos; the halo (`cue_tint`)
  tells every glimpse where it is. With `ring_arc` > 0 the angle is drawn within an arc of the
  ring's sector of the first phase's identity (`ring_angle`): still a continuous place in every
  video, but one the class says something of, as where an action happens depends on the action.
  A policy that sees the whole frame (the teacher's Tl on its features, which name the class
  from the first frame) can then aim from the class; with the whole ring for every class it must
  read the place itself, which the demo's teacher did not learn to (docs/demo_experiments.md).
* With `num_phases` = K > 1 the target's colour pair changes K times over the clip (K equal runs
  of frames) and the class holds the whole sequence: `identities ** K` codes,
  `label = (place * codes + code) * num_motions + motion`, the first phase the code's most
  significant digit (`phase_identities`). The evidence must then be seen in every phase: no
  single glimpse, however well placed, tells the class.
* `num_distractors` squares with the same colour patterns (in either orientation) and a dark
  outline move in random directions and bounce off the borders: they carry no class information,
  and only the marked target does.

The identity can only be read from pixels near the target, which starts anywhere and moves: no
fixed glimpse location sees it reliably, while a policy that follows the halo and then the target
does. Per-pixel noise (`noise`) and a static texture (`texture`) keep the task from being a
threshold. Every video is drawn from its own seeded generator ([seed, split, index]), so a dataset
is a pure function of its parameters, and changing the number of videos keeps the first ones.

Examples also have `target_xy` (n, 2): the target's centre in the model's normalised coordinates
(docs/design.md 1.3): lx horizontal, ly vertical pointing down, +-1 at the centres of the corner
pixels, i.e. `l = 2 * pixel / (frame_size - 1) - 1`.
"""

import dataclasses
import functools
import hashlib
import json

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from glitr_jax.data import builder_base, video_io
from glitr_jax.data import config as data_config

PLACE_LAYOUTS = ('circle', 'row')
MOTIONS = ('right', 'left', 'down', 'up', 'clockwise', 'counterclockwise')
COLOURS = {
  'red': (0.92, 0.12, 0.12),
  'blue': (0.12, 0.30, 0.95),
  'yellow': (0.96, 0.90, 0.10),
  'green': (0.10, 0.72, 0.22),
  'magenta': (0.90, 0.18, 0.86),
  'cyan': (0.10, 0.86, 0.92),
  'orange': (1.00, 0.55, 0.05),
  'purple': (0.48, 0.16, 0.80),
  'brown': (0.50, 0.28, 0.08),
  'pink': (1.00, 0.68, 0.78),
}
# A target identity is a (left, right) colour pair.
IDENTITIES = (
  ('red', 'blue'),
  ('yellow', 'green'),
  ('magenta', 'cyan'),
  ('orange', 'purple'),
  ('brown', 'pink'),
)
_TARGET_OUTLINE = (1.0, 1.0, 1.0)
_DISTRACTOR_OUTLINE = (0.05, 0.05, 0.05)
_SPLITS = ('train', 'validation')
JPEG_QUALITY = 95
# Pixel noise is read from a fixed bank of standard normals at a random offset per video: drawing
# fresh normals would cost more than drawing the rest of the video.
_NOISE_BANK_SIZE = 1 << 21


@functools.cache
def _noise_bank() -> np.ndarray:
  return np.random.default_rng(20230103).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)


# The defaults' one home is glitr_jax/data/config.py (the config section documents each field).
_DEFAULTS = data_config.get_synthetic_config()


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
  """The generator's parameters (the fields of `config.data.synthetic`, with its defaults)."""

  frame_size: int = _DEFAULTS.frame_size
  num_frames: int = _DEFAULTS.num_frames
  num_classes: int = _DEFAULTS.num_classes
  num_motions: int = _DEFAULTS.num_motions
  train_examples: int = _DEFAULTS.train_examples
  validation_examples: int = _DEFAULTS.validation_examples
  seed: int = _DEFAULTS.seed
  num_distractors: int = _DEFAULTS.num_distractors
  target_size: int = _DEFAULTS.target_size
  speed: float = _DEFAULTS.speed
  noise: float = _DEFAULTS.noise
  cue: float = _DEFAULTS.cue
  cue_radius: float = _DEFAULTS.cue_radius
  texture: float = _DEFAULTS.texture
  cue_tint: float = _DEFAULTS.cue_tint
  num_phases: int = _DEFAULTS.num_phases
  ring_radius: float = _DEFAULTS.ring_radius
  ring_width: float = _DEFAULTS.ring_width
  ring_arc: float = _DEFAULTS.ring_arc
  num_places: int = _DEFAULTS.num_places
  place_layout: str = _DEFAULTS.place_layout
  place_radius: float = _DEFAULTS.place_radius
  place_jitter: float = _DEFAULTS.place_jitter
  place_tint: float = _DEFAULTS.place_tint
  place_tint_radius: float = _DEFAULTS.place_tint_radius
  place_tint_floor: float = _DEFAULTS.place_tint_floor

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'SyntheticParams':
    """From `config.data.synthetic`; unknown fields are an error."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = set(config.keys()) - set(fields)
    if unknown:
      raise ValueError(
        f'data.synthetic: unknown field(s) {sorted(unknown)}; known {sorted(fields)}'
      )
    cast = {float: float, int: int, str: str}
    values = {k: cast[fields[k]](v) for k, v in config.items()}
    params = cls(**values)
    params.validate()
    return params

  @property
  def num_codes(self) -> int:
    """How many identity sequences the class tells apart: identities ** num_phases."""
    return self.num_classes // (self.num_motions * max(self.num_places, 1))

  @property
  def num_identities(self) -> int:
    """How many colour pairs are used (the num_phases-th root of `num_codes`)."""
    root = int(round(self.num_codes ** (1.0 / max(self.num_phases, 1))))
    return root if root ** max(self.num_phases, 1) == self.num_codes else 0

  def split_label(self, label: int) -> tuple[int, int, int]:
    """label -> (place, code, motion); place is 0 when `num_places` is 0; the code is the
    identity, or with `num_phases` > 1 the identity sequence (`phase_identities`)."""
    rest, motion = divmod(int(label), self.num_motions)
    place, code = divmod(rest, self.num_codes)
    return place, code, motion

  def phase_identities(self, code: int) -> tuple[int, ...]:
    """A code -> the identity of each phase, first phase first (its most significant digit)."""
    digits = []
    for _ in range(self.num_phases):
      code, digit = divmod(int(code), self.num_identities)
      digits.append(digit)
    return tuple(reversed(digits))

  def phase_of_frame(self) -> np.ndarray:
    """int (num_frames,): the phase each frame shows (num_phases equal runs of frames)."""
    return np.arange(self.num_frames) * self.num_phases // self.num_frames

  def place_centre(self, place: int) -> np.ndarray:
    """The pixel centre (x, y) of a place (y points down), by `place_layout`:

    'circle': P places evenly on a circle of radius `place_radius` x frame_size round the frame's
      centre, the first towards the bottom right.
    'row': P places evenly spaced left to right on a row `place_radius` x frame_size above the
      centre, the outer ones as near the sides as the path allows.
    """
    middle = (self.frame_size - 1) / 2
    radius = self.place_radius * (self.frame_size - 1)
    if self.place_layout == 'row':
      side = middle - self._place_room()
      x = np.linspace(-side, side, self.num_places) if self.num_places > 1 else np.zeros(1)
      return np.array([middle + x[place], middle - radius])
    angle = np.pi / 4 + 2 * np.pi * place / self.num_places
    return middle + radius * np.array([np.cos(angle), np.sin(angle)])

  def ring_angle(self, code: int, u: float) -> float:
    """The angle (radians, y pointing down) of a path's centre on the ring, from u ~ U(0, 1):
    uniform on the whole ring, or with `ring_arc` > 0 on the central `ring_arc` fraction of the
    sector of the first phase's identity (num_identities equal sectors, the first centred on the
    right, then clockwise), so that where the evidence lies says something of the class."""
    if not self.ring_arc:
      return 2 * np.pi * u
    sector = self.phase_identities(code)[0]
    return 2 * np.pi * (sector + self.ring_arc * (u - 0.5)) / self.num_identities

  def _place_room(self) -> float:
    """How far a path centred at a place reaches from it (pixels): jitter, travel and the outline.
    A straight path reaches travel / 2 from its mean; a half-turn arc (r = travel / pi) at most
    r (1 + 2 / pi)."""
    return self.place_jitter + 0.53 * self.max_travel + self.margin

  @property
  def max_travel(self) -> float:
    """The longest path a target travels over the clip (pixels): 1.2 x speed per step."""
    return 1.2 * self.speed * (self.num_frames - 1)

  @property
  def margin(self) -> float:
    """Distance from an object's centre to its outline's outer edge (pixels)."""
    return self.target_size / 2 + 1.5

  def validate(self) -> None:
    """Raises ValueError naming the `data.synthetic.<field>` that cannot work."""

    def check(ok: bool, field: str, why: str) -> None:
      if not ok:
        raise ValueError(f'data.synthetic.{field}={getattr(self, field)!r}: {why}')

    check(1 <= self.num_motions <= len(MOTIONS), 'num_motions', f'must be in 1..{len(MOTIONS)}')
    check(self.num_places >= 0, 'num_places', 'must be >= 0 (0 = the target starts anywhere)')
    check(
      1 <= self.num_phases <= self.num_frames,
      'num_phases',
      f'must be in 1..num_frames={self.num_frames} (each phase shows at least one frame)',
    )
    per_identity = self.num_motions * max(self.num_places, 1)
    check(
      self.num_classes % per_identity == 0 and 1 <= self.num_identities <= len(IDENTITIES),
      'num_classes',
      f'must be places x identities ** num_phases x num_motions with 1..{len(IDENTITIES)} '
      f'identities (num_places={self.num_places}, num_phases={self.num_phases}, '
      f'num_motions={self.num_motions})',
    )
    check(self.num_frames >= 1, 'num_frames', 'must be >= 1')
    check(self.target_size >= 2, 'target_size', 'must be >= 2 pixels')
    check(self.train_examples >= 0, 'train_examples', 'must be >= 0')
    check(self.validation_examples >= 0, 'validation_examples', 'must be >= 0')
    check(self.num_distractors >= 0, 'num_distractors', 'must be >= 0')
    check(self.speed >= 0, 'speed', 'must be >= 0')
    check(self.noise >= 0, 'noise', 'must be >= 0')
    check(self.cue >= 0, 'cue', 'must be >= 0')
    check(self.cue_radius > 0, 'cue_radius', 'must be > 0')
    check(self.cue_tint >= 0, 'cue_tint', 'must be >= 0 (0 = a colourless halo)')
    travel = self.max_travel
    room = self.frame_size - 1 - 2 * self.margin
    check(
      travel <= room,
      'speed',
      f'the target travels up to {travel:.1f} px but the {self.frame_size}-px frame leaves '
      f'{room:.1f} px (lower speed or num_frames, or raise frame_size)',
    )
    check(self.place_jitter >= 0, 'place_jitter', 'must be >= 0')
    check(self.place_tint >= 0, 'place_tint', 'must be >= 0')
    check(
      self.place_tint_radius >= 0,
      'place_tint_radius',
      'must be >= 0 (0 = the whole background takes the place hue)',
    )
    check(
      self.place_tint_radius == 0 or (self.num_places > 0 and self.place_tint > 0),
      'place_tint_radius',
      'fades the place hue round the target: it needs num_places > 0 and place_tint > 0',
    )
    check(
      self.place_tint_floor == 0
      or (self.place_tint_radius > 0 and 0 < self.place_tint_floor < self.place_tint),
      'place_tint_floor',
      'is the hue left beyond the cone: it needs place_tint_radius > 0 and must be in '
      f'[0, place_tint={self.place_tint})',
    )
    check(self.place_radius >= 0, 'place_radius', 'must be >= 0')
    check(self.ring_radius >= 0, 'ring_radius', 'must be >= 0 (0 = no ring)')
    check(
      0 <= self.ring_width <= 2 * self.ring_radius,
      'ring_width',
      f'must be in [0, 2 x ring_radius={2 * self.ring_radius}]',
    )
    check(
      0 <= self.ring_arc <= 1 and (self.ring_arc == 0 or self.ring_radius > 0),
      'ring_arc',
      'must be in [0, 1] (0 = the whole ring for every class) and needs ring_radius > 0',
    )
    check(
      self.ring_radius == 0 or self.num_places == 0,
      'ring_radius',
      'draws the place from a ring, outside the class: it needs num_places=0',
    )
    if self.ring_radius > 0:
      middle = (self.frame_size - 1) / 2
      reach = (self.ring_radius + self.ring_width / 2) * (self.frame_size - 1) + self._place_room()
      check(
        reach <= middle + 1e-6,
        'ring_radius',
        f'a path centred on the ring reaches {reach:.1f} px from the frame centre, beyond '
        f'{middle:.1f} (lower ring_radius, ring_width, place_jitter or speed)',
      )
    check(self.place_layout in PLACE_LAYOUTS, 'place_layout', f'must be one of {PLACE_LAYOUTS}')
    if self.num_places:
      # A path centred at a place (plus jitter) must stay inside the frame.
      middle = (self.frame_size - 1) / 2
      reach = max(np.abs(self.place_centre(p) - middle).max() for p in range(self.num_places))
      reach += self._place_room()
      check(
        reach <= middle + 1e-6,
        'place_radius',
        f'a path centred at a place reaches {reach:.1f} px from the frame centre, beyond '
        f'{middle:.1f} (lower place_radius, place_jitter or speed)',
      )

  def class_names(self) -> tuple[str, ...]:
    """'<left>|<right>[><left>|<right>...] <motion>[ at place <p>]' for
    label = (place * codes + code) * num_motions + motion (one pair per phase)."""
    places = [f' at place {p}' for p in range(self.num_places)] or ['']
    codes = [
      '>'.join('|'.join(IDENTITIES[i]) for i in self.phase_identities(code))
      for code in range(self.num_codes)
    ]
    return tuple(
      f'{code} {motion}{place}'
      for place in places
      for code in codes
      for motion in MOTIONS[: self.num_motions]
    )

  def num_examples(self, split: str) -> int:
    return {'train': self.train_examples, 'validation': self.validation_examples}[split]


def labels_for_split(params: SyntheticParams, split: str) -> np.ndarray:
  """The labels of a split's videos, int64 (N,), drawn from [seed, split]."""
  rng = np.random.default_rng([params.seed, _SPLITS.index(split), 1])
  return rng.integers(params.num_classes, size=params.num_examples(split))


def _target_path(rng: np.random.Generator, params: SyntheticParams, motion: str) -> np.ndarray:
  """Pixel centres (n, 2) of the target (x right, y down), the whole path inside the frame."""
  n, lo, hi = params.num_frames, params.margin, params.frame_size - 1 - params.margin
  speed = params.speed * rng.uniform(0.8, 1.2)
  steps = np.arange(n, dtype=np.float64)
  if motion in ('right', 'left', 'down', 'up'):
    travel = speed * (n - 1)
    start = rng.uniform(lo, hi - travel)
    along = start + speed * steps
    if motion in ('left', 'up'):
      along = (lo + hi) - along  # Mirror: the same distribution of paths, the other way.
    across = np.full(n, rng.uniform(lo, hi))
    return np.stack([along, across] if motion in ('right', 'left') else [across, along], axis=1)
  # A circle whose arc over the clip is about half a turn; clockwise on screen (y down) is +angle.
  radius = max(2.0, speed * max(n - 1, 1) / np.pi)
  radius = min(radius, (hi - lo) / 2)
  centre = rng.uniform(lo + radius, hi - radius, size=2)
  sign = 1.0 if motion == 'clockwise' else -1.0
  angle = rng.uniform(0, 2 * np.pi) + sign * steps * speed / radius
  return centre[None, :] + radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _bouncing_path(rng: np.random.Generator, params: SyntheticParams) -> np.ndarray:
  """Pixel centres (n, 2) of a distractor moving straight and bouncing off the borders."""
  lo, hi = params.margin, params.frame_size - 1 - params.margin
  start = rng.uniform(lo, hi, size=2)
  heading = rng.uniform(0, 2 * np.pi)
  speed = params.speed * rng.uniform(0.5, 1.5)
  velocity = speed * np.array([np.cos(heading), np.sin(heading)])
  free = (start - lo)[None, :] + np.arange(params.num_frames)[:, None] * velocity[None, :]
  span = hi - lo
  folded = np.mod(free, 2 * span)
  return lo + span - np.abs(folded - span)


def _place_hue(params: SyntheticParams, place: int) -> np.ndarray:
  """The RGB shift (3,) per unit of `place_tint` that says a place (norm 1.22): P hues evenly round
  the colour wheel, in the plane of two orthogonal zero-sum directions of RGB (the hue changes, the
  brightness does not)."""
  hue = 2 * np.pi * place / params.num_places
  return np.cos(hue) * np.array([1.0, -0.5, -0.5]) + np.sin(hue) * np.array([0.0, 0.866, -0.866])


def _background(rng: np.random.Generator, params: SyntheticParams, place: int) -> np.ndarray:
  """A static textured background, float32 (S, S, 3): grey-ish tint plus three gratings; with
  `place_tint` the tint's hue is the place's (`_place_hue`), at `place_tint`, or at
  `place_tint_floor` when a cone (`place_tint_radius`) adds the rest round the target."""
  size = params.frame_size
  coords = np.arange(size, dtype=np.float64)
  base = rng.uniform(0.25, 0.5) + rng.uniform(-0.05, 0.05, size=3)
  if params.num_places and params.place_tint > 0:
    # With a cone (render_video) only its floor covers the whole background.
    tint = params.place_tint_floor if params.place_tint_radius > 0 else params.place_tint
    base = base + tint * _place_hue(params, place)
  texture = np.zeros((size, size), np.float64)
  for _ in range(3):
    theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.08, 0.35), rng.uniform(0, 2 * np.pi)
    # sin(kx x + ky y + phase), separably: sin(a + b) = sin a cos b + cos a sin b.
    ax = 2 * np.pi * freq * np.cos(theta) * coords
    by = 2 * np.pi * freq * np.sin(theta) * coords + phase
    texture += np.outer(np.cos(by), np.sin(ax)) + np.outer(np.sin(by), np.cos(ax))
  return (base[None, None, :] + params.texture / 3 * texture[..., None]).astype(np.float32)


def _draw_squares(
  canvas_nhwc: np.ndarray,
  paths_kn2: np.ndarray,
  colours_k33: np.ndarray,
  pad: int,
  half: float,
) -> None:
  """Draws K anti-aliased two-colour squares with 1-px outlines on every frame, in order, in place.

  Args:
    canvas_nhwc: float32 (n, S + 2 pad, S + 2 pad, 3), the frames padded by `pad` on each side.
    paths_kn2: each square's centre per frame (x, y) in frame pixels.
    colours_k33: per square, the RGB of its left half, right half and outline.
    pad: the padding (larger than a square's reach, so windows never leave the canvas).
    half: half the square's side (pixels).
  """
  num, n = paths_kn2.shape[:2]
  reach = int(np.ceil(half + 2))
  window = np.arange(-reach, reach + 1)
  centres = paths_kn2.astype(np.float32) + pad
  cx, cy = centres[..., 0], centres[..., 1]  # (K, n)
  xs = np.round(cx).astype(int)[..., None] + window  # (K, n, w)
  ys = np.round(cy).astype(int)[..., None] + window
  dx = (xs - cx[..., None])[:, :, None, :].astype(np.float32)  # (K, n, 1, w)
  dy = (ys - cy[..., None])[:, :, :, None].astype(np.float32)  # (K, n, w, 1)

  def coverage(h):
    return np.clip(h + 0.5 - np.abs(dx), 0, 1) * np.clip(h + 0.5 - np.abs(dy), 0, 1)

  inner = coverage(half)[..., None]  # (K, n, w, w, 1)
  ring = coverage(half + 1.0)[..., None] - inner
  left_weight = np.clip(0.5 - dx, 0, 1)[..., None]  # 1 left of the centre line, 0 right of it.
  colours = colours_k33.astype(np.float32)[:, None, None, None]  # (K, 1, 1, 1, 3, 3)
  fill = left_weight * colours[..., 0, :] + (1 - left_weight) * colours[..., 1, :]
  add = ring * colours[..., 2, :] + inner * fill
  keep = 1 - inner - ring
  frames = np.arange(n)[:, None, None]
  for k in range(num):
    where = (frames, ys[k][:, :, None], xs[k][:, None, :])
    canvas_nhwc[where] = keep[k] * canvas_nhwc[where] + add[k]


def _distance_to(path_n2: np.ndarray, size: int) -> np.ndarray:
  """float32 (n, S, S): each pixel's distance to the path's point in its frame (pixels)."""
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
  px, py = path_n2.astype(np.float32).T
  return np.hypot(xx[None] - px[:, None, None], yy[None] - py[:, None, None])


def render_video(
  params: SyntheticParams, label: int, split: str, index: int
) -> tuple[np.ndarray, np.ndarray]:
  """Draws one video.

  Args:
    params: the generator's parameters.
    label: the class ((place * identities + identity) * num_motions + motion).
    split: 'train' or 'validation' (part of the video's seed).
    index: the video's index in its split (part of its seed).

  Returns:
    (frames uint8 (n, S, S, 3), target_xy float32 (n, 2) in normalised coordinates).
  """
  rng = np.random.default_rng([params.seed, _SPLITS.index(split), 0, index])
  size, n = params.frame_size, params.num_frames
  place, code, motion = params.split_label(label)
  target = _target_path(rng, params, MOTIONS[motion])
  if params.num_places:
    # The same motion, its path centred at the place (within +-place_jitter pixels).
    jitter = rng.uniform(-params.place_jitter, params.place_jitter, size=2)
    target = target - target.mean(axis=0) + params.place_centre(place) + jitter
  elif params.ring_radius > 0:
    # The same motion, its path centred on the ring at a uniformly random angle and distance.
    angle = params.ring_angle(code, rng.uniform())
    half = params.ring_width / 2
    radius = rng.uniform(params.ring_radius - half, params.ring_radius + half)
    centre = (size - 1) / 2 + radius * (size - 1) * np.array([np.cos(angle), np.sin(angle)])
    jitter = rng.uniform(-params.place_jitter, params.place_jitter, size=2)
    target = target - target.mean(axis=0) + centre + jitter

  frames = np.broadcast_to(_background(rng, params, place), (n, size, size, 3)).copy()
  if params.cue > 0:
    halo = np.clip(1 - _distance_to(target, size) / np.float32(params.cue_radius), 0, 1)
    tint = np.ones((n, 1, 1, 3), np.float32)
    if params.cue_tint > 0:
      u = target.astype(np.float32) / (size - 1) - 0.5  # (n, 2) in [-0.5, 0.5]
      tint[:, 0, 0, 0] += params.cue_tint * u[:, 0]
      tint[:, 0, 0, 2] += params.cue_tint * u[:, 1]
    frames += np.float32(params.cue) * halo[..., None] * tint
  if params.place_tint_radius > 0:  # (validate: then there are places and a hue)
    # The place's hue as a cone round the target: strongest on it, down to the floor (which
    # _background put on the whole frame) at the radius and beyond.
    cone = np.clip(1 - _distance_to(target, size) / np.float32(params.place_tint_radius), 0, 1)
    rise = params.place_tint - params.place_tint_floor
    hue = (rise * _place_hue(params, place)).astype(np.float32)
    frames += cone[..., None] * hue

  pad = int(np.ceil(params.target_size / 2 + 3))
  canvas = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  used = IDENTITIES[: params.num_identities]

  def distractor_colours():
    pair = used[rng.integers(len(used))]
    if rng.random() < 0.5:
      pair = pair[::-1]
    return [COLOURS[pair[0]], COLOURS[pair[1]], _DISTRACTOR_OUTLINE]

  paths, colours = [], []  # colours: per phase, per square
  for _ in range(params.num_distractors):
    paths.append(_bouncing_path(rng, params))
    colours.append([distractor_colours()])
  for phase_colours in colours:  # distractors change their colours at every phase too
    phase_colours += [distractor_colours() for _ in range(params.num_phases - 1)]
  paths.append(target)  # Drawn last: the target is never hidden.
  colours.append(
    [
      [COLOURS[used[i][0]], COLOURS[used[i][1]], _TARGET_OUTLINE]
      for i in params.phase_identities(code)
    ]
  )
  paths = np.stack(paths)
  phase_of_frame = params.phase_of_frame()
  for phase in range(params.num_phases):
    frames_in = phase_of_frame == phase
    phase_canvas = canvas[frames_in]
    phase_colours = np.array([c[phase] for c in colours])
    _draw_squares(phase_canvas, paths[:, frames_in], phase_colours, pad, params.target_size / 2)
    canvas[frames_in] = phase_canvas
  frames = canvas[:, pad:-pad, pad:-pad]
  if params.noise > 0:
    count = frames.size
    if count > _NOISE_BANK_SIZE:
      noise = rng.standard_normal(frames.shape, dtype=np.float32)
    else:
      start = int(rng.integers(0, _NOISE_BANK_SIZE - count + 1))
      noise = _noise_bank()[start : start + count].reshape(frames.shape)
    frames = frames + np.float32(params.noise) * noise
  video = np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)
  target_xy = (2 * target / (size - 1) - 1).astype(np.float32)
  return video, target_xy


def load_video(payload: tuple[SyntheticParams, int, str, int]) -> dict:
  """Renders one video and encodes its frames (runs in worker processes).

  Args:
    payload: (params, label, split, index).

  Returns:
    {'video': JPEG bytes per frame (4:4:4 chroma, so small colour patches survive),
     'target_xy': float32 (n, 2)}.
  """
  params, label, split, index = payload
  video, target_xy = render_video(params, label, split, index)
  frames = [video_io.encode_jpeg(f, quality=JPEG_QUALITY, subsampling=0) for f in video]
  return {'video': frames, 'target_xy': target_xy}


@dataclasses.dataclass(eq=False, repr=False)  # TFDS logs configs: keep the repr to the name.
class GlitrSyntheticConfig(tfds.core.BuilderConfig):
  """Attributes: params: the generator's parameters (the config's name is derived from them)."""

  params: SyntheticParams = dataclasses.field(default_factory=SyntheticParams)


def synthetic_config(params: SyntheticParams) -> GlitrSyntheticConfig:
  """The builder config for `params`, named by its main sizes and a hash of all parameters."""
  params.validate()
  digest = hashlib.sha1(json.dumps(dataclasses.asdict(params), sort_keys=True).encode())
  name = (
    f'{params.frame_size}px_{params.num_frames}f_{params.num_classes}c_'
    f'{params.train_examples}tr_seed{params.seed}_{digest.hexdigest()[:8]}'
  )
  return GlitrSyntheticConfig(name=name, params=params, description='glitr_synthetic parameters')


class GlitrSynthetic(builder_base.VideoBuilder):
  """The procedural GliTr benchmark (module docstring); needs no manual download."""

  BUILDER_CONFIGS = [synthetic_config(SyntheticParams())]
  DESCRIPTION = 'A target among distractors; class = target identity x motion (glitr_jax).'

  def _class_names(self) -> tuple[str, ...]:
    return self.builder_config.params.class_names()

  def _extra_features(self) -> dict:
    return {
      'target_xy': tfds.features.Tensor(
        shape=(None, 2),
        dtype=np.float32,
        doc='target centre per frame, normalised (lx right, ly down; +-1 = corner pixel centres)',
      )
    }

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    params = self.builder_config.params
    jobs = {
      split: [
        builder_base.Job(f'{split}_{i:06d}', int(label), (params, int(label), split, i))
        for i, label in enumerate(labels_for_split(params, split))
      ]
      for split in _SPLITS
    }
    return self._splits(jobs, load_video)
