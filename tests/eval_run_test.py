"""`main.py --mode=evaluate` end to end: tiny student and teacher on a tiny glitr_synthetic set."""

import dataclasses
import json
import os

import numpy as np
import orbax.checkpoint as ocp
import pytest
from eval_online_test import discriminative_params, tiny_eval_model_config
from PIL import Image

from configs import common
from glitr_jax import run as main_run
from glitr_jax.data import config as data_config_lib
from glitr_jax.eval import online, report, run, strategies
from glitr_jax.train import checkpoints

NUM_VALIDATION = 13  # eval.batch_size 8 does not divide it
STUDENT_STEP = 5


def tiny_config(data_dir: str):
  c = common.get_base_config()
  c.model = tiny_eval_model_config()
  c.data = data_config_lib.get_data_config(
    name='glitr_synthetic', data_dir=data_dir, worker_count=0, eval_short_side=32
  )
  c.data.augment.rand_augment = ''
  s = c.data.synthetic
  s.frame_size, s.num_frames, s.num_classes, s.num_motions = 32, 4, 4, 2
  s.train_examples, s.validation_examples = 8, NUM_VALIDATION
  s.num_distractors, s.target_size, s.cue_radius = 2, 5, 20.0
  c.eval.batch_size = 8
  c.eval.num_seeds = 2
  c.eval.num_pictures = 2
  return c


def save_params(workdir: str, step: int, params, config) -> None:
  """A workdir as training leaves it: checkpoints/<step>/params, config.json, class names."""
  manager = ocp.CheckpointManager(
    checkpoints.checkpoint_dir(workdir),
    item_names=('params',),
    options=ocp.CheckpointManagerOptions(create=True),
  )
  manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
  manager.wait_until_finished()
  manager.close()
  checkpoints.write_run_info(workdir, config, [f'class {i}' for i in range(4)])


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('eval_run'))
  config = tiny_config(os.path.join(root, 'tfds'))
  teacher_dir, student_dir = os.path.join(root, 'teacher'), os.path.join(root, 'student')
  save_params(teacher_dir, 3, discriminative_params(1)[1], config)
  save_params(student_dir, 2, discriminative_params(3)[1], config)
  save_params(student_dir, STUDENT_STEP, discriminative_params(2)[1], config)
  config.teacher_checkpoint = teacher_dir
  main_run.main(config, student_dir, 'evaluate')  # what main.py --mode=evaluate calls
  return config, student_dir


def test_evaluate_writes_the_report(evaluated):
  _, student_dir = evaluated
  out = os.path.join(student_dir, 'eval')
  with open(os.path.join(out, 'report.json')) as f:
    r = json.load(f)
  assert set(report.REQUIRED_KEYS) <= set(r)
  assert r['num_examples'] == NUM_VALIDATION  # every example once, padding never
  assert r['checkpoint_step'] == STUDENT_STEP  # the newest checkpoint
  assert set(r['accuracy_per_t']) == set(strategies.ALL)
  assert all(len(v) == 4 and all(0 <= a <= 1 for a in v) for v in r['accuracy_per_t'].values())
  assert set(r['accuracy_std_per_t']) == set(strategies.RANDOM)
  assert r['sensing']['glimpse_pixels_per_video'] == 4 * 16 * 16
  assert r['sensing']['full_frame_pixels_per_video'] == 4 * 32 * 32
  by_gamma = {e['gamma']: e for e in r['early_exit']}
  assert by_gamma[0.0]['mean_glimpses'] == 1.0
  assert by_gamma[1.01]['mean_glimpses'] == 4.0
  assert by_gamma[1.01]['accuracy'] == pytest.approx(r['accuracy_per_t']['glitr'][-1])
  assert by_gamma[0.0]['accuracy'] == pytest.approx(r['accuracy_per_t']['glitr'][0])
  assert r['class_names'][0] != 'class 0'  # the dataset's names, not the workdir's
  md = open(os.path.join(out, 'report.md')).read()
  pictures = ['accuracy_per_t.png', 'early_exit.png', 'glimpse_locations.png']
  pictures += [f'examples/example_0{i}.{ext}' for i in range(2) for ext in ('png', 'gif')]
  for name in pictures:
    assert f']({name})' in md, name
    with Image.open(os.path.join(out, name)) as image:
      assert image.width > 100, name
  hist = np.load(os.path.join(out, report.LOCATIONS_FILE))['histogram']
  np.testing.assert_array_equal(hist.sum(axis=(1, 2)), NUM_VALIDATION)


def test_evaluate_loads_the_named_checkpoint_and_teacher(evaluated):
  config, student_dir = evaluated
  plan = online.plan_from_config(config, strategies.ALL)
  named = config.copy_and_resolve_references()
  named.eval_checkpoint = os.path.join(student_dir, 'checkpoints', '2')
  params, step, _, teacher, kept = run._load(named, student_dir, plan)
  assert step == 2 and kept == plan and teacher is not None
  want = discriminative_params(3)[1]
  np.testing.assert_array_equal(
    params['temporal_head']['head']['kernel'], want['temporal_head']['head']['kernel']
  )
  # Without a teacher the teacher strategies are skipped, not faked.
  alone = config.copy_and_resolve_references()
  alone.teacher_checkpoint = ''
  _, _, _, teacher, kept = run._load(alone, student_dir, plan)
  assert teacher is None and not kept.needs_teacher
  assert kept == dataclasses.replace(
    plan, strategies=tuple(s for s in plan.strategies if s not in strategies.NEEDS_TEACHER),
    teacher_at_glitr=False,
  )  # fmt: skip
  with pytest.raises(ValueError, match="eval.checkpoint='newest'"):
    bad = config.copy_and_resolve_references()
    bad.eval.checkpoint = 'newest'
    run._load(bad, student_dir, plan)
