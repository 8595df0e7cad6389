r"""Online inference latency: GliTr with the KV cache vs prefix recomputation (the official way).

For each T in --frames (the model is built with num_frames = T: the temporal embedding has one
position per frame), a batch of B videos is run online, one glimpse per video and step, each
step waiting for its outputs (an online agent needs l_{t+1} before it can look again):

  cached     `GliTr.student_step` jitted once: crop -> Tf on the glimpse -> Tc's and Tl's cached
             steps (attention of the new position over the KV cache, O(1) per step in t: the
             cache has num_frames slots and unused ones are masked).
  recompute  the official release's loop: crop -> Tf on the glimpse (features kept), then Tc and
             Tl over the whole prefix f_1..f_t at every step (O(t) per step, O(T^2) per video);
             the heads are jitted once per prefix length, so each step runs at its true length.

Prints ONE JSON object {"rows": [...], ...}: one row per T with
  frames          T
  cached_s        a whole video batch, cached (median over --repeats runs)
  recompute_s     the same with prefix recomputation
  first_step_s    cached per-step latency at t = 1 (median over the runs)
  last_step_s     cached per-step latency at t = T
  crop_step_s, tf_step_s, heads_step_s  a cached step's parts, each jitted and timed alone
  plus recompute_first_step_s / recompute_last_step_s, scan_s (the whole video batch in one
  jitted call of `glitr_jax.inference.student_forward`: lax.scan over the glimpses, Tc after),
  model_flops (analytic, cached: Tf on T * B glimpses and T cached steps of Tc and Tl) and
  flops_per_s = model_flops / cached_s. Outputs of the two ways are compared (max |diff| of the
  last step's logits, `max_abs_logit_diff`).

  taskset -c 0,1 python benchmarks/inference.py --frames=8,16,32,64       # B = 2, 96-px glimpses
  python benchmarks/inference.py --frames=8 --batch=1 --repeats=3
  python benchmarks/inference.py --frames=8,16 --compute_dtype=bfloat16 --param_dtype=compute

--param_dtype=compute stores the product weights in the compute dtype once, before the loop
(glitr_jax.inference.cast_params); with the default float32 storage a bfloat16 step converts
every weight at every call.
"""

import json
import os
import statistics
import sys
import time

import numpy as np
from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

from glitr_jax import glimpse as glimpse_lib  # noqa: E402
from glitr_jax import inference  # noqa: E402
from glitr_jax.models import config as model_config_lib  # noqa: E402

_FRAMES = flags.DEFINE_list('frames', ['8', '16', '32', '64'], 'Video lengths T to measure.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Videos B run together.')
_GLIMPSE = flags.DEFINE_integer('glimpse', 96, 'Glimpse side in pixels.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per way and T (after one warm-up).')
_DTYPE = flags.DEFINE_enum('compute_dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_PARAM_DTYPE = flags.DEFINE_enum(
  'param_dtype',
  'float32',
  ['float32', 'compute', 'int8_heads'],
  "Storage of the product weights: 'float32' (cast to the compute dtype inside every call), "
  "'compute' (cast once before the loop, glitr_jax.inference.cast_params, as the streaming "
  "agent stores them), or 'int8_heads' (that, and Tc's and Tl's block weights in int8, "
  'glitr_jax.inference.quantize_head_weights).',
)


def model_config(t: int):
  return model_config_lib.get_model_config(
    num_frames=t, glimpse_patches=_GLIMPSE.value // 16, compute_dtype=_DTYPE.value
  )


