r"""The training step's products alone: how fast its matmuls run, and the MFU they allow.

Compiles the step exactly as benchmarks/train_step.py does (the same flags), reads every product
(`dot`) of the optimised HLO, inside fusions too (XLA's CPU backend hands most products to
YNNPACK fusions and runs the rest as Eigen dot thunks), times each distinct product alone as a
jitted `lax.dot_general` of the same shapes, dimension numbers and precision, and sums
count x time. Prints ONE JSON object:

  products_s             the sum: what the step's products take run one after another, each at
                         the rate XLA's CPU kernels reach on it alone
  products_flops         their FLOPs (2 x batch x M x N x K each)
  products_rate_fraction products_flops / products_s / matmul_flops_per_s
  products_mfu_ceiling   model_flops_per_step / products_s / matmul_flops_per_s: the MFU the step
                         would reach if nothing but its products took time (same MFU as
                         train_step.py's)
  matmul_flops_per_s     the 2048^2 float32 rate, measured as train_step.py measures it
  by_runtime             seconds, FLOPs and rate per runtime (`ynn_fusion`, `dot`: an Eigen dot
                         thunk, or the other library fusions XLA_FLAGS may enable)
  slowest                the distinct products with the largest total time: count, shapes,
                         dimension numbers, runtime, seconds in all, GFLOP/s
  plus the configuration and the machine.

The step's own time (train_step.py) minus products_s is what everything else costs in the step:
the memory-bound work, the page faults of its temporaries, and any slowdown the products suffer
beside it. A target MFU above products_mfu_ceiling cannot be met with these kernels, whatever the
rest of the step costs.

  python benchmarks/step_products.py --stage=teacher --batch=2 --frames=8 --glimpse=96
  python benchmarks/step_products.py --stage=student --batch=2 --frames=16 --glimpse=96
"""

import collections
import json
import os
import sys

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import flop_count  # noqa: E402  (benchmarks/flop_count.py, beside this script)
import hlo_products  # noqa: E402  (benchmarks/hlo_products.py)
import machine  # noqa: E402
import train_step  # noqa: E402  (its flags: --stage, --batch, --frames, --glimpse, ...)

_REPEATS = flags.DEFINE_integer('repeats', 9, 'Timed runs of each distinct product (median).')
_TOP = flags.DEFINE_integer('top', 12, 'Distinct products listed under "slowest".')


def main(argv):
  del argv
  stage = train_step._STAGE.value
  b, t = train_step._BATCH.value, train_step._FRAMES.value
  c, step, state, batch, frozen = train_step.build(stage, b, t)
  dots = hlo_products.hlo_dots(step.lower(state, batch, frozen).compile().as_text())
  del state, batch, frozen  # the products are timed on their own

  rate_before = train_step.matmul_rate(train_step._MATMUL_SIZE.value)
  seconds = {dot: hlo_products.time_dot(dot, _REPEATS.value) for dot in dots}
  rate = max(rate_before, train_step.matmul_rate(train_step._MATMUL_SIZE.value))

  total_s = sum(n * seconds[d] for d, n in dots.items())
  total_flops = sum(n * d.flops for d, n in dots.items())
  by_runtime = collections.defaultdict(lambda: [0.0, 0])
  for d, n in dots.items():
    by_runtime[d.runtime][0] += n * seconds[d]
    by_runtime[d.runtime][1] += n * d.flops
  model = flop_count.model_flops(stage, b, t, c.model)['total']
  slowest = sorted(dots, key=lambda d: -dots[d] * seconds[d])[: _TOP.value]
  out = {
    'products_s': total_s,
    'products_flops': total_flops,
    'products_rate_fraction': total_flops / total_s / rate,
    'products_mfu_ceiling': model / total_s / rate,
    'model_flops_per_step': model,
    'matmul_flops_per_s': rate,
    'distinct_products': len(dots),
    'products': sum(dots.values()),
    'by_runtime': {
      k: {'s': s, 'flops': f, 'flops_per_s': f / s} for k, (s, f) in sorted(by_runtime.items())
    },
    'slowest': [
      {
        'count': dots[d],
        'lhs': d.lhs,
        'rhs': d.rhs,
        'dimension_numbers': {
          'lhs_batch': d.lhs_batch,
          'lhs_contracting': d.lhs_contracting,
          'rhs_batch': d.rhs_batch,
          'rhs_contracting': d.rhs_contracting,
        },
        'runtime': d.runtime,
        's': dots[d] * seconds[d],
        'flops_per_s': d.flops / seconds[d],
      }
      for d in slowest
    ],
    'stage': stage,
    'batch': b,
    'frames': t,
    'glimpse': train_step._GLIMPSE.value,
    'compute_dtype': train_step._DTYPE.value,
    **machine.machine_info(),
  }
  print(json.dumps(out))


if __name__ == '__main__':
  app.run(main)
