"""Each performance optimisation computes what the straightforward version computes.

Float32 results must agree to 1e-5 with and without: the loop-free backward pass of the glimpse
loop, the frozen forwards outside autodiff, rematerialised Tf blocks, donated buffers, the erf
form of GELU, and the transformer block's hand-written backward passes (`layers.Block` against
`PlainBlock` below, the formulation they replaced: nn.Dense, nn.LayerNorm and autodiff). bfloat16
compute must run, keep float32 parameters and optimiser state, and stay close to float32. Timing
lives in benchmarks/ (train_step.py, inference.py), never here.
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


# --- The plain formulation of the transformer block (before its hand-written backward passes). ---
class PlainMlp(nn.Module):
  hidden_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_dim = x.shape[-1]
    x = nn.Dense(self.hidden_dim, dtype=self.dtype, kernel_init=layers.dense_init, name='fc1')(x)
    x = layers.gelu(x)
    return nn.Dense(out_dim, dtype=self.dtype, kernel_init=layers.dense_init, name='fc2')(x)


class PlainAttention(nn.Module):
  num_heads: int
  causal: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_bsd, cache=None, start=0):
    b, s, d = x_bsd.shape
    h = self.num_heads
    hd = d // h
    qkv = nn.Dense(3 * d, dtype=self.dtype, kernel_init=layers.dense_init, name='qkv')(x_bsd)
    qkv = qkv.reshape(b, s, 3, h, hd)
    q_bshd, k_bshd, v_bshd = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    k_bthd, v_bthd, new_cache = layers.keys_and_values(k_bshd, v_bshd, cache, start)
    q_bhsd = jnp.swapaxes(q_bshd * (hd**-0.5), 1, 2)
    k_bhtd = jnp.swapaxes(k_bthd.astype(self.dtype), 1, 2)
    v_bhtd = jnp.swapaxes(v_bthd.astype(self.dtype), 1, 2)
    logits_bhst = jnp.einsum('bhsd,bhtd->bhst', q_bhsd, k_bhtd)
    if self.causal or cache is not None:
      q_pos = start + jnp.arange(s)
      k_pos = jnp.arange(k_bthd.shape[1])
      if self.causal:
        allowed_st = k_pos[None, :] <= q_pos[:, None]
      else:
        allowed_st = jnp.broadcast_to(k_pos[None, :] < start + s, (s, k_pos.shape[0]))
      logits_bhst = jnp.where(allowed_st[None, None], logits_bhst, jnp.finfo(logits_bhst.dtype).min)
    probs_bhst = jax.nn.softmax(logits_bhst.astype(jnp.float32), axis=-1).astype(self.dtype)
    out_bhsd = jnp.einsum('bhst,bhtd->bhsd', probs_bhst, v_bhtd)
    out = nn.Dense(d, dtype=self.dtype, kernel_init=layers.dense_init, name='proj')(
      jnp.swapaxes(out_bhsd, 1, 2).reshape(b, s, d)
    )
    return out, new_cache


class PlainBlock(nn.Module):
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0
  causal: bool = False
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_bsd, cache=None, start=0, deterministic=True):
    d = x_bsd.shape[-1]
    y = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm1')(x_bsd)
    y, cache = PlainAttention(self.num_heads, causal=self.causal, dtype=self.dtype, name='attn')(
      y, cache, start
    )
    x_bsd = x_bsd + layers.DropPath(self.drop_path)(y, deterministic)
    y = nn.LayerNorm(epsilon=layers.LN_EPS, dtype=self.dtype, name='norm2')(x_bsd)
    y = PlainMlp(int(d * self.mlp_ratio), dtype=self.dtype, name='mlp')(y)
    x_bsd = x_bsd + layers.DropPath(self.drop_path)(y, deterministic)
    return x_bsd, cache


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

  loss_fn = steps.stage_loss
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


def _block_pair(causal: bool, dtype=jnp.float32, d: int = 48, heads: int = 3):
  kwargs = dict(num_heads=heads, mlp_ratio=4.0, drop_path=0.2, causal=causal, dtype=dtype)
  return layers.Block(**kwargs), PlainBlock(**kwargs)


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('train', [False, True])
def test_block_equals_the_plain_formulation(causal, train):
  """Same parameter tree and initial values; outputs and gradients (params, input) to 1e-5."""
  block, plain = _block_pair(causal)
  x = jax.random.normal(jax.random.key(0), (4, 13, 48))
  params = block.init(jax.random.key(1), x)['params']
  plain_params = plain.init(jax.random.key(1), x)['params']
  assert jax.tree.structure(params) == jax.tree.structure(plain_params)
  jax.tree.map(np.testing.assert_array_equal, params, plain_params)
  # Non-trivial LayerNorm parameters and biases, so that their gradients are tested too.
  params = jax.tree.map(
    lambda p: p + 0.1 * jax.random.normal(jax.random.key(p.size), p.shape), params
  )
  weights = jax.random.normal(jax.random.key(2), x.shape)
  rngs = {'dropout': jax.random.key(3)} if train else {}

  def loss(module, p, x):
    out, _ = module.apply({'params': p}, x, None, 0, not train, rngs=rngs)
    return jnp.sum(jnp.sin(out) * weights)

  value, grads = jax.jit(jax.value_and_grad(lambda p, x: loss(block, p, x), (0, 1)))(params, x)
  value_ref, grads_ref = jax.jit(jax.value_and_grad(lambda p, x: loss(plain, p, x), (0, 1)))(
    params, x
  )
  np.testing.assert_allclose(value, value_ref, rtol=1e-5)
  assert _max_rel_diff(grads_ref, grads) < 1e-5
  # The comparison can fail: a gradient of the wrong size is caught at this tolerance.
  scaled = jax.tree.map(lambda g: g * (1 + 1e-4), grads)
  assert _max_rel_diff(grads_ref, scaled) > 1e-5


def test_cached_attention_steps_equal_the_plain_formulation():
  """A prefix, then one-step chunks against the KV cache: the same outputs and cache."""
  block, plain = _block_pair(causal=True)
  b, t, d, heads = 2, 6, 48, 3
  x = jax.random.normal(jax.random.key(0), (b, t, d))
  params = block.init(jax.random.key(1), x)['params']

  def run(module):
    shape = (b, t, heads, d // heads)
    cache = layers.LayerCache(k_bthd=jnp.zeros(shape), v_bthd=jnp.zeros(shape))
    outs = []
    for start, stop in ((0, 3), (3, 4), (4, 5), (5, 6)):
      out, cache = module.apply({'params': params}, x[:, start:stop], cache, start)
      outs.append(out)
    return jnp.concatenate(outs, axis=1), cache

  out, cache = run(block)
  out_ref, cache_ref = run(plain)
  np.testing.assert_allclose(out, out_ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(cache.k_bthd, cache_ref.k_bthd, atol=1e-6)
  np.testing.assert_allclose(cache.v_bthd, cache_ref.v_bthd, atol=1e-6)


def test_bfloat16_block_stays_close_to_the_plain_formulation():
  block, plain = _block_pair(causal=False, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.key(0), (4, 13, 48)).astype(jnp.bfloat16)
  params = block.init(jax.random.key(1), x)['params']

  def grads(module):
    f = lambda p, x: jnp.sum(module.apply({'params': p}, x)[0].astype(jnp.float32) ** 2)
    return jax.jit(jax.grad(f, (0, 1)))(params, x)

  new, ref = grads(block), grads(plain)
  assert {leaf.dtype for leaf in jax.tree.leaves(new[0])} == {jnp.dtype(jnp.float32)}
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(ref), strict=True):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert np.linalg.norm(a - b) <= 3e-2 * np.linalg.norm(b) + 1e-6


@pytest.mark.parametrize('stage', ['teacher', 'student'])
def test_train_step_gradients_equal_the_plain_blocks(stage, monkeypatch):
  """The whole loss (Tf, Tc, Tl, the glimpse loop's replay) with plain blocks swapped in."""
  config = tiny_train_config(stage)
  model = glitr.GliTr.from_config(config.model)
  params = model.init(jax.random.key(0))
  frozen = _student_frozen(config) if stage == 'student' else {}
  batch = _batch(config)
  loss_fn = steps.stage_loss
  rng = jax.random.key(4)

  def value_and_grad():
    f = lambda p: loss_fn(model, config, p, batch, rng, frozen)[0]
    return jax.jit(jax.value_and_grad(f))(params)

  value, grads = value_and_grad()
  monkeypatch.setattr(layers, 'Block', PlainBlock)
  value_ref, grads_ref = value_and_grad()
  np.testing.assert_allclose(value, value_ref, rtol=1e-5)
  assert _max_rel_diff(grads_ref, grads) < 1e-5


def test_low_precision_linear_accumulates_in_float32_and_differentiates_as_plain():
  """bfloat16 `linear`: the value is the float32 product rounded once; the gradient is the plain
  bfloat16 formulation's (its products in bfloat16)."""
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], (2, 5, 96)).astype(jnp.bfloat16)
  kernel = jax.random.normal(keys[1], (96, 40)).astype(jnp.bfloat16)
  bias = jax.random.normal(keys[2], (40,)).astype(jnp.bfloat16)
  out = layers.linear(x, kernel, bias)
  assert out.dtype == jnp.bfloat16
  exact = jnp.einsum('bsi,io->bso', x.astype(jnp.float32), kernel.astype(jnp.float32)) + bias
  np.testing.assert_array_equal(np.asarray(out, np.float32), exact.astype(jnp.bfloat16))
  weights = jax.random.normal(keys[3], out.shape)

  def loss(f):
    return lambda x, k, b: jnp.sum(f(x, k, b).astype(jnp.float32) * weights)

  grads = jax.grad(loss(layers.linear), (0, 1, 2))(x, kernel, bias)
  grads_plain = jax.grad(loss(lambda x, k, b: x @ k + b), (0, 1, 2))(x, kernel, bias)
  for g, g_plain in zip(grads, grads_plain, strict=True):
    assert g.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(g, np.float32), np.asarray(g_plain, np.float32))
