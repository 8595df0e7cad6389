"""Glimpse strategies of the paper's section 5.1: who decides where each glimpse is taken.

  glitr                the learned policy: Tl's locations from the student's own glimpses.
  uniform              U(-1, 1)^2, independently for every t.
  gaussian             N(0, 1) through tanh, independently for every t.
  center               (0, 0) at every t.
  bottom_left          (-1 + s, 1 - s), s = n / grid: the glimpse inside the frame, touching its
                       bottom-left corner (docs/design.md section 5; ly points down).
  teacher              the teacher's locations from full frames (init_loc, then Tl~): an upper
                       bound.
  teacher_full_frames  not a glimpse strategy: the teacher's own accuracy on full frames.

Every strategy but `glitr` and `teacher_full_frames` replaces all of l_1..l_T, so the student
classifies their glimpses in one batched pass (no sequential dependency).

Random locations are a function of (eval seed, strategy, seed index, example index) only, so the
numbers do not depend on the batch size, the device count or the order of the batches.
"""

import jax
import jax.numpy as jnp

from glitr_jax import glimpse as glimpse_lib

GLITR = 'glitr'
UNIFORM = 'uniform'
GAUSSIAN = 'gaussian'
CENTER = 'center'
BOTTOM_LEFT = 'bottom_left'
TEACHER = 'teacher'
TEACHER_FULL_FRAMES = 'teacher_full_frames'

ALL = (GLITR, UNIFORM, GAUSSIAN, CENTER, BOTTOM_LEFT, TEACHER, TEACHER_FULL_FRAMES)
RANDOM = (UNIFORM, GAUSSIAN)
FIXED = (CENTER, BOTTOM_LEFT)
NEEDS_TEACHER = (TEACHER, TEACHER_FULL_FRAMES)
# Strategies whose glimpses are taken at locations known before the student runs.
GIVEN_LOCATIONS = (UNIFORM, GAUSSIAN, CENTER, BOTTOM_LEFT, TEACHER)

# Folded into the eval seed so that the two random strategies draw independent numbers.
_STREAM = {UNIFORM: 1, GAUSSIAN: 2}


def validate(names: tuple[str, ...], field: str = 'eval.strategies') -> tuple[str, ...]:
  """Checks strategy names; returns them in the canonical order of `ALL`, without duplicates."""
  unknown = sorted(set(names) - set(ALL))
  if unknown:
    raise ValueError(f'{field}: unknown strategies {unknown}; known: {list(ALL)}')
  if not names:
    raise ValueError(f'{field} is empty; name at least one of {list(ALL)}')
  return tuple(n for n in ALL if n in names)


def fixed_locations(
  name: str, glimpse_patches: int, grid_size: int, batch: int, num_frames: int
) -> jax.Array:
  """(B, T, 2) copies of a fixed strategy's location (glimpse.fixed_location)."""
  loc = jnp.asarray(glimpse_lib.fixed_location(name, glimpse_patches, grid_size), jnp.float32)
  return jnp.broadcast_to(loc, (batch, num_frames, 2))


def random_locations(
  name: str, eval_seed: int, seed_index: int, index_b: jax.Array, num_frames: int
) -> jax.Array:
  """A random strategy's locations for each example.

  Args:
    name: 'uniform' (U(-1, 1)^2) or 'gaussian' (tanh of N(0, 1)).
    eval_seed: the evaluation's base seed (`eval.seed`).
    seed_index: which of the `eval.num_seeds` repetitions.
    index_b: (B,) global example indices (padding may hold -1; its draws are never counted).
    num_frames: T.

  Returns:
    (B, T, 2) float32 locations (lx, ly); example i's draws depend only on (eval_seed, name,
    seed_index, i).
  """
  if name not in _STREAM:
    raise ValueError(f'{name!r} is not a random strategy; known: {list(_STREAM)}')
  key = jax.random.fold_in(jax.random.key(eval_seed), _STREAM[name])
  key = jax.random.fold_in(key, seed_index)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.maximum(index_b, 0).astype(jnp.uint32))
  if name == UNIFORM:
    draw = lambda k: jax.random.uniform(k, (num_frames, 2), jnp.float32, -1.0, 1.0)
  else:
    draw = lambda k: jnp.tanh(jax.random.normal(k, (num_frames, 2), jnp.float32))
  return jax.vmap(draw)(keys)
