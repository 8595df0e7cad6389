"""OnlineEvaluator: each strategy's accuracy comes from the locations it claims, every example is
counted exactly once on any batch size and device count.

Two models: a fake one whose logits are a known function of where the glimpse was taken (so the
answer of every strategy can be computed independently, scenic's fixed-logits pattern), and the
tiny GliTr (the evaluator against direct student/teacher forwards).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tiny import tiny_model_config

from configs import common
from glitr_jax import sharding
from glitr_jax.eval import online, strategies
from glitr_jax.models import glitr

T = 4
NUM_EXAMPLES = 13  # divides none of the batch sizes used below
GRID, PATCHES = 4, 2  # bottom_left = (-0.5, 0.5)
# Class c is predicted where the glimpse is nearest ANCHORS[c].
ANCHORS = np.array([[0.0, 0.0], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, -0.5]], np.float32)
SHARPNESS = np.array([0.5, 2.0, 8.0, 40.0], np.float32)  # confidence grows with t


@dataclasses.dataclass(frozen=True)
class FakeModel:
  """GliTr's evaluation interface with known answers.

  The student's logits at t are -SHARPNESS[t] * |l_t - anchor_c|^2: it predicts the class whose
  anchor is nearest the glimpse location. Its own policy reads l_t from pixel (0, 0) of frame t,
  the teacher's locations are in pixel (0, 1), and the teacher's full-frame logits in row 1.
  """

  num_frames: int = T
  glimpse_patches: int = PATCHES
  grid_size: int = GRID
  glimpse_pixels: int = 16

  def student_forward(self, params, frames, *, locations=None):
    if locations is None:
      locations = frames[:, :, 0, 0, :2]
    d2_btc = jnp.sum((locations[:, :, None, :] - params['anchors']) ** 2, axis=-1)
    logits = -params['sharpness'][None, :, None] * d2_btc
    return {'logits': logits, 'locations': locations, 'features': d2_btc}

  def teacher_forward(self, params, frames):
    del params
    logits = frames[:, :, 1, : len(ANCHORS), 0]
    return {'logits': logits, 'locations': frames[:, :, 0, 1, :2], 'features': logits}


FAKE_PARAMS = {'anchors': jnp.asarray(ANCHORS), 'sharpness': jnp.asarray(SHARPNESS)}


def fake_data(seed: int = 0):
  """Frames carrying the policy's locations, the teacher's locations and logits; labels."""
  rng = np.random.default_rng(seed)
  frames = np.zeros((NUM_EXAMPLES, T, 2, 8, 3), np.float32)
  frames[:, :, 0, 0, :2] = rng.uniform(-1, 1, (NUM_EXAMPLES, T, 2))
  frames[:, :, 0, 1, :2] = rng.uniform(-1, 1, (NUM_EXAMPLES, T, 2))
  frames[:, :, 1, :5, 0] = rng.normal(size=(NUM_EXAMPLES, T, 5))
  labels = rng.integers(0, len(ANCHORS), NUM_EXAMPLES)
  return frames, labels


def padded_batches(frames, labels, batch_size):
  """The eval-iterator format: the last batch padded (mask False, index -1)."""
  n = len(frames)
  out = []
  for start in range(0, n, batch_size):
    k = min(n, start + batch_size) - start
    video = np.zeros((batch_size,) + frames.shape[1:], np.float32)
    video[:k] = frames[start : start + k]
    video[k:] = 0.3  # padding must never count, whatever it holds
    label = np.zeros(batch_size, np.int32)
    label[:k] = labels[start : start + k]
    mask = np.arange(batch_size) < k
    index = np.where(mask, np.arange(start, start + batch_size), -1).astype(np.int64)
    ids = np.array([f'video{i}' if i >= 0 else '' for i in index])
    out.append({'video': video, 'label': label, 'mask': mask, 'index': index, 'video_id': ids})
  return out


def nearest_anchor(locations):
  d2 = np.sum((np.asarray(locations)[..., None, :] - ANCHORS) ** 2, axis=-1)
  return np.argmin(d2, axis=-1)


def accuracy(predictions_nt, labels):
  return np.mean(predictions_nt == labels[:, None], axis=0)


def eval_config(num_seeds: int = 3) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = 'student'
  c.model = tiny_model_config()
  c.eval = common.get_base_config().eval  # every field the evaluator reads, then the test's
  c.eval.update(
    dict(batch_size=8, strategies=strategies.ALL, num_seeds=num_seeds, seed=0, gammas=(0.0, 0.5))
  )
  return c


FULL_PLAN = online.EvalPlan(
  strategies=strategies.ALL, num_seeds=3, seed=0, gammas=(0.0, 0.3, 0.6, 0.9, 1.01),
  histogram_bins=4, teacher_at_glitr=False, strategies_per_pass=3,  # 7 location sets: lax.map
)  # fmt: skip


@pytest.fixture(scope='module')
def fake_results():
  """The full plan on the fake model, for 1 and 4 devices and two batch sizes."""
  frames, labels = fake_data()
  out = {}
  for devices, batch_size in ((1, 8), (4, 8), (4, 4)):
    mesh = sharding.make_mesh(devices=jax.devices()[:devices])
    config = eval_config()
    config.eval.batch_size = batch_size
    evaluator = online.OnlineEvaluator(config, FakeModel(), mesh)
    out[(devices, batch_size)] = evaluator.run(
      FAKE_PARAMS,
      FAKE_PARAMS,
      plan=FULL_PLAN,
      batches=padded_batches(frames, labels, batch_size),
      num_examples_kept=3,
    )
  return frames, labels, out


def test_every_strategy_uses_the_locations_it_claims(fake_results):
  frames, labels, results = fake_results
  r = results[(4, 8)]
  assert r.num_examples == NUM_EXAMPLES
  acc = r.accuracy_per_t
  assert set(acc) == set(strategies.ALL)
  np.testing.assert_allclose(acc['glitr'], accuracy(nearest_anchor(frames[:, :, 0, 0, :2]), labels))
  # center: (0, 0) every step -> always anchor 0; bottom_left: (-0.5, 0.5) -> always anchor 1.
  np.testing.assert_allclose(acc['center'], np.full(T, np.mean(labels == 0)))
  np.testing.assert_allclose(acc['bottom_left'], np.full(T, np.mean(labels == 1)))
  assert np.mean(labels == 0) != np.mean(labels == 1)
  np.testing.assert_allclose(
    acc['teacher'], accuracy(nearest_anchor(frames[:, :, 0, 1, :2]), labels)
  )
  np.testing.assert_allclose(
    acc['teacher_full_frames'], accuracy(np.argmax(frames[:, :, 1, :5, 0], -1), labels)
  )
  index = jnp.arange(NUM_EXAMPLES)
  for name in strategies.RANDOM:
    per_seed = np.stack([
      accuracy(nearest_anchor(strategies.random_locations(name, 0, s, index, T)), labels)
      for s in range(3)
    ])  # fmt: skip
    np.testing.assert_allclose(r.accuracy_per_seed[name], per_seed)
    np.testing.assert_allclose(acc[name], per_seed.mean(0))
    np.testing.assert_allclose(r.accuracy_std_per_t[name], per_seed.std(0))
    assert np.any(r.accuracy_std_per_t[name] > 0)
  assert set(r.accuracy_std_per_t) == set(strategies.RANDOM)


def test_counts_are_exact_on_uneven_splits_and_any_device_count(fake_results):
  _, _, results = fake_results
  reference = results[(1, 8)]
  for key in ((4, 8), (4, 4)):
    r = results[key]
    assert r.num_examples == NUM_EXAMPLES
    for name in strategies.ALL:
      np.testing.assert_array_equal(r.accuracy_per_t[name], reference.accuracy_per_t[name])
    assert r.early_exit == reference.early_exit
    np.testing.assert_array_equal(r.location_histogram, reference.location_histogram)


def test_early_exit_on_the_learned_policy(fake_results):
  frames, labels, results = fake_results
  r = results[(1, 8)]
  by_gamma = {e['gamma']: e for e in r.early_exit}
  assert by_gamma[0.0]['mean_glimpses'] == 1.0
  assert by_gamma[0.0]['accuracy'] == pytest.approx(r.accuracy_per_t['glitr'][0])
  assert by_gamma[1.01]['mean_glimpses'] == T
  assert by_gamma[1.01]['accuracy'] == pytest.approx(r.accuracy_per_t['glitr'][-1])
  # Independently: the logits' softmax, first t above gamma.
  d2 = np.sum((frames[:, :, 0, 0, None, :2] - ANCHORS) ** 2, axis=-1)
  logits = -SHARPNESS[None, :, None] * d2
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  for gamma in (0.3, 0.6, 0.9):
    above = probs.max(-1) > gamma
    stop = np.where(above.any(1), above.argmax(1), T - 1)
    right = np.argmax(logits, -1)[np.arange(NUM_EXAMPLES), stop] == labels
    assert by_gamma[gamma]['accuracy'] == pytest.approx(right.mean())
    assert by_gamma[gamma]['mean_glimpses'] == pytest.approx(np.mean(stop + 1))
  glimpses = [e['mean_glimpses'] for e in r.early_exit]
  assert glimpses == sorted(glimpses) and glimpses[0] < glimpses[-1]


def test_location_histograms_and_kept_examples(fake_results):
  frames, labels, results = fake_results
  r = results[(4, 4)]
  assert r.location_histogram.shape == (T, 4, 4)
  np.testing.assert_array_equal(r.location_histogram.sum(axis=(1, 2)), NUM_EXAMPLES)
  locs = frames[:, :, 0, 0, :2]
  np.testing.assert_allclose(r.location_mean, locs.mean(0), atol=1e-5)
  np.testing.assert_allclose(r.location_std, locs.std(0), atol=1e-4)
  np.testing.assert_array_equal(r.outside_frame, np.zeros(T))
  assert [e.index for e in r.examples] == [0, 1, 2]
  for e in r.examples:
    np.testing.assert_array_equal(e.frames, frames[e.index])
    np.testing.assert_allclose(e.locations, locs[e.index])
    np.testing.assert_array_equal(e.predictions, nearest_anchor(locs[e.index]))
    assert e.label == labels[e.index] and e.video_id == f'video{e.index}'
    assert np.all((e.confidence > 0) & (e.confidence <= 1))


def test_lean_call_for_the_training_loop():
  frames, labels = fake_data(1)
  mesh = sharding.make_mesh(devices=jax.devices()[:4])
  evaluator = online.OnlineEvaluator(eval_config(), FakeModel(), mesh)
  out = evaluator(FAKE_PARAMS, batches=padded_batches(frames, labels, 8))
  assert set(out) == {'glitr'}
  np.testing.assert_allclose(out['glitr'], accuracy(nearest_anchor(frames[:, :, 0, 0, :2]), labels))
  assert evaluator.last_num_examples == NUM_EXAMPLES
  teacher_stage = eval_config()
  teacher_stage.stage = 'teacher'
  evaluator = online.OnlineEvaluator(teacher_stage, FakeModel(), mesh)
  out = evaluator(FAKE_PARAMS, batches=padded_batches(frames, labels, 8))
  assert set(out) == {'teacher_full_frames'}
  np.testing.assert_allclose(
    out['teacher_full_frames'], accuracy(np.argmax(frames[:, :, 1, :5, 0], -1), labels)
  )


def test_errors_name_the_problem():
  mesh = sharding.make_mesh(devices=jax.devices()[:4])
  config = eval_config()
  config.eval.batch_size = 6
  with pytest.raises(ValueError, match='eval.batch_size=6'):
    online.OnlineEvaluator(config, FakeModel(), mesh)
  evaluator = online.OnlineEvaluator(eval_config(), FakeModel(), mesh)
  with pytest.raises(ValueError, match='eval.num_seeds'):
    online.EvalPlan(num_seeds=0)
  with pytest.raises(ValueError, match='no real examples'):
    frames, labels = fake_data()
    batch = padded_batches(frames[:1], labels[:1], 8)[0]
    batch['mask'][:] = False
    evaluator(FAKE_PARAMS, batches=[batch])
  with pytest.raises(KeyError, match='index'):
    evaluator(FAKE_PARAMS, batches=[{k: v for k, v in batch.items() if k != 'index'}])


# --- The tiny GliTr against its own forwards. ---


def tiny_eval_model_config():
  """The model of eval_run_test's end-to-end run: the same compiled evaluation step serves both
  (JAX's persistent compilation cache), and depth 1 halves the compile time."""
  return tiny_model_config(num_classes=4, depth=1, temporal_depth=1)


def discriminative_params(seed: int):
  """Tiny GliTr weights whose predictions vary with the input (a fresh init's 0.02 kernels predict
  one class for every input): Linear kernels N(0, 1/fan-in), embeddings N(0, 0.02^2), LayerNorms
  and biases as initialised. Drawn in NumPy from the parameter shapes (no init to compile).
  """
  model = glitr.GliTr.from_config(tiny_eval_model_config())
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['scale']"):
      return np.ones(leaf.shape, np.float32)
    if name.endswith("['bias']") or name.endswith("['init_loc']"):
      return np.zeros(leaf.shape, np.float32)
    if name.endswith("['kernel']") and len(leaf.shape) == 2:
      return (rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0])).astype(np.float32)
    return (0.02 * rng.normal(size=leaf.shape)).astype(np.float32)

  return model, jax.tree.unflatten(treedef, [draw(p, x) for p, x in flat])


