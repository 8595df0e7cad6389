"""Each performance optimisation computes what the straightforward version computes.

Float32 results must agree to 1e-5 with and without: the loop-free backward pass of the glimpse
loop, the frozen forwards outside autodiff, rematerialised Tf blocks, donated buffers, and the erf
form of GELU. bfloat16 compute must run, keep float32 parameters and optimiser state, and stay close
to float32. Timing lives in benchmarks/ (train_step.py, inference.py), never here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from tiny import tiny_model_config, tiny_train_config

from glitr_jax import optim
from glitr_jax.models import glitr, layers
from glitr_jax.train import steps


def _batch(config, seed=0):
  rng = np.random.default_rng(seed)
  m = config.model
  shape = (config.batch_size, m.num_frames, m.image_size, m.image_size, 3)
  return {
    'video': jnp.asarray(rng.normal(size=shape).astype(np.float32)),
    'label': jnp.asarray(rng.integers(0, m.num_classes, size=config.batch_size).astype(np.int32)),
  }


def _max_rel_diff(a, b) -> float:
  """max |a - b| / max |a| over a pytree's leaves (leaf by leaf)."""
  diffs = jax.tree.map(
    lambda x, y: float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-30)), a, b
  )
  return max(jax.tree.leaves(diffs))


def _train(config, batches, donate=False, params=None, frozen=None):
  """Runs the jitted train step; returns (losses, final state)."""
  model = glitr.GliTr.from_config(config.model)
  tx = optim.make_optimizer(config, 100, 10)
  params = model.init(jax.random.key(0)) if params is None else params
  state = steps.create_state(params, tx, config.seed)
  step = jax.jit(
    steps.make_train_step(model, config, tx, optim.schedules(config, 100, 10)),
    donate_argnums=(0,) if donate else (),
  )
  losses = []
  for batch in batches:
    state, metrics = step(state, batch, frozen or {})
    losses.append(float(metrics['loss']))
  return losses, state


def _student_frozen(config):
  return {'teacher': glitr.GliTr.from_config(config.model).init(jax.random.key(9))}


@pytest.mark.parametrize('train', [True, False])
def test_rollout_backward_equals_differentiating_the_scan(train):
  """policy_rollout's loop-free backward (replay) == autodiff through the scan, drop-path on."""
  model = glitr.GliTr.from_config(tiny_model_config(drop_path_rate=0.3))
  params = model.init(jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
  rng = jax.random.key(5) if train else None
  weights = jax.random.normal(jax.random.key(2), (2, 4, 32))

  def loss(p, scan):
    if scan:
      feats, locs = model._rollout_scan(p, frames, train, rng)
    else:
      feats, locs = model.policy_rollout(p, frames, train=train, rng=rng)
    return jnp.sum(feats * weights) + jnp.sum(jnp.sin(3.0 * locs))

  value_scan, grads_scan = jax.jit(jax.value_and_grad(lambda p: loss(p, True)))(params)
  value, grads = jax.jit(jax.value_and_grad(lambda p: loss(p, False)))(params)
  np.testing.assert_allclose(value, value_scan, rtol=1e-5)
  assert _max_rel_diff(grads_scan, grads) < 1e-5
  # The gradient does reach Tl and init_loc through the crops (the replay is not a no-op).
  assert float(jnp.abs(grads['temploc_head']['init_loc']).max()) > 0
  assert float(jnp.abs(grads['temploc_head']['blocks_0']['mlp']['fc1']['kernel']).max()) > 0


def test_rollout_replay_reproduces_the_rollout():
  """The replay's features and locations equal the scan's (same drop-path masks)."""
  model = glitr.GliTr.from_config(tiny_model_config(drop_path_rate=0.3))
  params = model.init(jax.random.key(0))
  frames = jax.random.normal(jax.random.key(1), (3, 4, 32, 32, 3))
  rng = jax.random.key(7)
  feats, locs = jax.jit(lambda p: model._rollout_scan(p, frames, True, rng))(params)
  feats_r, locs_r = jax.jit(lambda p: model._replay(p, frames, feats, True, rng))(params)
  np.testing.assert_allclose(locs_r, locs, atol=1e-6)
  np.testing.assert_allclose(feats_r, feats, atol=1e-5)
  # With other masks (another RNG) the features differ: the test can tell masks apart.
  feats_other, _ = jax.jit(lambda p: model._replay(p, frames, feats, True, jax.random.key(8)))(
    params
  )
  assert float(jnp.max(jnp.abs(feats_other - feats))) > 1e-3


@pytest.mark.parametrize('stage', ['teacher', 'student'])
def test_train_step_equals_differentiating_the_whole_loss(stage):
  """Frozen forwards outside value_and_grad == the loss differentiated as one function."""
  config = tiny_train_config(stage)
  if stage == 'teacher':
    config.data.augment.mixup, config.data.augment.cutmix = 0.8, 1.0
  model = glitr.GliTr.from_config(config.model)
  params = model.init(jax.random.key(0))
  frozen = _student_frozen(config) if stage == 'student' else {}
  batch = _batch(config)
  # An "optimiser" that keeps the step's gradient as its state, so the gradient itself is compared
  # (Adam's first step maps a 1e-9 gradient to +-lr: rounding in near-zero gradients would look like
  # a wrong update; params - grad would lose small gradients to cancellation).
  tx = optax.GradientTransformation(
    init=lambda p: jax.tree.map(jnp.zeros_like, p),
    update=lambda g, _, p=None: (jax.tree.map(jnp.zeros_like, g), g),
  )
  state = steps.create_state(params, tx, config.seed)
  step = steps.make_train_step(model, config, tx, optim.schedules(config, 100, 10))
  new_state, metrics = jax.jit(step)(state, batch, frozen)

  loss_fn = steps.LOSSES[stage]
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)

  @jax.jit
  def reference(p):
    return jax.value_and_grad(lambda q: loss_fn(model, config, q, batch, rng, frozen)[0])(p)

  loss, grads = reference(params)
  np.testing.assert_allclose(metrics['loss'], loss, rtol=1e-5)
  np.testing.assert_allclose(metrics['grad_norm'], optax.global_norm(grads), rtol=1e-5)
  assert _max_rel_diff(grads, new_state.opt_state) < 1e-5


