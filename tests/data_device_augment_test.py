"""The device path of the training augmentation (`data.augment.device=True`) against the PIL path.

Tolerances (levels of 0..255; float32 where PIL computes in float64, or in float32 in another
order, flips a whole-number result that lies on an integer boundary; measured on this test's
images, the worst case is in brackets):
* Table ops (Invert, Posterize, Solarize, SolarizeAdd) and Equalize: exact (integer arithmetic).
* AutoContrast: within 1 level; PIL's float64 `int(v * scale + offset)` gives one less than the
  exact floor(255 (v - lo) / (hi - lo)) used here on 0.14% of (lo, hi, v) triples [0.005% of
  pixels differ].
* Blends (Color, Contrast, Brightness, Sharpness): within 1 level on <= 0.1% of pixels [exact].
* Geometric ops (bicubic): within 1 level on <= 0.5% of values [0.19%, TranslateYRel] (the
  float32 source coordinate is ~1e-5 px from PIL's float64 one; the truncation to uint8 then
  flips a sample that lies within ~1e-4 of an integer; a source point within 1e-3 px of the
  frame's border counts as on it, where PIL's float64 test decides).
* The crop (bilinear): 1e-3 levels (the same float32 arithmetic as the host's NumPy crop).
* Whole clips (RandAugment, crop, normalisation), many draws: mean |diff| <= 0.05 levels and
  99.5% of values within 1 level [200 clips: mean 0.0007, 99.995%; the largest, 37 levels, is
  an output pixel that samples a border point taken as fill on one path and frame on the other].
"""

import data_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tiny import tiny_train_config

from configs import demo, jester_student, jester_teacher, ssv2_student, ssv2_teacher
from glitr_jax import optim, pixels, sharding
from glitr_jax.data import clips, device_augment, transforms, video_io
from glitr_jax.data import config as config_lib
from glitr_jax.data import rand_augment as ra
from glitr_jax.models import glitr
from glitr_jax.train import steps

POLICY = 'rand-m7-n4-mstd0.5-inc1'
FRAME_H, FRAME_W = 40, 56
CANVAS = (48, 64)
LEVEL = 1.0 / 255.0 / float(pixels.IMAGENET_STD.min())  # one level in normalised units, at most


def textured_frames(seed: int, num_frames: int, height: int, width: int) -> np.ndarray:
  """uint8 (n, H, W, 3): smooth colour gradients with noise (every level and edge occurs)."""
  rng = np.random.default_rng(seed)
  smooth = fx.smooth_frames(seed, num_frames, height, width).astype(np.float32)
  return np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype(np.uint8)


def in_canvas(frames: np.ndarray, canvas=CANVAS, seed: int = 0) -> np.ndarray:
  """The frames in the top-left corner of a canvas whose padding is random (it must not count)."""
  out = np.random.default_rng(seed).integers(0, 256, (len(frames), *canvas, 3), dtype=np.uint8)
  out[:, : frames.shape[1], : frames.shape[2]] = frames
  return out


def device_layer(frames: np.ndarray, name: str, args: tuple) -> np.ndarray:
  """One op through `device_augment.rand_augment_layer`, its parameters from `device_params`."""
  params = ra.device_params([(name, args)], frames.shape[2], frames.shape[1], 1)
  out = jax.jit(device_augment.rand_augment_layer)(
    jnp.asarray(in_canvas(frames))[None],
    jnp.array([frames.shape[1:3]], jnp.int32),
    *(jnp.asarray(params[k]) for k in ('ra_kind', 'ra_affine', 'ra_factor', 'ra_lut')),
  )
  return np.asarray(out)[0, :, : frames.shape[1], : frames.shape[2]]


