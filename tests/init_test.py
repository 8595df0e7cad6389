"""Where a run's weights start: Jester teacher from the SSv2 teacher, Tf from an ImageNet ViT."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tiny import tiny_model_config, tiny_train_config

from glitr_jax import convert, weights
from glitr_jax.models import glitr
from glitr_jax.train import checkpoints, init

# An "SSv2 teacher" in miniature: 6 classes, 8 frames; the "Jester teacher" has 4 and 4.
SOURCE = tiny_model_config(num_classes=6, num_frames=8)
TARGET = tiny_model_config(num_classes=4, num_frames=4)


@pytest.fixture(scope='module')
def source_checkpoint(tmp_path_factory):
  params = glitr.GliTr.from_config(SOURCE).init(jax.random.key(11))
  path = tmp_path_factory.mktemp('ssv2_teacher') / 'teacher.npz'
  np.savez(path, **convert.to_state_dict(params))
  return str(path), params


def jester_config(path):
  config = tiny_train_config('teacher')
  config.model = TARGET
  config.init.checkpoint = path
  config.init.drop_classifier = True
  config.init.temporal_stride = 2
  return config


def test_jester_teacher_starts_from_the_ssv2_teacher(source_checkpoint):
  path, source = source_checkpoint
  config = jester_config(path)
  model = glitr.GliTr.from_config(config.model)
  params = init.teacher_init(config, model)
  scratch = model.init(jax.random.key(config.seed))
  jax.tree.map(np.testing.assert_array_equal, params['backbone'], source['backbone'])
  for head in ('temporal_head', 'temploc_head'):
    # Temporal embeddings subsampled [::2]: 8 frames -> 4.
    np.testing.assert_array_equal(params[head]['tmp_embed'], source[head]['tmp_embed'][:, ::2])
    jax.tree.map(np.testing.assert_array_equal, params[head]['blocks_0'], source[head]['blocks_0'])
  # Tc's classifier (6 classes) is dropped: the target keeps its fresh 4-class head.
  jax.tree.map(
    np.testing.assert_array_equal, params['temporal_head']['head'], scratch['temporal_head']['head']
  )
  # Tl's location head and init_loc come from the source.
  np.testing.assert_array_equal(
    params['temploc_head']['init_loc'], source['temploc_head']['init_loc']
  )


def test_without_dropping_the_classifier_the_class_count_must_match(source_checkpoint):
  path, _ = source_checkpoint
  config = jester_config(path)
  config.init.drop_classifier = False
  with pytest.raises(ValueError, match=r'init.checkpoint=.*does not fit the model'):
    init.teacher_init(config, glitr.GliTr.from_config(config.model))


def test_wrong_stride_is_a_clear_error(source_checkpoint):
  path, _ = source_checkpoint
  config = jester_config(path)
  config.init.temporal_stride = 1
  with pytest.raises(ValueError, match='tmp_embed'):
    init.teacher_init(config, glitr.GliTr.from_config(config.model))


def test_imagenet_vit_initialises_only_tf(tmp_path):
  model = glitr.GliTr.from_config(TARGET)
  vit = model.init(jax.random.key(5))['backbone']
  state = {k[len('backbone.') :]: v for k, v in convert.to_state_dict({'backbone': vit}).items()}
  # timm keeps one position embedding with the class token's row first.
  state['pos_embed'] = np.concatenate([state.pop('cls_embed'), state['pos_embed']], axis=1)
  state['head.weight'] = np.zeros((1000, TARGET.hidden_size), np.float32)
  path = tmp_path / 'vit.npz'
  np.savez(path, **state)
  config = tiny_train_config('teacher')
  config.model = TARGET
  config.init.backbone = str(path)
  params = init.teacher_init(config, model)
  jax.tree.map(np.testing.assert_array_equal, params['backbone'], vit)
  scratch = model.init(jax.random.key(config.seed))
  jax.tree.map(np.testing.assert_array_equal, params['temporal_head'], scratch['temporal_head'])


def test_student_starts_as_a_copy_of_its_frozen_teacher(source_checkpoint):
  path, source = source_checkpoint
  config = tiny_train_config('student')
  config.model = SOURCE
  config.teacher_checkpoint = path
  params, frozen = init.initial_params(config, glitr.GliTr.from_config(SOURCE))
  jax.tree.map(np.testing.assert_array_equal, params, source)
  jax.tree.map(np.testing.assert_array_equal, frozen['teacher'], source)
  config.teacher_checkpoint = ''
  with pytest.raises(ValueError, match='teacher_checkpoint'):
    init.initial_params(config, glitr.GliTr.from_config(SOURCE))


def test_checkpoints_keep_the_last_n_and_the_best_by_accuracy(tmp_path):
  config = tiny_train_config('teacher')
  config.checkpoint.keep = 2
  config.checkpoint.async_save = False
  manager = checkpoints.make_manager(str(tmp_path), config)
  accuracies = {1: None, 2: 0.5, 3: None, 4: 0.9, 5: 0.2, 6: None, 7: None}
  for step, acc in accuracies.items():
    params = {'w': np.full(3, step, np.float32)}
    manager.save(
      step,
      args=ocp.args.Composite(params=ocp.args.StandardSave(params)),
      metrics=None if acc is None else {checkpoints.BEST_METRIC: acc},
    )
  manager.wait_until_finished()
  assert manager.all_steps() == [4, 6, 7]  # the best (0.9 at step 4) and the last two
  assert checkpoints.best_step(manager) == 4
  manager.close()
  assert weights.resolve(str(tmp_path), 'best') == (str(tmp_path / 'checkpoints' / '4'), 4)
  assert weights.resolve(str(tmp_path), 'latest')[1] == 7
  # A resumed run (a new manager) still knows the best one.
  manager = checkpoints.make_manager(str(tmp_path), config)
  for step, acc in {8: None, 9: 0.3}.items():
    manager.save(
      step,
      args=ocp.args.Composite(params=ocp.args.StandardSave({'w': np.zeros(3, np.float32)})),
      metrics=None if acc is None else {checkpoints.BEST_METRIC: acc},
    )
  manager.wait_until_finished()
  assert manager.all_steps() == [4, 8, 9]
  manager.close()