@pytest.mark.parametrize('stage', ['teacher', 'student'])
def test_remat_gives_the_same_training(stage):
  config = tiny_train_config(stage)
  batches = [_batch(config, seed) for seed in range(2)]
  frozen = _student_frozen(config) if stage == 'student' else None
  plain_losses, plain = _train(config, batches, frozen=frozen)
  config.model.remat = True
  remat_losses, remat = _train(config, batches, frozen=frozen)
  np.testing.assert_allclose(remat_losses, plain_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), remat.params, plain.params)


def test_remat_recomputes_tf_blocks_in_the_backward_pass():
  """model.remat really rematerialises: the gradient's program holds checkpointed blocks."""

  def remat_ops(remat: bool) -> int:
    model = glitr.GliTr.from_config(tiny_model_config(remat=remat))
    params = model.init(jax.random.key(0))
    frames = jnp.zeros((1, 4, 32, 32, 3))
    grad = jax.grad(lambda p: jnp.sum(model.student_forward(p, frames)['logits']))
    return str(jax.make_jaxpr(grad)(params)).count('remat')

  assert remat_ops(False) == 0
  assert remat_ops(True) > 0


def test_donated_state_gives_the_same_training_and_is_consumed():
  config = tiny_train_config('student')
  batches = [_batch(config, seed) for seed in range(2)]
  frozen = _student_frozen(config)
  kept_losses, kept = _train(config, batches, frozen=frozen)
  donated_losses, donated = _train(config, batches, donate=True, frozen=frozen)
  np.testing.assert_allclose(donated_losses, kept_losses, rtol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), donated.params, kept.params
  )

  # The donated input state's buffers are handed to the step (deleted), the frozen ones are not.
  model = glitr.GliTr.from_config(config.model)
  tx = optim.make_optimizer(config, 100, 10)
  state = steps.create_state(model.init(jax.random.key(0)), tx, config.seed)
  step = jax.jit(
    steps.make_train_step(model, config, tx, optim.schedules(config, 100, 10)),
    donate_argnums=(0,),
  )
  jax.block_until_ready(step(state, batches[0], frozen))
  assert all(leaf.is_deleted() for leaf in jax.tree.leaves(state.params))
  assert not any(leaf.is_deleted() for leaf in jax.tree.leaves(frozen))


def test_bfloat16_compute_runs_close_to_float32_with_float32_state():
  config = tiny_train_config('student')
  config.model.drop_path_rate = 0.0
  batches = [_batch(config, seed) for seed in range(2)]
  frozen = _student_frozen(config)
  f32_losses, _ = _train(config, batches, frozen=frozen)
  config.model.compute_dtype = 'bfloat16'
  bf16_losses, state = _train(config, batches, frozen=frozen)
  assert np.all(np.isfinite(bf16_losses))
  np.testing.assert_allclose(bf16_losses, f32_losses, rtol=3e-2)
  assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  floats = [leaf for leaf in jax.tree.leaves(state.opt_state) if jnp.issubdtype(leaf, jnp.floating)]
  assert floats and {leaf.dtype for leaf in floats} == {jnp.dtype(jnp.float32)}

  # The forward itself: bfloat16 logits within bfloat16 rounding of float32's.
  model_f32 = glitr.GliTr.from_config(tiny_model_config(drop_path_rate=0.0))
  model_bf16 = glitr.GliTr.from_config(
    tiny_model_config(drop_path_rate=0.0, compute_dtype='bfloat16')
  )
  params = model_f32.init(jax.random.key(0))
  frames = batches[0]['video']
  f32 = jax.jit(model_f32.student_forward)(params, frames)['logits']
  bf16 = jax.jit(model_bf16.student_forward)(params, frames)['logits']
  assert bf16.dtype == jnp.float32
  rel = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
  assert rel < 5e-2, rel


def test_gelu_equals_the_erfc_form():
  x = jnp.linspace(-10.0, 10.0, 200001, dtype=jnp.float32)
  np.testing.assert_allclose(layers.gelu(x), nn.gelu(x, approximate=False), atol=2e-6)
  grad = jax.vmap(jax.grad(layers.gelu))(x)
  grad_ref = jax.vmap(jax.grad(lambda v: nn.gelu(v, approximate=False)))(x)
  np.testing.assert_allclose(grad, grad_ref, atol=2e-6)


@pytest.mark.parametrize('stage', ['teacher', 'student'])
def test_train_step_has_no_host_callbacks(stage):
  """Nothing inside a step waits for the host: no callback primitive in its program."""
  config = tiny_train_config(stage)
  model = glitr.GliTr.from_config(config.model)
  tx = optim.make_optimizer(config, 100, 10)
  state = steps.create_state(model.init(jax.random.key(0)), tx, config.seed)
  step = steps.make_train_step(model, config, tx, optim.schedules(config, 100, 10))
  frozen = _student_frozen(config) if stage == 'student' else {}
  jaxpr = str(jax.make_jaxpr(step)(state, _batch(config), frozen))
  assert 'callback' not in jaxpr