# (name, args, largest |diff|, largest fraction of values that differ): the module docstring.
OP_CASES = [
  ('Rotate', (21.7,), 1, 5e-3),
  ('Rotate', (-18.3,), 1, 5e-3),
  ('ShearX', (0.21,), 1, 5e-3),
  ('ShearY', (-0.2,), 1, 5e-3),  # y' - 0.2 x' = 0 exactly at x' = 2.5: a point on the border
  ('TranslateXRel', (0.31,), 1, 5e-3),
  ('TranslateYRel', (-0.33,), 1, 5e-3),
  ('AutoContrast', (), 1, 1e-3),
  ('Equalize', (), 0, 0),
  ('Invert', (), 0, 0),
  ('PosterizeIncreasing', (2,), 0, 0),
  ('Posterize', (3,), 0, 0),
  ('SolarizeIncreasing', (77,), 0, 0),
  ('SolarizeAdd', (77,), 0, 0),
  ('ColorIncreasing', (1.63,), 1, 1e-3),
  ('ColorIncreasing', (0.37,), 1, 1e-3),
  ('ContrastIncreasing', (1.63,), 1, 1e-3),
  ('ContrastIncreasing', (0.37,), 1, 1e-3),
  ('BrightnessIncreasing', (1.63,), 1, 1e-3),
  ('BrightnessIncreasing', (0.37,), 1, 1e-3),
  ('SharpnessIncreasing', (1.63,), 1, 1e-3),
  ('SharpnessIncreasing', (0.37,), 1, 1e-3),
]


@pytest.mark.parametrize('name,args,max_diff,max_fraction', OP_CASES)
def test_each_rand_augment_op_matches_pil_on_fixed_parameters(name, args, max_diff, max_fraction):
  frames = textured_frames(3, 2, FRAME_H, FRAME_W)
  pil = ra.apply_ops([Image.fromarray(f) for f in frames], [(name, args)])
  pil = np.stack([np.asarray(im) for im in pil])
  assert not np.array_equal(pil, frames)  # the op does something to these frames
  diff = np.abs(device_layer(frames, name, args).astype(np.int32) - pil.astype(np.int32))
  assert diff.max() <= max_diff, (name, diff.max())
  assert np.mean(diff > 0) <= max_fraction, (name, np.mean(diff > 0))


def test_equalize_and_autocontrast_tables_follow_pil_on_flat_and_two_level_frames():
  # Degenerate histograms: one level (identity), two levels, a frame that step rounds to 0.
  flat = np.full((1, FRAME_H, FRAME_W, 3), 77, np.uint8)
  two = flat.copy()
  two[:, :5] = 200
  few = flat.copy()
  few[:, 0, :3] = 9  # 3 pixels below the top level: step = 3 // 255 = 0
  for frames in (flat, two, few):
    for name in ('Equalize', 'AutoContrast'):
      pil = np.asarray(ra.apply_ops([Image.fromarray(frames[0])], [(name, ())])[0])
      np.testing.assert_array_equal(device_layer(frames, name, ())[0], pil, err_msg=name)


def test_skipped_layers_and_undrawn_kinds_leave_the_frames_unchanged():
  frames = textured_frames(4, 2, FRAME_H, FRAME_W)
  params = ra.device_params([], FRAME_W, FRAME_H, 2)
  assert (params['ra_kind'] == ra.KIND_NONE).all()
  out = device_augment.rand_augment_layer(
    jnp.asarray(in_canvas(frames))[None].repeat(2, 0),
    jnp.array([[FRAME_H, FRAME_W]] * 2, jnp.int32),
    jnp.array([ra.KIND_NONE, ra.KIND_AFFINE], jnp.int32),
    jnp.asarray(np.stack([ra.IDENTITY_MATRIX, ra._rotate_matrix(20.0, FRAME_W, FRAME_H)])),
    jnp.ones(2, jnp.float32),
    jnp.asarray(params['ra_lut']),
  )
  np.testing.assert_array_equal(np.asarray(out)[0], in_canvas(frames))  # padding included


