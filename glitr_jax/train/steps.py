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
from glitr_jax.data import device_augment
from glitr_jax.data import mixup as mixup_lib
from glitr_jax.models import glitr

Params = Any
# fold_in constant of the device augmentation's key (the erasing noise), beside mixup's draws.
_DEVICE_AUGMENT_STREAM = 1


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
  """The training clips (augmented here with `data.augment.device`), then Mixup/CutMix when
  configured; label-smoothed one-hot targets otherwise.

  Returns:
    The (possibly mixed) video, (B, C) targets, and the offline logits mixed the same way
    (or None).
  """
  aug = config.data.augment
  labels = batch['label']
  if aug.device:  # The host sent frames and draws (data.augment.device): augment them here.
    video = device_augment.augment_batch(
      batch,
      jax.random.fold_in(rng, _DEVICE_AUGMENT_STREAM),
      image_size=config.model.image_size,
      random_erasing=aug.random_erasing > 0,
    )
  else:
    video = batch['video']
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


def teacher_loss_from_inputs(
  model: glitr.GliTr,
  config: ml_collections.ConfigDict,
  params: Params,
  inputs: dict[str, jax.Array | None],
  rng: jax.Array,
) -> tuple[jax.Array, tuple[dict, dict]]:
  """The teacher's loss as a function of its parameters, given `stage_inputs`.

  The consistency branch crops glimpses at the teacher's own locations and passes them through
  frozen copies T'f, T'c of the current Tf, Tc: the same parameters under stop_gradient (no copy
  in memory), in training mode (drop-path on) as the official copies are. Its losses therefore
  reach only Tl and init_loc, through the locations. Its targets are the teacher's f~ and y~ of
  this forward (docs/design.md section 2.2); nothing else of the full-frame pass applies to
  glimpses.
  """
  _, r_fwd, r_cons = jax.random.split(rng, 3)
  w = config.loss
  video = inputs['video']
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
  total, terms = losses.teacher_objective(
    teacher, glimpsed, inputs['targets'], inputs['offline'], w
  )
  return total, (terms, {'logits': teacher['logits']})


def student_loss_from_inputs(
  model: glitr.GliTr,
  config: ml_collections.ConfigDict,
  params: Params,
  inputs: dict[str, Any],
  rng: jax.Array,
) -> tuple[jax.Array, tuple[dict, dict]]:
  """GliTr's loss as a function of its parameters, given `stage_inputs`."""
  _, r_fwd = jax.random.split(rng)
  student = model.student_forward(params, inputs['video'], train=True, rng=r_fwd)
  teacher = inputs['teacher']
  if teacher is None:  # The CE-only baseline: the consistency terms are computed at weight 0.
    teacher = {'logits': jax.lax.stop_gradient(student['logits']), 'features': student['features']}
  total, terms = losses.student_objective(student, teacher, inputs['targets'], config.loss)
  return total, (terms, {'logits': student['logits']})


def batch_teacher_targets(model: glitr.GliTr, teacher_params: Params, video: jax.Array) -> dict:
  """The frozen teacher's logits and features on full frames (all B * T frames in one Tf pass),
  under stop_gradient."""
  out = model.frame_targets(jax.lax.stop_gradient(teacher_params), jax.lax.stop_gradient(video))
  return jax.tree.map(jax.lax.stop_gradient, out)


# The objective of each stage, as a function of the parameters: the train step differentiates it.
OBJECTIVES = {'teacher': teacher_loss_from_inputs, 'student': student_loss_from_inputs}
# How many keys each stage splits its step's key into: the first is the mixup's; the objective
# splits the same key the same way and takes the others (its forward, the teacher's glimpses).
_RNG_SPLITS = {'teacher': 3, 'student': 2}


def stage_inputs(
  model: glitr.GliTr,
  config: ml_collections.ConfigDict,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  frozen: dict[str, Params],
  offline_fn: Callable | None = None,
) -> dict[str, Any]:
  """What `config.stage`'s objective needs besides its parameters, computed outside autodiff.

  The frozen forwards run here, before jax.value_and_grad, so no gradient state exists for them:
  for the teacher the offline model (L_dist), for the student the frozen teacher (ViT-S on every
  full frame, the largest part of a student step, as one batched pass over all B * T frames).

  Returns:
    video (B, T, H, W, 3) after augmentation and mixup/CutMix, targets (B, C), and
    teacher stage: `offline`, the offline model's logits (B, C) for L_dist, or None without it;
    student stage: `teacher`, the frozen teacher's {'logits' (B, T, C), 'features' (B, T, D)},
    or None for the CE-only baseline (which needs no teacher).
  """
  r_mix = jax.random.split(rng, _RNG_SPLITS[config.stage])[0]
  video, targets, offline = _targets_and_video(
    config, r_mix, batch, model.temporal_head.num_outputs
  )
  inputs = {'video': video, 'targets': targets}
  w = config.loss
  if config.stage == 'teacher':
    if w.dist > 0 and offline is None:
      if offline_fn is None:
        raise ValueError(
          'loss.dist > 0 needs offline logits: set offline.model (on the fly) or '
          'data.offline_logits (precomputed)'
        )
      offline = offline_fn(frozen['offline'], video)
    inputs['offline'] = offline if w.dist > 0 else None
  else:
    teacher = None
    if w.spatial > 0 or w.temporal > 0:
      teacher = batch_teacher_targets(model, frozen['teacher'], video)
    inputs['teacher'] = teacher
  return jax.lax.stop_gradient(inputs)


def stage_loss(
  model: glitr.GliTr,
  config: ml_collections.ConfigDict,
  params: Params,
  batch: dict[str, jax.Array],
  rng: jax.Array,
  frozen: dict[str, Params],
  offline_fn: Callable | None = None,
) -> tuple[jax.Array, tuple[dict, dict]]:
  """`config.stage`'s objective on one batch (docs/design.md 2.2): its inputs, then its loss.

  The teacher's: CE, L_dist and the consistency terms on glimpses at its own locations; the
  student's: GliTr's loss against the frozen teacher's full-frame targets. The train step splits
  the two parts and differentiates only the second; this is the reference form of both.
  """
  inputs = stage_inputs(model, config, batch, rng, frozen, offline_fn)
  return OBJECTIVES[config.stage](model, config, params, inputs, rng)


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
  if config.stage not in OBJECTIVES:
    raise ValueError(f"stage={config.stage!r}: must be 'teacher' or 'student'")
  objective = functools.partial(OBJECTIVES[config.stage], model, config)

  def train_step(state: TrainState, batch: dict, frozen: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    # Frozen forwards (the student's teacher, the offline model) run before autodiff.
    inputs = stage_inputs(model, config, batch, rng, frozen, offline_fn)
    grad_fn = jax.value_and_grad(objective, argnums=0, has_aux=True)
    (total, (terms, outputs)), grads = grad_fn(state.params, inputs, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'loss': total, **terms, 'grad_norm': optax.global_norm(grads)}
    metrics.update({f'lr_{m}': fn(state.step) for m, fn in lr_schedules.items()})
    metrics['accuracy_per_t'] = losses.accuracy_per_t(outputs['logits'], batch['label'])
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step
