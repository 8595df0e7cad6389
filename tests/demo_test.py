"""configs/demo.py and glitr_jax.pipeline: stages, their configs and folders, skipping, errors.

The end-to-end test runs `main.py --config=configs/demo.py` for real (a few steps on a few dozen
videos, the demo's model): teacher, student and evaluation into their folders; run again, nothing
reruns; `:baseline` then trains and evaluates the CE-only student beside them, and
glitr_jax.tools.policy_coverage reads the run's policies against the true targets. The demo's
findings themselves need its full budget (minutes): README.md reports them, measured with the
command there.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_model_config

from configs import demo
from glitr_jax import losses, pipeline
from glitr_jax.data import synthetic
from glitr_jax.models import glitr
from glitr_jax.tools import policy_coverage

REPO = pathlib.Path(__file__).resolve().parents[1]
# The notebook test (tests/notebook_test.py) shrinks the demo the same way: shared compilations.
SMALL = {
  'pipeline.teacher.num_train_steps': 4,
  'pipeline.student.num_train_steps': 4,
  'data.synthetic.train_examples': 64,
  'data.synthetic.validation_examples': 32,
  'eval.batch_size': 16,
}


def test_config_stages():
  assert tuple(demo.get_config().pipeline.stages) == ('teacher', 'student', 'evaluate')
  for name in ('teacher', 'student', 'evaluate'):
    assert tuple(demo.get_config(name).pipeline.stages) == (name,)
  assert tuple(demo.get_config('baseline').pipeline.stages) == ('baseline', 'baseline_evaluate')
  with pytest.raises(ValueError, match=r'configs/demo.py:bogus.*baseline'):
    demo.get_config('bogus')


def test_stage_configs(tmp_path):
  config = demo.get_config()
  root = str(tmp_path)
  teacher = pipeline.stage_config(config, 'teacher', root)
  student = pipeline.stage_config(config, 'student', root)
  baseline = pipeline.stage_config(config, 'baseline', root)
  evaluate = pipeline.stage_config(config, 'evaluate', root)
  assert 'pipeline' not in teacher and 'pipeline' not in student
  assert teacher.stage == 'teacher' and student.stage == baseline.stage == 'student'
  assert teacher.num_train_steps == config.pipeline.teacher.num_train_steps
  assert (
    student.num_train_steps == baseline.num_train_steps == config.pipeline.student.num_train_steps
  )
  assert teacher.optim.lr_tf == config.pipeline.teacher.optim.lr_tf
  assert student.optim.lr_tf == config.pipeline.student.optim.lr_tf
  # Only the teacher's Tl warms up (the official SSv2 teacher's recipe, docs/design.md 3.2).
  assert teacher.optim.warmup_epochs_tl > 0 and student.optim.warmup_epochs_tl == 0
  assert teacher.optim.warmup_epochs_tf == teacher.optim.warmup_epochs_tc == 0
  # The students' Tf, Tc and Tl at one base rate, one floor (the paper's recipe): none held.
  for optim in (student.optim, baseline.optim):
    assert optim.lr_tf == optim.lr_tc == optim.lr_tl > 0
    assert optim.min_lr_tf == optim.min_lr_tc == optim.min_lr_tl
  # The paper's glimpse regime: a glimpse side of 0.29-0.57 of the frame's.
  glimpse_side = teacher.model.glimpse_patches * teacher.model.patch_size
  assert 0.29 <= glimpse_side / teacher.model.image_size <= 0.57
  assert student.teacher_checkpoint == baseline.teacher_checkpoint == os.path.join(root, 'teacher')
  assert evaluate.eval_checkpoint == os.path.join(root, 'student')
  # The baseline is the student with the consistency terms off (CE only), the same budget.
  assert (student.loss.spatial, student.loss.temporal) == (1.0, 1.0)
  assert (baseline.loss.spatial, baseline.loss.temporal) == (0.0, 0.0)
  assert baseline.loss.ce == student.loss.ce
  assert pipeline.stage_workdir(root, 'baseline_evaluate') == os.path.join(root, 'baseline')
  # Every stage shares the data and the seed.
  assert teacher.data.synthetic.to_dict() == student.data.synthetic.to_dict()
  # The benchmark's classes are the model's (places x identities).
  assert teacher.model.num_classes == teacher.data.synthetic.num_classes
  params = synthetic.SyntheticParams.from_config(teacher.data.synthetic)
  assert len(params.class_names()) == teacher.model.num_classes
  assert teacher.seed == student.seed == config.seed


def test_override_of_a_missing_field_names_it(tmp_path):
  config = demo.get_config()
  with config.unlocked():
    config.pipeline.student.optim.lr_typo = 1.0
  with pytest.raises(ValueError, match=r'pipeline\.student\.optim\.lr_typo'):
    pipeline.stage_config(config, 'student', str(tmp_path))


def test_student_without_a_teacher_names_the_stage_to_run(tmp_path):
  config = demo.get_config('student')
  with pytest.raises(RuntimeError, match=r"needs the finished 'teacher' stage.*no checkpoint"):
    pipeline.run(config, str(tmp_path))


def _main(workdir, data_dir, arg=''):
  command = [
    sys.executable,
    str(REPO / 'main.py'),
    f'--config=configs/demo.py{arg}',
    f'--workdir={workdir}',
    f'--config.data.data_dir={data_dir}',
    *[f'--config.{k}={v}' for k, v in SMALL.items()],
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO))
  proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stderr


def test_demo_runs_its_stages_and_skips_finished_ones(tmp_path):
  workdir, data_dir = tmp_path / 'demo', tmp_path / 'tfds'
  log = _main(workdir, data_dir)
  report_path = workdir / 'eval' / 'report.json'
  report = json.loads(report_path.read_text())
  assert report['checkpoint'] == str(workdir / 'student')
  assert report['checkpoint_step'] == SMALL['pipeline.student.num_train_steps']
  assert report['num_examples'] == SMALL['data.synthetic.validation_examples']
  assert set(report['accuracy_per_t']) >= {'glitr', 'uniform', 'teacher', 'teacher_full_frames'}
  assert 'Pipeline done' in log and '[stage 3/3: evaluate] online accuracy' in log

  written = report_path.stat().st_mtime_ns
  log = _main(workdir, data_dir)
  for i, name in enumerate(('teacher', 'student', 'evaluate'), 1):
    assert f'[stage {i}/3: {name}] finished already' in log
  assert 'ran nothing' in log
  assert report_path.stat().st_mtime_ns == written

  _main(workdir, data_dir, ':baseline')
  baseline = json.loads((workdir / 'baseline' / 'eval' / 'report.json').read_text())
  assert baseline['checkpoint'] == str(workdir / 'baseline')
  assert baseline['teacher_checkpoint'] == str(workdir / 'teacher')
  config = json.loads((workdir / 'baseline' / 'config.json').read_text())
  assert (config['loss']['spatial'], config['loss']['temporal']) == (0.0, 0.0)

  # Where the run's policies look (glitr_jax.tools.policy_coverage), on the same videos.
  coverage = policy_coverage.policy_coverage(str(workdir), num_videos=12)
  policies = coverage['policies']
  assert list(policies) == ['teacher', 'teacher_from_glimpses', 'student', 'baseline']
  for figures in policies.values():
    # Per sector of the ring, the one its first colour pair picks (configs/demo.py).
    assert len(figures['quarter_per_t']) == 8 and set(figures['per_place']) <= {'0', '1', '2', '3'}
    assert sum(p['videos'] for p in figures['per_place'].values()) == 12
    assert all(q <= v for q, v in zip(figures['quarter_per_t'], figures['in_view_per_t']))
  # Each classifier that read glimpses is scored on them; the teacher's policy had full frames.
  assert 'accuracy_per_t' not in policies['teacher']
  for name in ('teacher_from_glimpses', 'student', 'baseline'):
    accuracy = policies[name]['accuracy_per_t']
    assert len(accuracy) == 8 and all(abs(a * 12 - round(a * 12)) < 1e-9 for a in accuracy)
  # At t = 1 the teacher's policy and its policy from glimpses are the same init_loc.
  assert policies['teacher']['mean_per_t'][0] == policies['teacher_from_glimpses']['mean_per_t'][0]
  assert -np.inf < coverage['position_r2'] <= 1
  bands = coverage['location_pull']
  assert [b['from_px'] for b in bands] == list(policy_coverage.PULL_BANDS_PX)
  assert 0 < sum(b['count'] for b in bands) <= 12 * 8
  assert all(0 <= b['towards'] <= 1 and -1 <= b['mean_cos'] <= 1 for b in bands if b['count'])


def test_position_readout_finds_a_linear_code_of_the_place_and_no_more():
  rng = np.random.default_rng(0)
  xy = rng.uniform(-1, 1, size=(200, 8, 2))
  noise = rng.standard_normal((200, 8, 6))
  mixed = np.concatenate([xy @ np.array([[2.0, -1.0], [0.5, 3.0]]) + 0.3, noise], axis=-1)
  assert policy_coverage.position_readout(mixed, xy) > 1 - 1e-9  # an exact linear code
  # Features of the class alone (independent of the place) say nothing held out.
  assert abs(policy_coverage.position_readout(noise, xy)) < 0.05
  # Half the variance: x coded, y not.
  half = policy_coverage.position_readout(np.concatenate([xy[..., :1], noise], -1), xy)
  assert abs(half - 0.5) < 0.05
  with pytest.raises(ValueError, match='2 videos'):
    policy_coverage.position_readout(noise[:1], xy[:1])


def test_target_share_counts_the_target_pixels_a_glimpse_reads():
  # A 9-px target with its outline is 11 x 11 pixels round an integer centre; a 16-px glimpse
  # centred on pixel c samples c - 7.5 .. c + 7.5, so bilinear weights reach pixels c - 8 .. c + 8.
  size = 64

  def share(dx, dy=0.0):
    px = np.array([[[30.0 + dx, 20.0 + dy], [30.0, 20.0]]])
    target = np.array([[[30.0, 20.0], [30.0 + dx, 20.0 + dy]]])
    out = policy_coverage.target_share(2 * px / 63 - 1, 2 * target / 63 - 1, 16, size, 9.0)
    assert out[0, 0] == out[0, 1]  # the glimpse moving off the target or the target moving off
    return out[0, 0] * 121

  assert share(0) == 121
  assert share(10) == share(-10) == share(0, 10) == 4 * 11  # columns 32..35 of 25..35
  assert share(10, 10) == 4 * 4
  assert share(13) == 11 and share(14) == 0 and share(25, 25) == 0
  with pytest.raises(ValueError, match='differ'):
    policy_coverage.target_share(np.zeros((1, 2, 2)), np.zeros((1, 3, 2)), 16, size, 9.0)


def test_pull_towards_target_bins_by_distance_and_measures_the_angle():
  size = 65  # (size - 1) / 2 = 32 px per normalised unit
  target = np.zeros((1, 5, 2))
  # Glimpse centres 3, 9, 15 and 30 px right of the target, and one on it (no direction).
  px = np.array([3.0, 9.0, 15.0, 30.0, 0.0])
  locations = np.stack([px / 32, np.zeros(5)], axis=-1)[None]
  towards = -locations  # pulled straight at the target
  bands = policy_coverage.pull_towards_target(towards, locations, target, size)
  assert [b['count'] for b in bands] == [1, 1, 1, 1, 0]
  assert all(b['towards'] == 1.0 and b['mean_cos'] == pytest.approx(1.0) for b in bands[:4])
  assert 'towards' not in bands[4] and bands[4]['to_px'] is None
  sideways = np.stack([np.zeros(5), np.ones(5)], axis=-1)[None]  # 90 degrees: no pull towards it
  away = policy_coverage.pull_towards_target(-towards + 0.01 * sideways, locations, target, size)
  assert all(b['towards'] == 0.0 and b['mean_cos'] < -0.99 for b in away[:4])
  split = np.concatenate([towards[:, :2], -towards[:, 2:]], axis=1)
  assert [
    b.get('towards') for b in policy_coverage.pull_towards_target(split, locations, target, size)
  ] == [1.0, 1.0, 0.0, 0.0, None]


def test_consistency_pull_is_the_descent_direction_of_the_consistency_terms():
  config = tiny_model_config(drop_path_rate=0.0)
  model = glitr.GliTr.from_config(config)
  params = model.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  # Smooth frames: the crop is bilinear, so its derivative is constant between pixel positions.
  yy, xx = np.meshgrid(np.linspace(0, 3, 32), np.linspace(0, 3, 32), indexing='ij')
  phase = rng.uniform(0, 6, (2, 4, 1, 1, 3))
  frames = jnp.asarray(np.sin(xx[..., None] + 2 * yy[..., None] + phase), jnp.float32)
  locations = jnp.asarray(rng.uniform(-0.5, 0.5, (2, 4, 2)), jnp.float32)
  pull = policy_coverage.consistency_pull(model, params, frames, locations, 1.0, 0.5)
  teacher = model.teacher_forward(params, frames)

  def terms(locs):
    g = model.student_forward(params, frames, locations=locs)
    return losses.mse(g['features'], teacher['features']) + 0.5 * losses.kl(
      g['logits'], teacher['logits']
    )

  direction = jnp.asarray(rng.standard_normal((2, 4, 2)), jnp.float32)
  eps = 3e-3  # a few hundredths of a pixel: finite differences straddle few of the crop's kinks
  slope = (terms(locations + eps * direction) - terms(locations - eps * direction)) / (2 * eps)
  assert float(slope) == pytest.approx(-float(jnp.sum(pull * direction)), rel=5e-2)
  assert float(terms(locations + 1e-2 * pull / jnp.linalg.norm(pull))) < float(terms(locations))
  # Each term at its weight: the pull is linear in the two weights.
  parts = [
    policy_coverage.consistency_pull(model, params, frames, locations, *w)
    for w in ((1.0, 0.0), (0.0, 0.5))
  ]
  np.testing.assert_allclose(pull, parts[0] + parts[1], rtol=1e-4, atol=1e-7)
  assert float(jnp.abs(parts[1]).max()) > 0