@pytest.mark.parametrize(
  'box',
  [(0, 0, FRAME_H, FRAME_W), (3, 5, 17, 29), (FRAME_H - 7, FRAME_W - 9, 7, 9), (10, 0, 30, 20)],
)
def test_resized_crop_matches_the_host_crop(box):
  frames = textured_frames(5, 2, FRAME_H, FRAME_W)
  top, left, h, w = box
  host = transforms.resize_bilinear(frames[:, top : top + h, left : left + w], 24, 24)
  device = device_augment.resized_crop(
    jnp.asarray(in_canvas(frames)),
    jnp.array([FRAME_H, FRAME_W], jnp.int32),
    jnp.asarray(box, jnp.float32),
    24,
  )
  np.testing.assert_allclose(np.asarray(device), host, atol=1e-3)


def test_erasing_fills_the_box_of_each_clip_with_standard_normal_noise():
  video = jnp.zeros((3, 4, 32, 32, 3), jnp.float32)
  boxes = jnp.array([[1, 2, 3, 20, 25], [0, 0, 0, 30, 30], [1, 10, 0, 22, 32]], jnp.int32)
  out = np.asarray(device_augment.erase(video, boxes, jax.random.key(0)))
  for (apply, top, left, h, w), clip in zip(np.asarray(boxes), out):
    inside = np.zeros((32, 32), bool)
    inside[top : top + h, left : left + w] = apply == 1
    assert (clip[:, ~inside] == 0).all()
    if apply:
      noise = clip[:, inside]
      assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05
      assert not np.array_equal(clip[0][inside], clip[1][inside])  # fresh noise per frame


def _video_jpeg(seed: int, num_frames: int, height: int, width: int, noise=True) -> np.ndarray:
  make = textured_frames if noise else fx.smooth_frames
  return np.array(video_io.encode_frames(make(seed, num_frames, height, width), quality=95), object)


def _spec(image_size=32, erasing=0.0, canvas=CANVAS, policy=POLICY):
  return clips.ClipSpec(
    num_frames=4,
    image_size=image_size,
    eval_short_side=image_size,
    rand_augment=ra.RandAugment.parse(policy) if policy else None,
    random_erasing=erasing,
    device=True,
    canvas=canvas,
  )


def _augment(host_clips: list[dict], image_size: int, erasing: bool) -> np.ndarray:
  batch = {k: jnp.asarray(np.stack([c[k] for c in host_clips])) for k in device_augment.PARAM_KEYS}
  fn = jax.jit(
    lambda b: device_augment.augment_batch(
      b, jax.random.key(0), image_size=image_size, random_erasing=erasing
    )
  )
  return np.asarray(fn(batch))


def test_device_clips_match_pil_clips_over_many_draws():
  jpeg = _video_jpeg(6, 9, FRAME_H, FRAME_W)
  spec = _spec()
  seeds = range(48)
  host = [clips.device_train_clip(jpeg, spec, np.random.default_rng(s)) for s in seeds]
  device = _augment(host, spec.image_size, erasing=False)
  pil = np.stack([clips.train_clip(jpeg, spec, np.random.default_rng(s)) for s in seeds])
  diff = np.abs(device - pil) / LEVEL
  assert diff.mean() <= 0.05 and np.mean(diff <= 1.0) >= 0.995, (diff.mean(), np.mean(diff <= 1))
  kinds = np.concatenate([h['ra_kind'] for h in host])
  assert set(np.unique(kinds)) >= {ra.KIND_NONE, ra.KIND_AFFINE, ra.KIND_LUT}  # ops were drawn


def test_device_path_erases_the_box_the_pil_path_erases():
  jpeg = _video_jpeg(7, 9, FRAME_H, FRAME_W)
  spec = _spec(erasing=1.0, policy='')
  for seed in range(6):
    host = clips.device_train_clip(jpeg, spec, np.random.default_rng(seed))
    pil = clips.train_clip(jpeg, spec, np.random.default_rng(seed))
    clean = _augment([host], spec.image_size, erasing=False)[0]
    apply, top, left, h, w = host['erase_box']
    noisy = np.any(np.abs(pil - clean) > 1e-3, axis=(0, 3))  # where the PIL path put noise
    rows, cols = np.nonzero(noisy)
    assert apply == 1
    found = (rows.min(), cols.min(), rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min())
    assert found == (top, left, h, w)


