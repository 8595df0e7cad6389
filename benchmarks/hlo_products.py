"""The products (`dot`s) of a compiled XLA program: read from its HLO text, timed one by one.

Flag-free, so tests import it beside any absl program; benchmarks/step_products.py applies it to
the training step. XLA's CPU backend hands most products to YNNPACK fusions and runs the rest as
Eigen dot thunks; `hlo_dots` tells them apart.
"""

import collections
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import machine  # benchmarks/machine.py, beside this module

_DTYPES = {'f32': jnp.float32, 'bf16': jnp.bfloat16, 'f16': jnp.float16, 'f64': jnp.float64}
_DEFINITION = re.compile(r'%([\w.\-]+) = (\w+)\[([\d,]*)\]')
_DOT = re.compile(r'= (\w+)\[[\d,]*\]\S* dot\(%([\w.\-]+), %([\w.\-]+)\)(.*)')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%([\w.\-]+) .*\{\s*$')
_LIBRARY_FUSION = re.compile(r'calls=%([\w.\-]+).*"kind":"__(\w+_fusion)"')


class Dot(NamedTuple):
  """One product of the compiled HLO: operand shapes, dimension numbers, where it runs."""

  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  lhs_batch: tuple[int, ...]
  lhs_contracting: tuple[int, ...]
  rhs_batch: tuple[int, ...]
  rhs_contracting: tuple[int, ...]
  dtype: str  # HLO spelling of the result type: 'f32', 'bf16', ...
  precision: str  # 'highest' where the HLO asks for it, else ''
  runtime: str  # 'ynn_fusion', 'xnn_fusion', ...: the library fusion it is in; 'dot': a dot thunk

  @property
  def flops(self) -> int:
    """2 x batch x M x N x K."""
    contracting = math.prod(self.lhs[i] for i in self.lhs_contracting)
    kept = math.prod(self.lhs) // contracting
    free_rhs = math.prod(self.rhs) // math.prod(
      self.rhs[i] for i in self.rhs_batch + self.rhs_contracting
    )
    return 2 * kept * free_rhs * contracting


def _ints(text: str) -> tuple[int, ...]:
  return tuple(int(x) for x in text.split(',') if x)


def hlo_dots(hlo_text: str) -> collections.Counter:
  """Every `dot` of an optimised HLO module (`compiled.as_text()`), counted by `Dot`.

  Operands are named, not typed, in the compiled text, so their shapes come from their
  definitions (instruction and parameter names are unique in a module). A dot in the body of a
  library fusion (`"kind":"__ynn_fusion"` and the like) is marked with that fusion's kind.
  """
  shapes = {m.group(1): _ints(m.group(3)) for m in _DEFINITION.finditer(hlo_text)}
  library = {m.group(1): m.group(2) for m in _LIBRARY_FUSION.finditer(hlo_text)}
  dots = collections.Counter()
  computation = None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header and not line.startswith(' '):
      computation = header.group(1)
    m = _DOT.search(line)
    if not m:
      if ' dot(' in line:
        raise ValueError(f'hlo_products: cannot read this HLO dot: {line.strip()[:300]}')
      continue
    dtype, lhs, rhs, attributes = m.groups()
    dims = []
    for side, kind in [(s, k) for s in ('lhs', 'rhs') for k in ('batch', 'contracting')]:
      found = re.search(f'{side}_{kind}_dims=' + r'\{([\d,]*)\}', attributes)
      dims.append(_ints(found.group(1)) if found else ())
    precision = 'highest' if 'operand_precision={highest' in attributes else ''
    runtime = library.get(computation, 'dot')
    missing = [name for name in (lhs, rhs) if name not in shapes]
    if missing:
      raise ValueError(
        f'hlo_products: no definition of operand %{missing[0]} of: {line.strip()[:300]}'
      )
    dots[Dot(shapes[lhs], shapes[rhs], *dims, dtype, precision, runtime)] += 1
  return dots


def time_dot(dot: Dot, repeats: int) -> float:
  """Median seconds of `dot` alone: a jitted `lax.dot_general` of its shapes and dimensions."""
  if dot.dtype not in _DTYPES:
    raise ValueError(f'hlo_products: cannot time a {dot.dtype} product (times {sorted(_DTYPES)})')
  dtype = _DTYPES[dot.dtype]
  keys = jax.random.split(jax.random.key(0))
  lhs = jax.random.normal(keys[0], dot.lhs, dtype)
  rhs = jax.random.normal(keys[1], dot.rhs, dtype)
  numbers = ((dot.lhs_contracting, dot.rhs_contracting), (dot.lhs_batch, dot.rhs_batch))
  precision = jax.lax.Precision.HIGHEST if dot.precision else None
  f = jax.jit(lambda a, b: jax.lax.dot_general(a, b, numbers, precision=precision))
  return machine.time_call(f, lhs, rhs, calls=repeats)