def test_tiny_glitr_matches_direct_forwards():
  """Each strategy's accuracy equals the student's own forward at that strategy's locations.

  The plan is the full one `main.py --mode=evaluate` runs (config defaults, 4 devices); 1 vs 4
  devices is checked on the fake model above, whose step compiles in a fraction of the time.
  """
  model, params = discriminative_params(0)
  _, teacher = discriminative_params(1)
  rng = np.random.default_rng(0)
  frames = rng.normal(size=(NUM_EXAMPLES, T, 32, 32, 3)).astype(np.float32)
  at = jax.jit(lambda p, x, locs: model.student_forward(p, x, locations=locs)['logits'])
  center = at(params, frames, jnp.zeros((NUM_EXAMPLES, T, 2)))
  # Labels: the centre strategy's predictions at T, so that `center` must score 100% there.
  labels = np.asarray(jnp.argmax(center[:, -1], -1))
  glitr_out = jax.jit(model.student_forward)(params, frames)
  teacher_out = jax.jit(model.teacher_forward)(teacher, frames)
  s = PATCHES / GRID
  index = jnp.arange(NUM_EXAMPLES)
  expected = {
    'glitr': glitr_out['logits'],
    'center': center,
    'bottom_left': at(params, frames, jnp.broadcast_to(jnp.array([-1 + s, 1 - s]), (13, T, 2))),
    'teacher': at(params, frames, teacher_out['locations']),
    'teacher_full_frames': teacher_out['logits'],
    'uniform': at(params, frames, strategies.random_locations('uniform', 0, 1, index, T)),
  }
  expected_fig8b = at(teacher, frames, glitr_out['locations'])
  config = common.get_base_config()
  config.model = tiny_eval_model_config()
  config.eval.batch_size = 8
  config.eval.num_seeds = 2
  plan = online.plan_from_config(config, strategies.ALL)
  evaluator = online.OnlineEvaluator(config, model, sharding.make_mesh(devices=jax.devices()[:4]))
  r = evaluator.run(params, teacher, plan=plan, batches=padded_batches(frames, labels, 8))
  assert r.num_examples == NUM_EXAMPLES
  for name, logits in expected.items():
    want = accuracy(np.asarray(jnp.argmax(logits, -1)), labels)
    got = r.accuracy_per_seed['uniform'][1] if name == 'uniform' else r.accuracy_per_t[name]
    np.testing.assert_allclose(got, want, err_msg=name)
  np.testing.assert_allclose(
    r.teacher_at_glitr, accuracy(np.asarray(jnp.argmax(expected_fig8b, -1)), labels)
  )
  assert r.accuracy_per_t['center'][-1] == 1.0
  assert r.accuracy_per_t['bottom_left'][-1] < 1.0
  assert r.accuracy_per_t['glitr'][-1] < 1.0
