r"""Training-step throughput: median step time, videos/s, model FLOPs, MFU and peak memory.

Builds the real training step (`glitr_jax.train.steps.make_train_step`, jitted as the loop jits it,
with the train state donated when `--donate`) on random weights and random normalised frames,
compiles it once ahead of time (the executable runs every step), runs `--warmup` steps, times
`--steps` more one by one (each until its outputs are ready), and prints ONE JSON object:

  median_step_s         median wall time of a step
  videos_per_s          batch / median_step_s
  model_flops_per_step  the analytic count below
  xla_flops_per_step    XLA's cost analysis of the compiled step (`compiled.cost_analysis()`), or
                        null; it counts every dot, convolution and elementwise op once, and a
                        while loop (lax.scan: the student's glimpse loop) once, not per iteration,
                        so it agrees with the analytic count only for the loop-free teacher step
  matmul_flops_per_s    this machine's dense float32 matmul rate, measured in the same process
                        (jitted 2048 x 2048 products, median of several runs) before and after
                        the steps; the higher of the two (a reading taken while something else
                        slows the machine is low, and would inflate MFU); both are reported as
                        matmul_flops_per_s_before / _after
  mfu                   model_flops_per_step / median_step_s / matmul_flops_per_s
  peak_memory_mib       the process's peak resident memory (getrusage maxrss: compilation,
                        parameters, optimiser state and the step's buffers)
  page_faults_per_step  median minor page faults of a timed step: memory the kernel mapped (and
                        zeroed) anew for it: XLA allocates the step's temporaries in one block
                        per call, which glibc's malloc maps anew each time (about 580,000 faults
                        for the teacher), a preloaded tcmalloc keeps (near 0; `malloc_library`
                        names the allocator)
  system_s_per_step     median kernel CPU time of a step (mostly those faults)
  plus the configuration, the per-step times, the load average, and the analytic breakdown.

The analytic count is `model_flops` in benchmarks/flop_count.py, whose docstring says what it
counts. With the paper's sizes a student step at T = 16 is 462 GFLOP (the frozen teacher's
forward: 296) and a teacher step at T = 8 is 499 GFLOP.

  taskset -c 0,1 python benchmarks/train_step.py --stage=student --batch=2 --frames=16 --glimpse=96
  taskset -c 0,1 python benchmarks/train_step.py --stage=teacher --batch=2 --frames=8 --glimpse=96
  python benchmarks/train_step.py --stage=student --frames=16 --remat   # rematerialised Tf blocks
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python benchmarks/train_step.py
"""

import json
import os
import resource
import statistics
import sys
import time

import numpy as np
from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import flop_count  # noqa: E402  (benchmarks/flop_count.py, beside this script)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

from configs import common  # noqa: E402
from glitr_jax import optim  # noqa: E402
from glitr_jax.models import glitr  # noqa: E402
from glitr_jax.train import steps  # noqa: E402

_STAGE = flags.DEFINE_enum('stage', 'student', ['teacher', 'student'], 'Which training step.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Videos per step B.')
_FRAMES = flags.DEFINE_integer('frames', 16, 'Frames per video T (also model.num_frames).')
_GLIMPSE = flags.DEFINE_integer('glimpse', 96, 'Glimpse side in pixels.')
_IMAGE = flags.DEFINE_integer('image_size', 224, 'Frame side in pixels.')
_DEPTH = flags.DEFINE_integer('depth', 12, 'ViT depth (12: ViT-S/16).')
_CLASSES = flags.DEFINE_integer('num_classes', 174, 'Classes (SSv2: 174).')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps (>= 5 for the reported median).')
_WARMUP = flags.DEFINE_integer('warmup', 1, 'Untimed steps after the compiling one.')
_DTYPE = flags.DEFINE_enum('compute_dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype.')
_REMAT = flags.DEFINE_bool('remat', False, "Rematerialise Tf's blocks (model.remat).")
_DONATE = flags.DEFINE_bool('donate', True, 'Donate the train state to the step (config.donate).')
_MIXUP = flags.DEFINE_bool('mixup', True, 'Teacher: mixup 0.8 / cutmix 1.0 as the paper configs.')
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'Side of the peak-rate matmuls.')


def matmul_rate(size: int, repeats: int = 7) -> float:
  """Dense float32 matmul FLOP/s of this process (median of `repeats` jitted products)."""
  keys = jax.random.split(jax.random.key(1), 2)
  a = jax.random.normal(keys[0], (size, size), jnp.float32)
  bm = jax.random.normal(keys[1], (size, size), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, bm).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    f(a, bm).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times)


