"""Where a run's weights start (docs/design.md 3.3).

teacher   from scratch (docs/design.md 1.5: Tl a copy of Tc), then optionally Tf from an
          ImageNet ViT (`init.backbone`, the SSv2 teacher's iBOT ViT-S/16), and/or everything
          from another GliTr teacher (`init.checkpoint`, the Jester teacher from the SSv2 one:
          `init.drop_classifier` re-initialises Tc's classifier, `init.temporal_stride`
          subsamples both heads' temporal embeddings [::stride]).
student   a copy of its teacher (`teacher_checkpoint`), which also stays frozen as the target.
"""

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from glitr_jax import convert, weights
from glitr_jax.convert import common
from glitr_jax.models import glitr

Params = Any


def source_model_config(
  source: str, model_config: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
  """The model config a checkpoint was written with.

  A workdir (or one of its checkpoint directories) records it in config.json; for an official
  file, the class count and frame count are read off the state dict and the rest of
  `model_config` is assumed.
  """
  path, _ = weights.resolve(source)
  if os.path.isfile(path):
    state = common.read_state_dict(path)
    out = ml_collections.ConfigDict(model_config.to_dict())
    key = 'temporal_head.head.weight'
    if key in state:
      out.num_classes = int(state[key].shape[0])
    if 'temporal_head.tmp_embed' in state:
      out.num_frames = int(state['temporal_head.tmp_embed'].shape[1])
    return out
  record = weights.record_beside(path)
  if record is None:
    raise FileNotFoundError(f'no config.json beside {source}: cannot tell its model config')
  return record.model


def transfer(
  target: Params, loaded: Params, *, drop_classifier: bool, temporal_stride: int, source: str
) -> Params:
  """`loaded`'s weights in `target`'s shapes: subsample temporal embeddings, drop Tc's head."""
  out = jax.tree.map(lambda x: x, target)
  for name in ('backbone', 'temporal_head', 'temploc_head'):
    sub = dict(loaded[name])
    if name != 'backbone' and temporal_stride > 1:
      sub['tmp_embed'] = sub['tmp_embed'][:, ::temporal_stride]
    if name == 'temporal_head' and drop_classifier:
      sub['head'] = target[name]['head']
    out[name] = sub
  want = jax.tree.map(np.shape, target)
  got = jax.tree.map(np.shape, out)
  if want != got:
    diffs = [
      f'{jax.tree_util.keystr(p)}: {g} (needs {w})'
      for (p, g), w in zip(
        jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want), strict=False
      )
      if g != w
    ]
    raise ValueError(
      f'init.checkpoint={source} does not fit the model after init.drop_classifier and '
      f'init.temporal_stride: {diffs or "different parameter structure"}'
    )
  return jax.tree.map(jnp.asarray, out)


def teacher_init(config: ml_collections.ConfigDict, model: glitr.GliTr) -> Params:
  params = model.init(jax.random.key(config.seed))
  if config.init.checkpoint:
    src_config = source_model_config(config.init.checkpoint, config.model)
    loaded, _ = weights.load_params(config.init.checkpoint, src_config)
    params = transfer(
      params,
      loaded,
      drop_classifier=config.init.drop_classifier,
      temporal_stride=config.init.temporal_stride,
      source=config.init.checkpoint,
    )
    logging.info('Initialised from the GliTr teacher %s', config.init.checkpoint)
  if config.init.backbone:
    backbone = convert.load_vit_backbone(config.init.backbone, config.model)
    params['backbone'] = jax.tree.map(jnp.asarray, backbone)
    logging.info('Initialised Tf from the ImageNet ViT %s', config.init.backbone)
  return params


def load_teacher(config: ml_collections.ConfigDict) -> Params:
  """The student's frozen teacher, from `config.teacher_checkpoint`."""
  if not config.teacher_checkpoint:
    raise ValueError(
      'stage=student needs teacher_checkpoint: a teacher workdir, a checkpoint directory, or an '
      'official .pth/.npz (--config.teacher_checkpoint=...)'
    )
  params, step = weights.load_params(config.teacher_checkpoint, config.model)
  logging.info('Teacher from %s (step %s)', config.teacher_checkpoint, step)
  return params


def initial_params(config: ml_collections.ConfigDict, model: glitr.GliTr) -> tuple[Params, dict]:
  """(trainable params, frozen params) for the stage."""
  if config.stage == 'teacher':
    return teacher_init(config, model), {}
  teacher = load_teacher(config)
  student = jax.tree.map(jnp.copy, teacher)
  return student, {'teacher': teacher}