def reference_crop_sides(height: int, width: int, n: int, rng: np.random.Generator):
  """(h, w) of n crops by torchvision's RandomResizedCrop.get_params (VideoMAE's recipe),
  vectorised: ten tries of area U(0.08, 1) and log-uniform aspect in [3/4, 4/3], else the centred
  fallback (the whole frame when its aspect is within the range)."""
  target = rng.uniform(0.08, 1.0, (n, 10)) * height * width
  aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), (n, 10)))
  w, h = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = np.argmax(fits, axis=1)
  rows = np.arange(n)
  assert 3 / 4 <= width / height <= 4 / 3
  found = fits.any(axis=1)
  return np.where(found, h[rows, first], height), np.where(found, w[rows, first], width)


def test_device_path_draws_follow_the_recipe():
  # 4000 clips of a tiny video through the device path's host side: RandAugment's choices,
  # magnitudes (N(7, 0.5) clipped to [0, 10], inc1's increasing ops), the crop's area and aspect
  # and the erasing's probability and box, against the recipe (docs/design.md section 4.3).
  # Tolerances are ~4 standard errors of each statistic.
  jpeg = _video_jpeg(8, 4, 30, 40)
  spec = _spec(erasing=0.25, canvas=(32, 40))
  rng = np.random.default_rng(2024)
  n = 4000
  kinds, crops, erases, rotations, luts = [], [], [], [], []
  for _ in range(n):
    host = clips.device_train_clip(jpeg, spec, rng)
    kinds.append(host['ra_kind'])
    crops.append(host['crop_box'])
    erases.append(host['erase_box'])
    for kind, matrix, lut in zip(host['ra_kind'], host['ra_affine'], host['ra_lut']):
      if kind == ra.KIND_AFFINE and abs(matrix[1]) > 1e-6 and abs(matrix[3]) > 1e-6:
        rotations.append(np.degrees(np.arctan2(matrix[1], matrix[0])))  # Rotate (both nonzero)
      if kind == ra.KIND_LUT:
        luts.append(lut)
  kinds = np.array(kinds)
  applied = (kinds != ra.KIND_NONE).sum(1)  # Binomial(4, 1/2) ops per clip
  assert abs(applied.mean() - 2.0) < 0.07 and abs(applied.var() - 1.0) < 0.1
  # The 15 increasing ops, uniform with replacement: 5 geometric, 4 tables (Invert, Posterize,
  # Solarize, SolarizeAdd), AutoContrast, Equalize, 4 blends.
  freq = {k: np.mean(kinds[kinds != ra.KIND_NONE] == k) for k in range(1, 9)}
  expected = {1: 5 / 15, 2: 4 / 15, **{k: 1 / 15 for k in range(3, 9)}}
  for k, p in expected.items():
    assert abs(freq[k] - p) < 4 * np.sqrt(p * (1 - p) / (n * 2)), (k, freq[k], p)
  # Rotate: degrees = +-30 m / 10, m ~ N(7, 0.5): |degrees| / 3 has mean 7, std 0.5; both signs.
  magnitude = np.abs(rotations) / 3.0
  assert len(rotations) > 400
  assert abs(magnitude.mean() - 7.0) < 0.1 and abs(magnitude.std() - 0.5) < 0.07
  assert abs(np.mean(np.array(rotations) > 0) - 0.5) < 0.1
  # PosterizeIncreasing keeps 4 - int(0.4 m) bits: 1 bit when m >= 7.5 (P = 0.159), else 2;
  # its table is v & mask (mask 128: 1 bit, 192: 2 bits).
  masks = [int(lut.max()) for lut in luts if np.array_equal(lut, np.arange(256) & lut.max())]
  assert len(masks) > 300 and set(masks) <= {128, 192}
  assert abs(np.mean(np.array(masks) == 128) - 0.159) < 0.07
  # Crops: area fraction in [0.08, 1], aspect (w / h) in [3/4, 4/3] (rounding aside), uniform
  # placement; the frames are decoded at full size (scale 1) here.
  top, left, h, w = np.array(crops).T
  area = h * w / (30 * 40)
  ref_h, ref_w = reference_crop_sides(30, 40, n, np.random.default_rng(7))
  ref_area = ref_h * ref_w / (30 * 40)
  assert area.min() >= 0.07 and area.max() <= 1.0
  assert abs(area.mean() - ref_area.mean()) < 4 * np.sqrt(2 / n) * ref_area.std()
  assert abs(np.mean(area == 1.0) - np.mean(ref_area == 1.0)) < 0.03  # the fallback's share
  log_aspect = np.log(w / h)
  assert np.all(np.abs(log_aspect) < np.log(4 / 3) + 0.15) and abs(log_aspect.mean()) < 0.03
  assert abs(log_aspect.std() - np.log(ref_w / ref_h).std()) < 0.02
  assert np.all((top >= 0) & (top + h <= 30) & (left >= 0) & (left + w <= 40))
  # Erasing: probability 0.25, area 0.02-1/3 of the 32 x 32 output, inside it.
  apply, etop, eleft, eh, ew = np.array(erases).T
  assert abs(apply.mean() - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n)
  on = apply == 1
  earea = eh[on] * ew[on] / 32**2
  assert earea.min() >= 0.015 and earea.max() <= 1 / 3 + 0.02
  assert np.all((etop[on] + eh[on] <= 32) & (eleft[on] + ew[on] <= 32))


