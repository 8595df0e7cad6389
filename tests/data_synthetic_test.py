"""glitr_synthetic: deterministic from its seed, the class is the target's identity and motion, and
the target is somewhere else in every video; the demo's benchmark: where the evidence is, and
that fixed and random glimpses miss it in most videos (from the drawn positions and the glimpse
geometry)."""

import dataclasses

import data_fixtures as fx
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import demo
from glitr_jax import data, glimpse
from glitr_jax.data import config as data_config
from glitr_jax.data import pipeline, synthetic
from glitr_jax.eval import strategies

tfds.disable_progress_bar()

SMALL = dict(train_examples=40, validation_examples=12, num_distractors=3)


def _config(data_dir, **synthetic_fields):
  config = fx.data_config('glitr_synthetic', data_dir, eval_short_side=64)
  config.synthetic.update(dict(SMALL, **synthetic_fields))
  return config


def _read(config, split: str):
  source = pipeline.prepared_builder(config).as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _pixel(xy: np.ndarray, size: int) -> np.ndarray:
  """Normalised coordinates -> pixel coordinates (+-1 = centres of the corner pixels)."""
  return (np.asarray(xy) + 1) * (size - 1) / 2


def test_builds_deterministically_from_the_seed(tmp_path):
  a = _read(_config(tmp_path / 'a'), 'train')
  b = _read(_config(tmp_path / 'b'), 'train')
  c = _read(_config(tmp_path / 'c', seed=1), 'train')
  assert len(a) == SMALL['train_examples']
  for x, y in zip(a, b):
    assert x['video_id'] == y['video_id'] and x['label'] == y['label']
    np.testing.assert_array_equal(x['video'], y['video'])
    np.testing.assert_array_equal(x['target_xy'], y['target_xy'])
  by_id = {x['video_id']: x for x in a}
  assert any(not np.array_equal(by_id[z['video_id']]['video'], z['video']) for z in c)


def test_dataset_info_and_the_pipeline_read_it(tmp_path):
  config = _config(tmp_path)
  info = data.dataset_info(config)  # Builds on first use: no manual download, no prepare step.
  assert info.num_classes == 8 and len(info.class_names) == 8
  assert info.class_names[:4] == ('red|blue right', 'red|blue left', 'red|blue down', 'red|blue up')
  assert info.num_examples == {'train': 40, 'validation': 12}
  batch = next(
    data.create_train_iterator(
      config, batch_size=4, num_frames=8, image_size=64, seed=0, process_index=0, process_count=1
    )
  )
  assert batch['video'].shape == (4, 8, 64, 64, 3)


