"""GliTr: Algorithm 1 against a direct O(T^2) implementation, causality, gradients, sizes."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tiny import tiny_model_config

from glitr_jax import glimpse, inference
from glitr_jax.data import config as data_config_lib
from glitr_jax.models import config as model_config_lib
from glitr_jax.models import glitr, layers

CONFIG = tiny_model_config()
MODEL = glitr.GliTr.from_config(CONFIG)
PARAMS = MODEL.init(jax.random.key(0))
B, T = 2, CONFIG.num_frames
FRAMES = jax.random.normal(jax.random.key(1), (B, T, 32, 32, 3))
VARIABLES = {'params': PARAMS}


def smooth_frames(key, shape):
  """Low-frequency frames: a closed loop on white noise amplifies rounding (docs/design.md 1.3)."""
  b, t, h, w, c = shape
  y, x = jnp.meshgrid(jnp.linspace(0, 1, h), jnp.linspace(0, 1, w), indexing='ij')
  coef = jax.random.normal(key, (b, t, 1, 1, c, 3))
  return (
    coef[..., 0] * jnp.sin(3 * x + 1)[..., None]
    + coef[..., 1] * jnp.cos(2 * y - 0.5)[..., None]
    + coef[..., 2] * (x * y)[..., None]
  )


def recompute_reference(params, frames):
  """Algorithm 1 as the official code runs it: Tc and Tl over the whole prefix at every step."""
  b, t = frames.shape[:2]
  loc = MODEL.init_location(params, b)
  feats, logits, locs = [], [], []
  for i in range(t):
    g = glimpse.extract(frames[:, i], loc, MODEL.glimpse_pixels)
    feats.append(MODEL.encode_glimpses(params, g, loc))
    locs.append(loc)
    prefix = jnp.stack(feats, axis=1)
    logits.append(MODEL.classify(params, prefix)[:, -1])
    loc = MODEL.locate(params, prefix)[:, -1]
  return {
    'logits': jnp.stack(logits, 1),
    'locations': jnp.stack(locs, 1),
    'features': jnp.stack(feats, 1),
  }


def test_student_forward_equals_the_prefix_recomputation_of_algorithm_1():
  # Non-trivial locations: a trained Tl moves; scale its head so glimpses wander.
  params = jax.tree.map(lambda x: x, PARAMS)
  params['temploc_head']['head']['kernel'] = params['temploc_head']['head']['kernel'] * 30.0
  frames = smooth_frames(jax.random.key(2), FRAMES.shape)
  out = inference.student_forward({'params': params}, CONFIG, frames)
  ref = recompute_reference(params, frames)
  assert float(jnp.abs(out['locations'][:, 1:] - out['locations'][:, :1]).max()) > 0.05
  for key in ('logits', 'locations', 'features'):
    np.testing.assert_allclose(out[key], ref[key], atol=1e-5, err_msg=key)


def test_online_steps_with_caches_equal_student_forward():
  out = inference.student_forward(VARIABLES, CONFIG, FRAMES)
  step = jax.jit(MODEL.student_step)
  state = MODEL.init_step_state(PARAMS, B)
  logits, locs = [], []
  for t in range(T):
    state, o = step(PARAMS, state, FRAMES[:, t])
    logits.append(o['logits'])
    locs.append(o['location'])
  np.testing.assert_allclose(jnp.stack(logits, 1), out['logits'], atol=1e-5)
  np.testing.assert_allclose(jnp.stack(locs, 1), out['locations'], atol=1e-5)


def test_student_is_causal_in_time():
  base = inference.student_forward(VARIABLES, CONFIG, FRAMES)
  for t_changed in range(1, T):
    out = inference.student_forward(VARIABLES, CONFIG, FRAMES.at[:, t_changed].add(3.0))
    for key in ('logits', 'features'):
      np.testing.assert_array_equal(out[key][:, :t_changed], base[key][:, :t_changed])
    # Where glimpse t is taken depends on glimpses before t only.
    np.testing.assert_array_equal(
      out['locations'][:, : t_changed + 1], base['locations'][:, : t_changed + 1]
    )
    assert not np.allclose(out['logits'][:, t_changed], base['logits'][:, t_changed])


def test_teacher_forward_is_causal_and_its_locations_come_from_tl():
  out = inference.teacher_forward(VARIABLES, CONFIG, FRAMES)
  assert out['logits'].shape == (B, T, CONFIG.num_classes)
  assert out['features'].shape == (B, T, CONFIG.hidden_size)
  np.testing.assert_array_equal(out['locations'][:, 0], np.zeros((B, 2)))
  preds = MODEL.locate(PARAMS, out['features'])
  np.testing.assert_allclose(out['locations'][:, 1:], preds[:, :-1], atol=1e-6)
  changed = inference.teacher_forward(VARIABLES, CONFIG, FRAMES.at[:, 2].add(1.0))
  np.testing.assert_array_equal(changed['logits'][:, :2], out['logits'][:, :2])


def test_fixed_locations_override_the_policy():
  locs = jnp.broadcast_to(jnp.array([0.3, -0.5]), (B, T, 2))
  out = inference.student_forward(VARIABLES, CONFIG, FRAMES, locs)
  np.testing.assert_array_equal(out['locations'], locs)
  feats = MODEL.glimpse_features(PARAMS, FRAMES[:, 1], locs[:, 1])
  np.testing.assert_allclose(out['features'][:, 1], feats, atol=1e-5)


def loss_of_locations(params, frames, kind):
  if kind == 'student':
    out = MODEL.student_forward(params, frames, train=True, rng=jax.random.key(5))
  else:
    out = MODEL.teacher_forward(params, frames, train=True, rng=jax.random.key(5))
  return jnp.sum(out['locations'] ** 2 + out['locations'])


@pytest.mark.parametrize('kind', ['student', 'teacher'])
def test_no_gradient_from_tl_reaches_tf(kind):
  grads = jax.jit(jax.grad(loss_of_locations), static_argnums=2)(PARAMS, FRAMES, kind)
  for leaf in jax.tree.leaves(grads['backbone']):
    assert float(jnp.abs(leaf).max()) == 0.0
  for leaf in jax.tree.leaves(grads['temporal_head']):
    assert float(jnp.abs(leaf).max()) == 0.0
  assert float(jnp.abs(grads['temploc_head']['head']['kernel']).max()) > 0


def test_gradients_flow_through_the_crop_into_tl():
  def loss(params):
    out = MODEL.student_forward(params, FRAMES)
    return jnp.sum(out['logits'] ** 2)

  grads = jax.jit(jax.grad(loss))(PARAMS)
  # The logits reach Tl and init_loc only through where the glimpses were taken.
  assert float(jnp.abs(grads['temploc_head']['init_loc']).max()) > 0
  assert float(jnp.abs(grads['temploc_head']['head']['kernel']).max()) > 0
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_scratch_init_copies_tc_into_tl():
  tc, tl = PARAMS['temporal_head'], PARAMS['temploc_head']
  assert set(tl) == (set(tc) | {'init_loc'})
  for name in tc:
    if name != 'head':
      jax.tree.map(np.testing.assert_array_equal, tl[name], tc[name])
  assert tl['head']['kernel'].shape == (CONFIG.temporal_hidden_size, 2)


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_vit_s16_parameter_count_equals_timm_without_head():
  config = model_config_lib.get_model_config()
  shapes = jax.eval_shape(glitr.GliTr.from_config(config).init, jax.random.key(0))
  # timm's vit_small_patch16_224 has 22,050,664 parameters; its head is 384 * 1000 + 1000.
  assert count(shapes['backbone']) == 21_665_664 == 22_050_664 - 385_000
  assert shapes['backbone']['pos_embed'].shape == (1, 196, 384)
  assert shapes['temporal_head']['tmp_embed'].shape == (1, 16, 768)


@pytest.mark.parametrize(
  'override, field',
  [
    (dict(glimpse_patches=15), 'model.glimpse_patches'),
    (dict(hidden_size=100), 'model.hidden_size'),
    (dict(temporal_hidden_size=100), 'model.temporal_hidden_size'),
    (dict(image_size=230), 'model.image_size'),
    (dict(num_frames=0), 'model.num_frames'),
    (dict(drop_path_rate=1.5), 'model.drop_path_rate'),
  ],
)
def test_invalid_configs_name_the_field(override, field):
  config = model_config_lib.get_model_config(**override)
  with pytest.raises(ValueError, match=field.replace('.', r'\.')):
    glitr.GliTr.from_config(config)


def test_unknown_config_field_is_an_error():
  with pytest.raises(KeyError, match='glimpse_size'):
    model_config_lib.get_model_config(glimpse_size=96)
  with pytest.raises(KeyError, match='frame_hieght'):
    data_config_lib.get_data_config(frame_hieght=256)
  assert model_config_lib.get_model_config(num_classes=5).num_classes == 5
  model_config_lib.get_model_config().new_field = 1  # Returned unlocked: configs may add fields.


def test_inference_compiles_once_per_config():
  inference.student_forward(VARIABLES, CONFIG, FRAMES)
  copy = ml_collections.ConfigDict(CONFIG.to_dict())
  assert inference.model_for(copy) is inference.model_for(CONFIG)


def test_sincos_position_tables():
  """posemb_init='sincos': 2-D tables, columns from x and rows from y; 1-D for time."""
  table = np.asarray(layers.posemb_init('sincos', 2)(None, (1, 16, 8)))[0]  # 4 x 4 grid, D = 8
  x_part, y_part = table[:, :4], table[:, 4:]
  np.testing.assert_allclose(table[0], [0, 0, 1, 1, 0, 0, 1, 1], atol=1e-7)  # sin 0, cos 0
  for i in range(16):
    y, x = divmod(i, 4)
    np.testing.assert_allclose(x_part[i], x_part[x], atol=1e-7)  # depends on the column only
    np.testing.assert_allclose(y_part[i], y_part[4 * y], atol=1e-7)
    np.testing.assert_allclose(x_part[i][0], np.sin(x), atol=1e-6)  # frequency 1 at channel 0
  assert len({tuple(np.round(row, 5)) for row in table}) == 16  # every patch distinct
  temporal = np.asarray(layers.posemb_init('sincos', 1)(None, (1, 5, 6)))[0]
  np.testing.assert_allclose(temporal[:, 0], np.sin(np.arange(5)), atol=1e-6)
  np.testing.assert_allclose(temporal[:, 3], np.cos(np.arange(5)), atol=1e-6)

  model = glitr.GliTr.from_config(tiny_model_config(posemb_init='sincos'))
  params = model.init(jax.random.key(0))
  grid = model.grid_size
  d = params['backbone']['pos_embed'].shape[-1]
  expected = layers.posemb_init('sincos', 2)(None, (1, grid * grid, d))
  np.testing.assert_allclose(params['backbone']['pos_embed'], expected, atol=1e-6)
  tmp = params['temporal_head']['tmp_embed']
  np.testing.assert_allclose(tmp, layers.posemb_init('sincos', 1)(None, tmp.shape), atol=1e-6)
  with pytest.raises(ValueError, match=r'model\.posemb_init'):
    glitr.GliTr.from_config(tiny_model_config(posemb_init='learned'))