def build(stage: str, b: int, t: int):
  """The config, model, jitted step, initial state, batch and frozen weights."""
  c = common.get_base_config()
  c.stage = stage
  c.model.num_frames = t
  c.model.image_size = _IMAGE.value
  c.model.depth = _DEPTH.value
  c.model.num_classes = _CLASSES.value
  c.model.compute_dtype = _DTYPE.value
  c.model.remat = _REMAT.value
  common.set_glimpse(c, _GLIMPSE.value)
  c.batch_size = b
  c.donate = _DONATE.value
  if stage == 'teacher' and _MIXUP.value:  # The paper's teachers (no L_dist: loss.dist = 0).
    c.data.augment.mixup, c.data.augment.cutmix = 0.8, 1.0
  model = glitr.GliTr.from_config(c.model)
  total_steps = 1000
  tx = optim.make_optimizer(c, total_steps, 100)
  lrs = optim.schedules(c, total_steps, 100)
  params = model.init(jax.random.key(0))
  frozen = {'teacher': jax.tree.map(jnp.copy, params)} if stage == 'student' else {}
  state = steps.create_state(params, tx, seed=0)
  step = jax.jit(steps.make_train_step(model, c, tx, lrs), donate_argnums=(0,) if c.donate else ())
  k_video, k_label = jax.random.split(jax.random.key(2))
  s = c.model.image_size
  batch = {
    'video': jax.random.normal(k_video, (b, t, s, s, 3), jnp.float32),
    'label': jax.random.randint(k_label, (b,), 0, c.model.num_classes),
  }
  return c, step, state, batch, frozen


def main(argv):
  del argv
  stage, b, t = _STAGE.value, _BATCH.value, _FRAMES.value
  c, step, state, batch, frozen = build(stage, b, t)
  compiled = step.lower(state, batch, frozen).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  xla_flops = float(cost['flops']) if cost and 'flops' in cost else None
  memory = compiled.memory_analysis()
  temp_mib = None if memory is None else memory.temp_size_in_bytes / 2**20

  for _ in range(1 + _WARMUP.value):
    state, metrics = compiled(state, batch, frozen)
  jax.block_until_ready((state, metrics))
  rate_before = matmul_rate(_MATMUL_SIZE.value)
  times, loads, faults, system_s = [], [], [], []
  for _ in range(_STEPS.value):
    loads.append(os.getloadavg()[0])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    state, metrics = compiled(state, batch, frozen)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    faults.append(after.ru_minflt - usage.ru_minflt)
    system_s.append(after.ru_stime - usage.ru_stime)
  loss = float(metrics['loss'])
  if not np.isfinite(loss):
    raise FloatingPointError(f'non-finite loss {loss}')

  rate_after = matmul_rate(_MATMUL_SIZE.value)
  rate = max(rate_before, rate_after)
  flops = flop_count.model_flops(stage, b, t, c.model)
  executed, as_xla_counts = flop_count.executed_flops(stage, b, t, c.model)
  median = statistics.median(times)
  out = {
    'median_step_s': median,
    'videos_per_s': b / median,
    'model_flops_per_step': flops['total'],
    'matmul_flops_per_s': rate,
    'mfu': flops['total'] / median / rate,
    'matmul_flops_per_s_before': rate_before,
    'matmul_flops_per_s_after': rate_after,
    'peak_memory_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    'xla_flops_per_step': xla_flops,
    'analytic_flops_as_xla_counts': as_xla_counts,  # compare with xla_flops_per_step
    'executed_flops_per_step': executed,  # model FLOPs + the replay's forward (+ remat)
    'executed_flops_per_s': executed / median,
    'xla_temp_mib': temp_mib,
    'crop_flops_per_step': flop_count.crop_flops(b, t, c.model, _GLIMPSE.value),
    'model_flops_breakdown': {k: v for k, v in flops.items() if k != 'total'},
    'step_times_s': times,
    'page_faults_per_step': statistics.median(faults),  # minor faults: memory mapped anew
    'system_s_per_step': statistics.median(system_s),  # kernel time (mostly those faults)
    'loss': loss,
    'stage': stage,
    'batch': b,
    'frames': t,
    'glimpse': _GLIMPSE.value,
    'compute_dtype': _DTYPE.value,
    'remat': _REMAT.value,
    'donate': _DONATE.value,
    'load_avg_1min': loads,  # before each timed step (another process's load slows the step)
    **machine.machine_info(),
  }
  print(json.dumps(out))


if __name__ == '__main__':
  app.run(main)