def test_frames_and_target_positions():
  params = synthetic.SyntheticParams(**SMALL)
  size = params.frame_size
  starts = []
  for index in range(60):
    label = index % params.num_classes
    video, target_xy = synthetic.render_video(params, label, 'train', index)
    assert video.shape == (8, size, size, 3) and video.dtype == np.uint8
    assert target_xy.shape == (8, 2) and np.all(np.abs(target_xy) <= 1)
    starts.append(target_xy[0])
    # The target sits at target_xy: the left half has its identity's first colour, the right
    # half the second (the target is drawn last: no distractor covers it).
    left, right = synthetic.IDENTITIES[label // params.num_motions]
    for t in range(params.num_frames):
      x, y = np.round(_pixel(target_xy[t], size)).astype(int)
      frame = video[t].astype(np.float32) / 255
      assert np.abs(frame[y, x - 2] - synthetic.COLOURS[left]).max() < 0.2
      assert np.abs(frame[y, x + 2] - synthetic.COLOURS[right]).max() < 0.2
  starts = np.array(starts)
  assert starts.std(axis=0).min() > 0.3  # Spread over the frame, in x and in y.
  assert len({tuple(np.round(s, 3)) for s in starts}) == len(starts)


@pytest.mark.parametrize('num_motions', [4, 6])
def test_the_label_says_how_the_target_moves(num_motions):
  params = synthetic.SyntheticParams(num_classes=2 * num_motions, num_motions=num_motions)
  directions = {'right': (1, 0), 'left': (-1, 0), 'down': (0, 1), 'up': (0, -1)}
  for index in range(4 * params.num_classes):
    label = index % params.num_classes
    _, xy = synthetic.render_video(params, label, 'validation', index)
    pixels = _pixel(xy, params.frame_size)
    step = np.diff(pixels, axis=0)  # (n - 1, 2)
    motion = synthetic.MOTIONS[label % num_motions]
    if motion in directions:
      unit = np.array(directions[motion])
      np.testing.assert_allclose(step @ unit, np.linalg.norm(step, axis=1), rtol=1e-6)
      assert np.all(step @ unit > 1.0)
    else:
      # Turning clockwise on screen (y down) is a positive cross product of successive steps.
      turn = np.cross(step[:-1], step[1:])
      assert np.all(np.sign(turn) == (1 if motion == 'clockwise' else -1))


def test_labels_cover_the_classes_and_splits_differ():
  params = synthetic.SyntheticParams()
  train = synthetic.labels_for_split(params, 'train')
  assert train.shape == (params.train_examples,)
  assert np.bincount(train, minlength=8).min() > 0.8 * params.train_examples / 8
  video_train, _ = synthetic.render_video(params, 0, 'train', 0)
  video_val, _ = synthetic.render_video(params, 0, 'validation', 0)
  assert not np.array_equal(video_train, video_val)


def test_cue_brightens_the_background_towards_the_target():
  on = synthetic.SyntheticParams(noise=0.0, num_distractors=0)
  off = synthetic.SyntheticParams(noise=0.0, num_distractors=0, cue=0.0)
  video_on, xy = synthetic.render_video(on, 0, 'train', 3)
  video_off, _ = synthetic.render_video(off, 0, 'train', 3)
  diff = video_on[0].astype(np.float32).mean(-1) - video_off[0].astype(np.float32).mean(-1)
  x, y = _pixel(xy[0], on.frame_size)
  yy, xx = np.mgrid[0:64, 0:64]
  dist = np.hypot(xx - x, yy - y)
  near, middle, far = (dist > 7) & (dist < 12), (dist > 20) & (dist < 25), dist > on.cue_radius
  # A cone: cue * (1 - d / cue_radius), in 0-255 levels (up to clipping at white).
  assert diff[near].mean() > diff[middle].mean() + 10 > 10
  assert np.abs(diff[far]).max() <= 1


def test_cue_tint_encodes_where_the_target_is():
  plain = synthetic.SyntheticParams(noise=0.0, num_distractors=0, texture=0.0)
  tinted = synthetic.SyntheticParams(noise=0.0, num_distractors=0, texture=0.0, cue_tint=1.0)
  checked = 0
  for index in range(12):
    video_plain, xy = synthetic.render_video(plain, 0, 'train', index)
    video_tinted, _ = synthetic.render_video(tinted, 0, 'train', index)
    u = (xy[0] + 1) / 2 - 0.5  # the target's position in [-0.5, 0.5] (x right, y down)
    x, y = _pixel(xy[0], plain.frame_size)
    yy, xx = np.mgrid[0:64, 0:64]
    ring = (np.hypot(xx - x, yy - y) > 8) & (np.hypot(xx - x, yy - y) < 14)
    diff = video_tinted[0].astype(np.float32) - video_plain[0].astype(np.float32)
    red, green, blue = (diff[..., c][ring].mean() for c in range(3))
    assert abs(green) < 0.5  # Only red and blue carry the position.
    # cue * halo * cue_tint * u per channel: the sign and the ratio of the two shifts follow u.
    for shift, coordinate in ((red, u[0]), (blue, u[1])):
      if abs(coordinate) > 0.15:
        assert np.sign(shift) == np.sign(coordinate), (index, shift, coordinate)
        checked += 1
  assert checked >= 6


PLACES = dict(num_places=4, num_classes=8, num_motions=1, num_distractors=2, speed=1.0)


def test_places_are_part_of_the_class():
  params = synthetic.SyntheticParams(**PLACES)
  assert params.num_identities == 2
  assert params.class_names()[:3] == (
    'red|blue right at place 0',
    'yellow|green right at place 0',
    'red|blue right at place 1',
  )
  centres = np.array([params.place_centre(p) for p in range(4)])
  middle = (params.frame_size - 1) / 2
  # Four places on a circle round the centre, one per quadrant (the first bottom right, y down).
  np.testing.assert_allclose(np.hypot(*(centres - middle).T), 0.33 * 63)
  assert {tuple(np.sign(c - middle)) for c in centres} == {(1, 1), (-1, 1), (-1, -1), (1, -1)}
  for index in range(24):
    label = index % params.num_classes
    place, identity = divmod(label, 2)
    video, xy = synthetic.render_video(params, label, 'train', index)
    path = _pixel(xy, params.frame_size)
    assert np.abs(path.mean(0) - params.place_centre(place)).max() <= params.place_jitter + 1e-4
    assert np.all(np.diff(path[:, 0]) > 0.7)  # Still moving right.
    left, right = synthetic.IDENTITIES[identity]
    x, y = np.round(path[-1]).astype(int)
    frame = video[-1].astype(np.float32) / 255
    assert np.abs(frame[y, x - 2] - synthetic.COLOURS[left]).max() < 0.2
    assert np.abs(frame[y, x + 2] - synthetic.COLOURS[right]).max() < 0.2


def test_places_in_a_row_above_the_centre():
  params = synthetic.SyntheticParams(**PLACES, place_layout='row', place_radius=0.25)
  params.validate()
  centres = np.array([params.place_centre(p) for p in range(4)])
  np.testing.assert_allclose(centres[:, 1], 31.5 - 0.25 * 63)
  np.testing.assert_allclose(np.diff(centres[:, 0]), np.diff(centres[:, 0])[0])  # evenly spaced
  assert np.all(np.diff(centres[:, 0]) > 0) and centres[0, 0] + centres[-1, 0] == pytest.approx(63)
  for index in range(16):
    label = index % 8
    _, xy = synthetic.render_video(params, label, 'train', index)
    path = _pixel(xy, 64)
    assert np.abs(path.mean(0) - centres[label // 2]).max() <= params.place_jitter + 1e-4
    assert np.all(np.abs(path - 31.5) + params.margin <= 31.5)


def test_every_motion_centred_at_a_place_stays_inside_the_frame():
  fields = dict(PLACES, num_motions=6, num_classes=48, speed=2.0)
  with pytest.raises(ValueError, match='place_radius'):
    synthetic.SyntheticParams(**fields, place_radius=0.37).validate()
  params = synthetic.SyntheticParams(**fields, place_radius=0.34)  # near the largest allowed
  params.validate()
  for index in range(96):
    _, xy = synthetic.render_video(params, index % 48, 'validation', index)
    reach = np.abs(_pixel(xy, 64) - 31.5).max() + params.margin
    assert reach <= 31.5, (index, reach)


def test_place_tint_says_the_place_everywhere():
  quiet = dict(PLACES, noise=0.0, texture=0.0, cue=0.0, num_distractors=0)
  plain = synthetic.SyntheticParams(**quiet)
  tinted = synthetic.SyntheticParams(**quiet, place_tint=0.1)
  hues = []
  for place in range(4):
    label = 2 * place
    video_plain, xy = synthetic.render_video(plain, label, 'train', place)
    video_tinted, _ = synthetic.render_video(tinted, label, 'train', place)
    x, y = _pixel(xy, plain.frame_size).mean(0)
    yy, xx = np.mgrid[0:64, 0:64]
    away = np.hypot(xx - x, yy - y) > 12
    diff = (video_tinted[0].astype(np.float32) - video_plain[0].astype(np.float32))[away]
    # One shift everywhere away from the target, summing to zero over RGB (hue, not brightness).
    assert diff.std(0).max() < 0.6 and abs(diff.mean(0).sum()) < 1.5
    hues.append(np.arctan2(diff.mean(0) @ [0, 0.866, -0.866], diff.mean(0) @ [1, -0.5, -0.5]))
    assert np.linalg.norm(diff.mean(0)) > 0.1 * 255  # place_tint * |direction| = 0.1 * 1.22
  # The P hues are evenly spaced round the colour wheel.
  np.testing.assert_allclose(np.mod(np.diff(hues), 2 * np.pi), np.pi / 2, atol=0.05)


@pytest.mark.parametrize('floor', [0.0, 0.04])
def test_place_tint_radius_makes_the_hue_a_cone_round_the_moving_target(floor):
  quiet = dict(PLACES, noise=0.0, texture=0.0, cue=0.0, num_distractors=0)
  plain = synthetic.SyntheticParams(**quiet)
  uniform = synthetic.SyntheticParams(**quiet, place_tint=0.1)
  cone = synthetic.SyntheticParams(
    **quiet, place_tint=0.1, place_tint_radius=30.0, place_tint_floor=floor
  )
  label = 2 * 3  # place 3: hue 3 pi / 2 = -(0, 0.866, -0.866) in RGB
  video_plain, xy = synthetic.render_video(plain, label, 'train', 5)
  video_uniform, _ = synthetic.render_video(uniform, label, 'train', 5)
  video_cone, xy_cone = synthetic.render_video(cone, label, 'train', 5)
  np.testing.assert_array_equal(xy, xy_cone)  # the same video, only the hue differs
  yy, xx = np.mgrid[0:64, 0:64]
  for t in (0, 7):  # the cone follows the target: check its first and last frames
    x, y = _pixel(xy[t], 64)
    dist = np.hypot(xx - x, yy - y)
    off_target = dist > 8
    shift = video_cone[t].astype(np.float32) - video_plain[t].astype(np.float32)
    full = video_uniform[t].astype(np.float32) - video_plain[t].astype(np.float32)
    # On the uniform background the cone scales the uniform shift (place_tint's) by
    # floor / tint + (1 - floor / tint)(1 - d / radius): from 1 on the target to floor / tint at
    # the radius and beyond.
    share = floor / 0.1 + (1 - floor / 0.1) * np.clip(1 - dist / 30.0, 0, 1)
    expected = share[..., None] * full
    np.testing.assert_allclose(shift[off_target], expected[off_target], atol=1.01)
    np.testing.assert_allclose(shift[dist > 31], floor / 0.1 * full[dist > 31], atol=1.01)
    if floor == 0:
      assert np.all(shift[dist > 31] == 0)
    # The hue, not the brightness; red untouched (place 3's direction has no red component).
    assert np.abs(shift[off_target].sum(-1)).max() <= 2 and np.abs(shift[..., 0]).max() <= 1
  with pytest.raises(ValueError, match='place_tint_radius'):
    synthetic.SyntheticParams(**quiet, place_tint=0.1, place_tint_radius=-1.0).validate()
  for bad in (dict(place_tint_floor=0.05), dict(place_tint_radius=30.0, place_tint_floor=0.1)):
    with pytest.raises(ValueError, match='place_tint_floor'):  # no cone / no rise to the target
      synthetic.SyntheticParams(**quiet, place_tint=0.1, **bad).validate()


@pytest.mark.parametrize(
  'fields,message',
  [
    (dict(num_classes=7, num_motions=4), 'num_classes'),
    (dict(num_motions=7), 'num_motions'),
    (dict(speed=9.0), 'speed'),
    (dict(cue_tint=-1.0), 'cue_tint'),
    (dict(num_places=4, num_classes=12, num_motions=4), 'num_classes'),
    (dict(PLACES, place_radius=0.5), 'place_radius'),
    (dict(PLACES, place_tint=-0.1), 'place_tint'),
    (dict(PLACES, place_tint_radius=30.0), 'place_tint_radius'),  # no hue to fade
    (dict(place_tint=0.1, place_tint_radius=30.0), 'place_tint_radius'),  # no places
    (dict(PLACES, place_layout='grid'), 'place_layout'),
    (dict(place_layout='grid'), 'place_layout'),
    (dict(PLACES, place_radius=-0.1), 'place_radius'),
    (dict(PLACES, place_jitter=-1.0), 'place_jitter'),
    (dict(PLACES, num_places=-1), 'num_places'),
    (dict(num_phases=0), 'num_phases'),
    (dict(num_phases=9), 'num_phases'),
    (dict(ring_radius=-0.1), 'ring_radius'),
    (dict(ring_radius=0.45), 'ring_radius'),  # the path would leave the frame
    (dict(ring_radius=0.1, ring_width=0.3), 'ring_width'),
    (dict(PLACES, ring_radius=0.1), 'ring_radius'),  # a ring or places, not both
    (dict(ring_radius=0.2, ring_arc=1.5), 'ring_arc'),
    (dict(ring_arc=0.5), 'ring_arc'),  # no ring to take an arc of
    (dict(unknown_knob=1), 'unknown field'),
  ],
)
def test_bad_parameters_name_the_field(tmp_path, fields, message):
  config = _config(tmp_path)
  with pytest.raises(ValueError, match=message):
    config.synthetic.update(fields)
    synthetic.SyntheticParams.from_config(config.synthetic)


def test_the_defaults_have_one_home():
  # SyntheticParams takes its defaults from the config section: the same fields, the same values.
  section = data_config.get_synthetic_config().to_dict()
  assert dataclasses.asdict(synthetic.SyntheticParams()) == section


# The demo's benchmark (configs/demo.py): a ring of places, two phases of colour pairs.
RING = demo.get_config().data.synthetic.to_dict()


def test_phases_put_the_class_in_two_halves_of_the_clip():
  params = synthetic.SyntheticParams(**RING)
  assert params.num_identities == 4 and params.num_codes == 16
  np.testing.assert_array_equal(params.phase_of_frame(), [0, 0, 0, 0, 1, 1, 1, 1])
  assert params.class_names()[:2] == ('red|blue>red|blue right', 'red|blue>yellow|green right')
  assert params.phase_identities(6) == (1, 2)  # label 6 = 1 * 4 + 2: yellow|green, magenta|cyan
  assert len(set(params.class_names())) == 16
  with pytest.raises(ValueError, match='num_classes'):
    synthetic.SyntheticParams(**dict(RING, num_classes=12)).validate()  # 12 is no square


def test_the_evidence_is_where_the_generator_says_on_a_continuous_ring():
  params = synthetic.SyntheticParams(**RING)
  params.validate()
  size, middle = params.frame_size, (params.frame_size - 1) / 2
  centres = []
  for index in range(48):
    label = index % params.num_classes
    video, target_xy = synthetic.render_video(params, label, 'validation', index)
    path = _pixel(target_xy, size)
    step = np.diff(path, axis=0)  # moving right at 0.8-1.2 x speed
    assert np.all(step[:, 0] >= 0.8 * params.speed - 1e-4) and np.all(step[:, 1] == 0)
    assert np.all(np.abs(path - middle) + params.margin <= middle)  # inside the frame
    centres.append(path.mean(0) - middle)
    # Each phase's colour pair at target_xy, on the target's left and right halves.
    _, code, _ = params.split_label(label)
    phases = params.phase_identities(code)
    for t in range(params.num_frames):
      left, right = synthetic.IDENTITIES[phases[params.phase_of_frame()[t]]]
      x, y = np.round(path[t]).astype(int)
      frame = video[t].astype(np.float32) / 255
      assert np.abs(frame[y, x - 2] - synthetic.COLOURS[left]).max() < 0.2, (index, t)
      assert np.abs(frame[y, x + 2] - synthetic.COLOURS[right]).max() < 0.2, (index, t)
      # Nothing else in the frame has the target's colours (no distractors): away from it,
      # every pixel is background.
      yy, xx = np.mgrid[0:size, 0:size]
      away = np.maximum(np.abs(xx - path[t, 0]), np.abs(yy - path[t, 1])) > params.margin + 1
      assert np.abs(frame[away] - synthetic.COLOURS[left]).max(-1).min() > 0.2
  radius = np.hypot(*np.array(centres).T) / (size - 1)
  half = params.ring_width / 2 + (params.place_jitter * np.sqrt(2)) / (size - 1)
  assert np.all(np.abs(radius - params.ring_radius) <= half + 1e-6)
  angles = np.arctan2(*np.array(centres).T[::-1])
  assert np.histogram(angles, bins=4, range=(-np.pi, np.pi))[0].min() >= 6  # every quadrant


@pytest.mark.parametrize('arc', [0.25, 1.0])
def test_ring_arc_puts_the_evidence_in_the_sector_of_its_first_identity(arc):
  params = synthetic.SyntheticParams(**dict(RING, ring_arc=arc))
  params.validate()
  size, middle = params.frame_size, (params.frame_size - 1) / 2
  sector_width = 2 * np.pi / params.num_identities
  offsets, first = [], []
  for index in range(64):
    label = index % params.num_classes
    _, target_xy = synthetic.render_video(params, label, 'validation', index)
    dx, dy = _pixel(target_xy, size).mean(0) - middle
    sector = params.phase_identities(params.split_label(label)[1])[0]
    # The angle from the sector's centre, in (-pi, pi]; y points down (clockwise).
    offsets.append(np.angle(np.exp(1j * (np.arctan2(dy, dx) - sector * sector_width))))
    first.append(sector)
  offsets = np.array(offsets)
  # Within the arc, up to the jitter's angle at the ring's inner edge.
  inner = (params.ring_radius - params.ring_width / 2) * (size - 1)
  slack = np.arctan(params.place_jitter * np.sqrt(2) / inner)
  assert np.all(np.abs(offsets) <= arc * sector_width / 2 + slack + 1e-6)
  # Uniform on it, not on its centre: both halves of the arc, and most of its width, are used.
  assert (offsets < 0).sum() >= 16 and (offsets > 0).sum() >= 16
  assert np.ptp(offsets) >= 0.75 * arc * sector_width
  assert set(first) == set(range(params.num_identities))
  # The same draws with ring_arc = 0 spread over the whole ring, whatever the class.
  assert params.ring_angle(5, 0.75) == pytest.approx(
    2 * np.pi * (1 + arc * 0.25) / params.num_identities
  )
  assert dataclasses.replace(params, ring_arc=0.0).ring_angle(5, 0.75) == pytest.approx(1.5 * np.pi)


def _half_extent(glimpse_pixels: int, size: int) -> float:
  """Half the side (pixels) of the square a glimpse's samples span (docs/design.md 1.3):
  sample j reads pixel (s u_j + l + 1) / 2 (size - 1), s = g / size, u in [-1, 1]."""
  return glimpse_pixels / size * (size - 1) / 2


def _demo_geometry():
  config = demo.get_config()
  params = synthetic.SyntheticParams.from_config(config.data.synthetic)
  m = config.model
  return params, m.glimpse_patches, m.image_size // m.patch_size, m.glimpse_patches * m.patch_size


def test_the_demo_glimpse_is_in_the_papers_regime_and_the_half_extent_is_the_crops():
  params, patches, grid, g = _demo_geometry()
  assert 0.29 <= g / params.frame_size <= 0.57
  assert params.target_size + 2 < g  # the evidence (with its outline) is smaller than a glimpse
  size = params.frame_size
  half = _half_extent(g, size)
  box = np.asarray(glimpse.box(np.array([[0.1, -0.3]]), g, (size, size)))[0]
  np.testing.assert_allclose(box[2] - box[0], 2 * half, rtol=1e-5)
  np.testing.assert_allclose((box[0] + box[2]) / 2, 1.1 * (size - 1) / 2, rtol=1e-5)


def _in_view(centre_xy: np.ndarray, target_xy: np.ndarray, half: float) -> np.ndarray:
  """Whether the target's centre lies inside a glimpse centred at centre_xy (pixels)."""
  return np.all(np.abs(target_xy - centre_xy) <= half, axis=-1)


def _share_in_view(centre_xy: np.ndarray, target_xy: np.ndarray, half: float, reach: float):
  """The share of the target's square (half side `reach`, its outline included) that lies inside
  a glimpse centred at centre_xy (pixels)."""
  lo = np.maximum(centre_xy - half, target_xy - reach)
  hi = np.minimum(centre_xy + half, target_xy + reach)
  return np.prod(np.clip(hi - lo, 0, None), axis=-1) / (2 * reach) ** 2


def test_fixed_and_random_glimpses_miss_the_evidence_in_most_videos():
  params, patches, grid, g = _demo_geometry()
  size = params.frame_size
  half = _half_extent(g, size)
  labels = synthetic.labels_for_split(params, 'validation')
  paths = np.stack(
    [
      _pixel(synthetic.render_video(params, int(label), 'validation', i)[1], size)
      for i, label in enumerate(labels[:1000])
    ]
  )  # (1000, T, 2) pixels
  # A fixed glimpse: the share of videos where the target's centre, or half of the target, is in
  # view at ANY frame (generous: the class needs it in both halves of the clip). A sliver of the
  # target is another matter: the centre glimpse touches its outline in most frames
  # (docs/demo_experiments.md).
  for name in ('center', 'bottom_left'):
    loc = _pixel(np.asarray(glimpse.fixed_location(name, patches, grid)), size)
    assert _in_view(loc, paths, half).any(axis=1).mean() < 0.5, name
    half_seen = _share_in_view(loc, paths, half, params.margin) >= 0.5
    assert half_seen.any(axis=1).mean() < 0.5, name
  # Any fixed glimpse (a 25 x 25 grid of centres over the frame): the class says which arc of the
  # ring the target is on, but no single place sees the target's centre in most videos.
  grid_px = np.linspace(half, size - 1 - half, 25)
  best = max(
    _in_view(np.array([x, y]), paths, half).any(axis=1).mean() for x in grid_px for y in grid_px
  )
  assert best < 0.5
  # Uniform random glimpses, l ~ U(-1, 1)^2 independently per frame: the centre's pixel is
  # uniform on [0, size - 1] per axis, so the chance that the target's centre is in view at frame
  # t is the product over the axes of |[p - half, p + half] & [0, size - 1]| / (size - 1).
  lo, hi = np.maximum(paths - half, 0), np.minimum(paths + half, size - 1)
  p_t = np.prod((hi - lo) / (size - 1), axis=-1)  # (1000, T)
  assert p_t.mean() < 0.2
  p_both = (1 - np.prod(1 - p_t[:, :4], axis=1)) * (1 - np.prod(1 - p_t[:, 4:], axis=1))
  assert p_both.mean() < 0.5  # seen in both halves of the clip, as the class needs
  # The closed form against the evaluation's own uniform draws, and half of the target in view.
  draws = _pixel(
    np.asarray(strategies.random_locations('uniform', 0, 0, jnp.arange(1000), params.num_frames)),
    size,
  )
  assert abs(_in_view(draws, paths, half).mean() - p_t.mean()) < 0.01
  half_seen = _share_in_view(draws, paths, half, params.margin) >= 0.5
  assert (half_seen[:, :4].any(axis=1) & half_seen[:, 4:].any(axis=1)).mean() < 0.5
