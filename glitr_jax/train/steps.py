"""Train and eval steps: pure functions of (state, batch, frozen), jitted once with shardings.

Teacher and student share one update (`make_train_step`) and differ only in the loss they plug
in. Randomness comes from one base key in the state, `fold_in(key, step)` then split per use, so a
resumed run draws exactly what an uninterrupted one would. Frozen weights (the student's teacher;
VideoMAE) are a separate argument: never updated, never donated, never checkpointed with the state.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from glitr_jax import losses
from glitr_jax.models import glitr

Params = Any


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue, besides the data iterator.

  Attributes:
    step: () int32 number of updates applied.
    params: GliTr parameters.
    opt_state: optax state.
    rng: (2,) uint32 raw key data of the run's base key (checkpointable as a plain array).
  """

  step: jax.Array
  params: Params
  opt_state: Any
  rng: jax.Array


def create_state(params: Params, tx: optax.GradientTransformation, seed: int) -> TrainState:
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=tx.init(params),
    rng=jax.random.key_data(jax.random.key(seed)),
  )


def _targets_and_video(config, rng, batch, num_classes):
  """Mixup/CutMix on device when configured; label-smoothed one-hot targets otherwise.

  Returns:
    The (possibly mixed) video, (B, C) targets, and the offline logits mixed the same way
    (or None).
  """
  from glitr_jax.data import mixup as mixup_lib  # noqa: PLC0415 (import cycle with data)

  aug = config.data.augment
  video, labels = batch['video'], batch['label']
  offline = batch.get('offline_logits')
  if aug.mixup > 0 or aug.cutmix > 0:
    # Precomputed offline logits belong to the unmixed clips: mix their distributions the way the
    # labels are mixed (a mixture of the two videos' predictions), and return log-probabilities.
    soft = None if offline is None else jax.nn.softmax(offline.astype(jnp.float32), axis=-1)
    video, targets, soft = mixup_lib.mixup_cutmix(
      rng,
      video,
      labels,
      num_classes=num_classes,
      mixup_alpha=aug.mixup,
      cutmix_alpha=aug.cutmix,
      prob=aug.mixup_prob,
      switch_prob=aug.mixup_switch_prob,
      label_smoothing=config.loss.label_smoothing,
      soft=soft,
    )
    offline = None if soft is None else jnp.log(jnp.maximum(soft, 1e-12))
  else:
    targets = losses.smooth_labels(labels, num_classes, config.loss.label_smoothing)
  return video, targets, offline


def teacher_loss(
  model: glitr.GliTr,
  config: ml_collections.ConfigDict,
  params: Params,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  frozen: dict[str, Params],
  offline_fn: Callable | None = None,
) -> tuple[jax.Array, tuple[dict, dict]]:
  """The teacher's objective (DESIGN.md section 2) on one batch.

  The consistency branch crops glimpses at the teacher's own locations and passes them through
  frozen copies T'f, T'c of the current Tf, Tc: the same parameters under stop_gradient (no copy
  in memory), in training mode (drop-path on) as the official copies are. Its losses therefore
  reach only Tl and init_loc, through the locations.
  """
  r_mix, r_fwd, r_cons = jax.random.split(rng, 3)
  w = config.loss
  video, targets, offline = _targets_and_video(
    config, r_mix, batch, model.temporal_head.num_outputs
  )
  if w.dist > 0 and offline is None:
    if offline_fn is None:
      raise ValueError(
        'loss.dist > 0 needs offline logits: set offline.model (on the fly) or '
        'data.offline_logits (precomputed)'
      )
    offline = jax.lax.stop_gradient(offline_fn(frozen['offline'], video))
  if w.dist == 0:
    offline = None
  teacher = model.teacher_forward(params, video, train=True, rng=r_fwd)
  glimpsed = None
  if w.spatial > 0 or w.temporal > 0:
    frozen_copy = {
      'backbone': jax.lax.stop_gradient(params['backbone']),
      'temporal_head': jax.lax.stop_gradient(params['temporal_head']),
      'temploc_head': params['temploc_head'],
    }
    glimpsed = model.student_forward(
      frozen_copy, video, locations=teacher['locations'], train=True, rng=r_cons
    )
  total, terms = losses.teacher_objective(teacher, glimpsed, targets, offline, w)
  return total, (terms, {'logits': teacher['logits']})


def student_loss(
  model: glitr.GliTr,
  config: ml_collections.ConfigDict,
  params: Params,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  frozen: dict[str, Params],
  offline_fn: Callable | None = None,
) -> tuple[jax.Array, tuple[dict, dict]]:
  """GliTr's objective against the frozen teacher's full-frame targets."""
  del offline_fn
  r_mix, r_fwd = jax.random.split(rng)
  video, targets, _ = _targets_and_video(config, r_mix, batch, model.temporal_head.num_outputs)
  student = model.student_forward(params, video, train=True, rng=r_fwd)
  w = config.loss
  if w.spatial > 0 or w.temporal > 0:
    teacher = batch_teacher_targets(model, frozen['teacher'], video)
  else:  # The CE-only baseline needs no teacher forward.
    teacher = {'logits': jax.lax.stop_gradient(student['logits']), 'features': student['features']}
  total, terms = losses.student_objective(student, teacher, targets, w)
  return total, (terms, {'logits': student['logits']})


def batch_teacher_targets(model: glitr.GliTr, teacher_params: Params, video: jax.Array) -> dict:
  """The frozen teacher's logits and features; stop_gradient on its weights, so autodiff builds
  no backward state for it (it is the largest forward of a student step)."""
  out = model.frame_targets(jax.lax.stop_gradient(teacher_params), jax.lax.stop_gradient(video))
  return jax.tree.map(jax.lax.stop_gradient, out)


LOSSES = {'teacher': teacher_loss, 'student': student_loss}


def make_train_step(
  model: glitr.GliTr,
  config: ml_collections.ConfigDict,
  tx: optax.GradientTransformation,
  lr_schedules: dict[str, Callable],
  offline_fn: Callable | None = None,
) -> Callable:
  """Builds `train_step(state, batch, frozen) -> (state, metrics)` for `config.stage`.

  Metrics (device scalars, fetched by the loop at log time): `loss`, every loss term, `lr_tf`,
  `lr_tc`, `lr_tl` at this step, `grad_norm`, and `accuracy_per_t` (T,) on the batch's true labels.
  """
  if config.stage not in LOSSES:
    raise ValueError(f"stage={config.stage!r}: must be 'teacher' or 'student'")
  loss_fn = functools.partial(LOSSES[config.stage], model, config)

  def train_step(state: TrainState, batch: dict, frozen: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    grad_fn = jax.value_and_grad(loss_fn, argnums=0, has_aux=True)
    (total, (terms, outputs)), grads = grad_fn(state.params, batch, rng, frozen, offline_fn)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': total, **terms, 'grad_norm': optax.global_norm(grads)}
    metrics.update({f'lr_{m}': fn(state.step) for m, fn in lr_schedules.items()})
    metrics['accuracy_per_t'] = losses.accuracy_per_t(outputs['logits'], batch['label'])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step
