"""The official optimisation recipe in optax (docs/design.md 3.1).

Three AdamW optimisers, one per module: Tf (`backbone`), Tc (`temporal_head`) and Tl
(`temploc_head`, with init_loc). Each has its own learning rate `base * global_batch / 128`
following timm's per-step cosine (`CosineLRScheduler(t_in_epochs=False)`, stepped every iteration)
down to a per-module floor, with timm's warm-up where a module has one: linear from an absolute
`warmup_lr` to the peak, while the cosine is counted from step 0 (`warmup_prefix=False`), so the
rate jumps to the cosine's value when the warm-up ends. After the last step the rate stays at the
floor. Weight decay 0.05 applies to every parameter as in the official code (which defines
`no_weight_decay()` but never uses it); `optim.decay_mask=True` spares embeddings, biases and
norms instead.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

MODULES = {'backbone': 'tf', 'temporal_head': 'tc', 'temploc_head': 'tl'}
# Parameter names spared by decay_mask (timm's no_weight_decay plus biases and norms).
_NO_DECAY_NAMES = ('bias', 'scale', 'cls_token', 'cls_embed', 'pos_embed', 'tmp_embed', 'init_loc')


def peak_lr(base_lr: float, batch_size: int) -> float:
  """The linear scaling rule of the official scripts: base * global_batch / 128."""
  return base_lr * batch_size / 128.0


def cosine_schedule(
  peak: float, floor: float, total_steps: int, warmup_steps: int = 0, warmup_lr: float = 1e-6
) -> Callable[[jax.Array], jax.Array]:
  """timm's per-step cosine with a non-prefix warm-up, as a function of the step count.

  Args:
    peak: the rate the cosine starts from (at step 0).
    floor: lr_min, reached at `total_steps` and kept afterwards.
    total_steps: the cosine's length (t_initial).
    warmup_steps: steps of linear warm-up from `warmup_lr` to `peak` (0 = none).
    warmup_lr: the absolute rate the warm-up starts from.
  """

  def schedule(step):
    t = jnp.asarray(step, jnp.float32)
    cosine = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(math.pi * t / total_steps))
    lr = jnp.where(t < total_steps, cosine, floor)
    if warmup_steps > 0:
      warm = warmup_lr + t * (peak - warmup_lr) / warmup_steps
      lr = jnp.where(t < warmup_steps, warm, lr)
    return lr

  return schedule


def module_labels(params) -> dict:
  """The module ('tf', 'tc', 'tl') of every parameter, by its top-level name."""
  unknown = set(params) - set(MODULES)
  if unknown:
    raise ValueError(f'parameters {sorted(unknown)} belong to no module of {sorted(MODULES)}')
  return {name: jax.tree.map(lambda _, m=m: m, params[name]) for name, m in MODULES.items()}


def decay_mask(params) -> dict:
  """True for parameters that decay when `optim.decay_mask` is on: kernels only."""

  def keep(path, _):
    name = path[-1].key
    return name not in _NO_DECAY_NAMES

  return jax.tree_util.tree_map_with_path(keep, params)


def schedules(
  config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> dict[str, Callable]:
  """The learning-rate schedule of each module, from `config.optim` and `config.batch_size`."""
  o = config.optim
  out = {}
  for m in ('tf', 'tc', 'tl'):
    out[m] = cosine_schedule(
      peak=peak_lr(o[f'lr_{m}'], config.batch_size),
      floor=o[f'min_lr_{m}'],
      total_steps=total_steps,
      warmup_steps=int(round(o[f'warmup_epochs_{m}'] * steps_per_epoch)),
      warmup_lr=o.warmup_lr,
    )
  return out


def make_optimizer(
  config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.GradientTransformation:
  """AdamW per module with its own schedule, plus optional global-norm clipping."""
  o = config.optim
  lrs = schedules(config, total_steps, steps_per_epoch)
  mask = decay_mask if o.decay_mask else None
  per_module = {
    m: optax.adamw(lrs[m], b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask)
    for m in lrs
  }
  tx = optax.multi_transform(per_module, module_labels)
  if o.grad_clip_norm and o.grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), tx)
  return tx