def test_decode_scale_is_what_the_crop_allows_and_one_for_the_paper_recipe():
  # SSv2 at 224 px: frames 256 px tall are never cropped to twice the output.
  assert all(
    clips.decode_scale((256, w), (h, cw), 224, (256, 456)) == 1
    for w in (340, 456)
    for h in (30, 256)
    for cw in (40, w)
  )
  assert clips.decode_scale((256, 340), (256, 300), 112, (256, 456)) == 2
  assert clips.decode_scale((256, 340), (120, 300), 112, (256, 456)) == 1
  assert clips.decode_scale((1024, 1360), (1000, 1200), 112, (256, 456)) == 8
  assert clips.decode_scale((512, 680), (60, 60), 224, (256, 456)) == 2  # to fit the canvas


def test_frames_are_decoded_at_the_size_the_crop_allows():
  jpeg = _video_jpeg(9, 5, 128, 160, noise=False)
  spec = _spec(image_size=32, policy='', canvas=(128, 160))
  seen = set()
  for seed in range(30):
    host = clips.device_train_clip(jpeg, spec, np.random.default_rng(seed))
    pil = clips.train_clip(jpeg, spec, np.random.default_rng(seed))
    # The crop box the PIL path used, from the same draws, in stored pixels:
    rng = np.random.default_rng(seed)
    clips.sampling.train_frame_indices(5, 4, rng)
    box = transforms.random_resized_crop_params(128, 160, spec.scale, spec.ratio, rng)
    scale = clips.decode_scale((128, 160), box[2:], 32, spec.canvas)
    seen.add(scale)
    np.testing.assert_array_equal(host['extent'], [-(-128 // scale), -(-160 // scale)])
    np.testing.assert_allclose(host['crop_box'], np.array(box) / scale, rtol=1e-6)
    assert not host['frames'][:, host['extent'][0] :].any()  # the padding is zero
    diff = np.abs(_augment([host], 32, erasing=False)[0] - pil) / LEVEL
    if scale == 1:  # the PIL path's pixels
      assert diff.max() < 1e-3
    else:  # the DCT's block means against bilinear taps of the full frame, on smooth frames
      assert diff.mean() < 0.5 and diff.max() < 4, (diff.mean(), diff.max())  # [0.19, 2.0]
  assert seen == {1, 2}


def test_frames_larger_than_the_canvas_are_shrunk_to_fit():
  jpeg = _video_jpeg(10, 4, 30, 90)
  spec = _spec(image_size=16, policy='', canvas=(24, 40))
  host = clips.device_train_clip(jpeg, spec, np.random.default_rng(0))
  h, w = host['extent']
  assert w == 40 and abs(h - 40 * 30 / 90) <= 1  # the aspect is kept
  top, left, ch, cw = host['crop_box']
  assert 0 <= top and top + ch <= h + 1e-4 and 0 <= left and left + cw <= w + 1e-4


def test_config_field_chooses_the_path_and_is_checked():
  assert config_lib.get_data_config().augment.device is False  # the default: the host path
  for module in (ssv2_teacher, ssv2_student, jester_teacher, jester_student):
    assert module.get_config().data.augment.device is True, module.__name__
  assert demo.get_config().data.augment.device is False
  c = config_lib.get_data_config()
  c.augment.device, c.augment.random_resized_crop = True, False
  with pytest.raises(ValueError, match='data.augment.device=True'):
    config_lib.validate(c)
  c.augment.random_resized_crop, c.augment.device_canvas = True, (0, 64)
  with pytest.raises(ValueError, match='data.augment.device_canvas'):
    config_lib.validate(c)


def _step_batches(config, jpeg, seeds):
  m = config.model
  spec = _spec(image_size=m.image_size, erasing=0.0, policy=config.data.augment.rand_augment)
  device, host = [], []
  for s in seeds:
    clip = clips.device_train_clip(jpeg, spec, np.random.default_rng(s))
    device.append({**clip, 'label': np.int32(s % m.num_classes)})
    pil = clips.train_clip(jpeg, spec, np.random.default_rng(s))
    host.append({'video': pil, 'label': np.int32(s % m.num_classes)})

  def stack(items):
    return {k: np.stack([x[k] for x in items]) for k in items[0]}

  b = config.batch_size
  return (
    [stack(device[i : i + b]) for i in range(0, len(device), b)],
    [stack(host[i : i + b]) for i in range(0, len(host), b)],
  )


def test_the_train_step_augments_on_device_as_the_host_does_and_shards():
  config = tiny_train_config('teacher')
  config.data.augment.rand_augment = 'rand-m7-n2-mstd0.5-inc1'  # two layers: a shorter compile
  config.data.augment.random_resized_crop = True
  config.data.augment.mixup, config.data.augment.cutmix = 0.8, 1.0
  jpeg = _video_jpeg(11, 9, FRAME_H, FRAME_W)
  device_batches, host_batches = _step_batches(config, jpeg, range(16))
  model = glitr.GliTr.from_config(config.model)

  def inputs(cfg, batch):
    return steps.stage_inputs(model, cfg, batch, jax.random.key(3), {})

  host_config = config.copy_and_resolve_references()
  device_config = config.copy_and_resolve_references()
  device_config.data.augment.device = True
  mixed_host = inputs(host_config, jax.tree.map(jnp.asarray, host_batches[0]))
  mixed_device = inputs(device_config, jax.tree.map(jnp.asarray, device_batches[0]))
  # The same clips, then the same mixup draw: equal within the clips' tolerance.
  diff = np.abs(np.asarray(mixed_device['video']) - np.asarray(mixed_host['video'])) / LEVEL
  assert diff.mean() <= 0.05 and np.mean(diff <= 1.0) >= 0.995
  np.testing.assert_allclose(mixed_device['targets'], mixed_host['targets'])

  # The jitted step on a batch sharded over four devices gives one device's losses.
  def losses(mesh):
    tx = optim.make_optimizer(device_config, 100, 10)
    state = sharding.replicate(steps.create_state(model.init(jax.random.key(0)), tx, 0), mesh)
    rep = sharding.replicated(mesh)
    step = jax.jit(
      steps.make_train_step(model, device_config, tx, optim.schedules(device_config, 100, 10)),
      in_shardings=(rep, sharding.batch_sharding(mesh), rep),
      out_shardings=(rep, rep),
    )
    out = []
    for batch in device_batches:
      state, metrics = step(state, sharding.to_global(batch, mesh), {})
      out.append(float(metrics['loss']))
    return out

  one = losses(sharding.make_mesh(devices=jax.devices()[:1]))
  np.testing.assert_allclose(losses(sharding.make_mesh(devices=jax.devices()[:4])), one, rtol=1e-5)
  assert all(np.isfinite(one))