def random_params(config):
  """Random weights of the right shapes, drawn with NumPy (latency does not depend on values),
  stored as --param_dtype says."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(inference.model_for(config).init, jax.random.key(0))
  params = jax.tree.map(
    lambda s: jnp.asarray((0.02 * rng.standard_normal(s.shape)).astype(s.dtype) + (s.ndim == 1)),
    shapes,
  )
  if _PARAM_DTYPE.value != 'float32':
    params = inference.cast_params(params, config.compute_dtype)
  if _PARAM_DTYPE.value == 'int8_heads':
    params = inference.quantize_head_weights(params)
  return params


def analytic_flops(config, b: int, t: int) -> int:
  """Matmul FLOPs of cached online inference (as benchmarks/train_step.py counts them)."""
  d, e, p = config.hidden_size, config.temporal_hidden_size, config.patch_size
  tokens = config.glimpse_patches**2 + 1
  mlp = int(config.mlp_ratio * d)
  tf = config.depth * (2 * tokens * d * (4 * d + 2 * mlp) + 4 * tokens * tokens * d)
  tf += 2 * (tokens - 1) * p * p * 3 * d
  # A cached step: one new position per head; attention over the num_frames cache slots.
  step = config.temporal_depth * (2 * e * (4 * e + 2 * int(config.mlp_ratio * e)) + 4 * t * e)
  step += 2 * d * e
  heads = 2 * step + 2 * e * (config.num_classes + 2)
  return b * t * (tf + heads)


def run_cached(step_fn, init_fn, params, frames):
  """One online pass; returns (total seconds, per-step seconds, last logits)."""
  state = init_fn(params)
  jax.block_until_ready(state)
  times = []
  start = time.perf_counter()
  for frame in frames:
    t0 = time.perf_counter()
    state, out = step_fn(params, state, frame)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return time.perf_counter() - start, times, out['logits']


def run_recompute(model, encode_fn, heads_fns, params, frames):
  """The official loop: Tf per glimpse (features kept), Tc and Tl over the prefix per step."""
  b = frames[0].shape[0]
  loc = model.init_location(params, b)
  feats = []
  times = []
  start = time.perf_counter()
  for t, frame in enumerate(frames):
    t0 = time.perf_counter()
    feats.append(encode_fn(params, frame, loc))
    logits, loc = heads_fns[t](params, *feats)
    jax.block_until_ready((logits, loc))
    times.append(time.perf_counter() - t0)
  return time.perf_counter() - start, times, logits


def time_parts(model, params, frame, b: int) -> dict:
  """Per-step seconds of a cached step's parts, each jitted alone: the crop, Tf on the B
  glimpses (with their position embeddings), and Tc's and Tl's cached steps on B features
  (their caches half full; the attention covers all num_frames slots either way)."""
  state = model.init_step_state(params, b)
  loc = state.location
  glimpses = glimpse_lib.extract(frame, loc, model.glimpse_pixels)
  feat = model.encode_glimpses(params, glimpses, loc)
  half = state.tc.length + model.num_frames // 2
  caches = (state.tc.replace(length=half), state.tl.replace(length=half))

  def heads(p, caches, feat_bd):
    tc, tl = caches
    logits, tc = model.temporal_head.apply({'params': p['temporal_head']}, feat_bd[:, None], tc)
    locs, tl = model.temploc_head.apply({'params': p['temploc_head']}, feat_bd[:, None], tl)
    return logits, locs, tc, tl

  crop = jax.jit(lambda f, at: glimpse_lib.extract(f, at, model.glimpse_pixels))
  return {
    'crop_step_s': machine.time_call(crop, frame, loc),
    'tf_step_s': machine.time_call(jax.jit(model.encode_glimpses), params, glimpses, loc),
    'heads_step_s': machine.time_call(jax.jit(heads), params, caches, feat),
  }


def measure(t: int) -> dict:
  b = _BATCH.value
  config = model_config(t)
  model = inference.model_for(config)
  params = random_params(config)
  rng = np.random.default_rng(t)
  s = config.image_size
  video = jnp.asarray(rng.standard_normal((b, t, s, s, 3)).astype(np.float32))
  frames = [video[:, i] for i in range(t)]
  jax.block_until_ready(frames)

  step_fn = jax.jit(model.student_step, donate_argnums=(1,))
  init_fn = jax.jit(lambda p: model.init_step_state(p, b))

  def encode(p, frame, loc):
    glimpses = glimpse_lib.extract(frame, loc, model.glimpse_pixels)
    return model.encode_glimpses(p, glimpses, loc)

  def heads(p, *feats):
    feats_btd = jnp.stack(feats, axis=1)
    logits = model.classify(p, feats_btd)
    locs = model.locate(p, feats_btd)
    return logits[:, -1], locs[:, -1]

  encode_fn = jax.jit(encode)
  heads_fns = [jax.jit(heads) for _ in range(t)]  # One compilation per prefix length.
  scan_fn = lambda p, v: inference.student_forward({'params': p}, config, v)

  # Warm-up: compile everything (and compare the two ways' outputs).
  _, _, logits_cached = run_cached(step_fn, init_fn, params, frames)
  _, _, logits_recompute = run_recompute(model, encode_fn, heads_fns, params, frames)
  jax.block_until_ready(scan_fn(params, video))
  diff = float(jnp.max(jnp.abs(logits_cached - logits_recompute)))

  cached, recompute, scan = [], [], []
  cached_steps, recompute_steps = [], []
  for _ in range(_REPEATS.value):
    total, per_step, _ = run_cached(step_fn, init_fn, params, frames)
    cached.append(total)
    cached_steps.append(per_step)
    total, per_step, _ = run_recompute(model, encode_fn, heads_fns, params, frames)
    recompute.append(total)
    recompute_steps.append(per_step)
    t0 = time.perf_counter()
    jax.block_until_ready(scan_fn(params, video))
    scan.append(time.perf_counter() - t0)
  med = statistics.median
  flops = analytic_flops(config, b, t)
  return {
    'frames': t,
    'cached_s': med(cached),
    'recompute_s': med(recompute),
    'first_step_s': med(s[0] for s in cached_steps),
    'last_step_s': med(s[-1] for s in cached_steps),
    'recompute_first_step_s': med(s[0] for s in recompute_steps),
    'recompute_last_step_s': med(s[-1] for s in recompute_steps),
    'scan_s': med(scan),
    'model_flops': flops,
    'flops_per_s': flops / med(cached),
    'max_abs_logit_diff': diff,
    **time_parts(model, params, frames[0], b),
    'load_avg_1min': os.getloadavg()[0],
  }


def main(argv):
  del argv
  rows = [measure(int(t)) for t in _FRAMES.value]
  out = {
    'rows': rows,
    'batch': _BATCH.value,
    'glimpse': _GLIMPSE.value,
    'compute_dtype': _DTYPE.value,
    'param_dtype': _PARAM_DTYPE.value,
    'repeats': _REPEATS.value,
    **machine.machine_info(),
  }
  print(json.dumps(out))


if __name__ == '__main__':
  app.run(main)
