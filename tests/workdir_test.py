"""A workdir nothing can silently corrupt: each case a user met, reproduced, and what happens now.

1. The command line wins: a pipeline field has one home, so an override reaches its stage or is
   refused naming the field.
2. A command that fails leaves the workdir's config.json byte-identical.
3. A model that differs from the recorded one is refused when its weights are loaded.
4. One writer per workdir: a second command is refused at once, naming the holder; a dead
   holder's lock is taken over.
5. Flipped bytes and truncated files are found by the checkpoints' checksums: evaluation refuses,
   resuming falls back to the newest good checkpoint (the bad one is moved aside, not deleted).
6. SIGTERM is acted on after the step it arrives in: the run saves and exits with status 75.
7. The smaller cases: one-line errors for a misspelt field and a missing config file, a raw
   release that changed since it was prepared, videos smaller than the model's input.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from absl.testing import flagsaver
from data_fixtures import data_config, encode_webm, smooth_frames, write_jester_release
from tiny import tiny_train_config

from configs import demo
from glitr_jax import pipeline, weights
from glitr_jax import workdir as workdir_lib
from glitr_jax.data import prepare
from glitr_jax.eval import run as eval_run
from glitr_jax.streaming import cli as streaming_cli
from glitr_jax.train import checkpoints, loop

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'PYTHONPATH': f'{REPO}:{REPO / "tests"}'}


def run_main(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, str(REPO / 'main.py'), *args],
    cwd=REPO,
    env=ENV,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  """A finished tiny teacher run (6 steps, checkpoints at 2, 4 and 6), copied per test."""
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  config = tiny_train_config('teacher', data_dir)
  loop.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.fixture
def run_copy(trained, tmp_path):
  config, workdir = trained
  copy = str(tmp_path / 'run')
  shutil.copytree(workdir, copy)
  return config.copy_and_resolve_references(), copy


def record_bytes(workdir: str) -> bytes:
  return pathlib.Path(workdir, 'config.json').read_bytes()


# --- 1. The command line wins. ---


def test_a_stage_field_given_at_the_top_is_refused_naming_its_home():
  # On the old pipeline this trained the teacher's 300 steps, ignoring the 3.
  result = run_main(
    '--config=configs/demo.py:teacher', '--workdir=/nonexistent/w', '--config.num_train_steps=3'
  )
  assert result.returncode == 1
  assert 'pipeline.teacher.num_train_steps' in result.stderr, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert not os.path.exists('/nonexistent/w')


def test_overrides_reach_the_stages_that_use_them(tmp_path):
  config = demo.get_config()
  student_steps = config.pipeline.student.num_train_steps
  config.seed = 5
  config.pipeline.teacher.num_train_steps = 3
  config.pipeline.student.optim.lr_tl = 1e-3
  root = str(tmp_path)
  teacher, student, baseline = (
    pipeline.stage_config(config, name, root) for name in ('teacher', 'student', 'baseline')
  )
  assert teacher.num_train_steps == 3 and student.num_train_steps == student_steps
  assert teacher.seed == student.seed == baseline.seed == 5
  assert student.optim.lr_tl == baseline.optim.lr_tl == 1e-3
  assert baseline.loss.spatial == baseline.loss.temporal == 0.0
  # A field in both the shared part and a stage section has no single home: refused.
  with config.unlocked():
    config.pipeline.teacher.batch_size = config.pipeline.student.batch_size = 8
  with pytest.raises(ValueError, match=r'pipeline.student.batch_size is also set in the shared'):
    pipeline.stage_config(config, 'student', root)


# --- 2. A failed command leaves the record as it was. ---


def test_a_refused_resume_leaves_config_json_byte_identical(run_copy):
  config, workdir = run_copy
  before = record_bytes(workdir)
  other = config.copy_and_resolve_references()
  other.num_train_steps = 8
  other.model.depth = 2
  with pytest.raises(workdir_lib.RecordMismatchError, match=r'model.depth: recorded 1, given 2'):
    loop.train_and_evaluate(other, workdir)
  reseeded = config.copy_and_resolve_references()
  reseeded.seed = 1
  with pytest.raises(workdir_lib.RecordMismatchError, match=r'seed: recorded 0, given 1'):
    loop.train_and_evaluate(reseeded, workdir)
  assert record_bytes(workdir) == before
  # The intact run still loads as what it is.
  _, step = weights.load_params(workdir, config.model)
  assert step == 6


def test_a_student_refused_by_its_teacher_writes_no_record(run_copy, tmp_path):
  config, teacher_dir = run_copy
  student = config.copy_and_resolve_references()
  student.stage = 'student'
  student.teacher_checkpoint = teacher_dir
  student.model.temporal_heads = 1  # same shapes, another model
  workdir = str(tmp_path / 'student')
  with pytest.raises(workdir_lib.RecordMismatchError, match=r'model.temporal_heads: recorded 2'):
    loop.train_and_evaluate(student, workdir)
  assert not os.path.exists(os.path.join(workdir, 'config.json'))


def test_a_finished_stage_with_another_config_is_not_skipped_silently(tmp_path, monkeypatch):
  config = demo.get_config('teacher')
  (stage,) = pipeline.plan(config, str(tmp_path))
  steps = config.pipeline.teacher.num_train_steps
  monkeypatch.setattr(pipeline, 'latest_step', lambda workdir: steps)  # as if finished
  os.makedirs(stage.workdir)
  workdir_lib.write_record(stage.workdir, stage.config)
  assert pipeline.is_finished(stage)
  depth = config.model.depth
  config.model.depth = depth + 1
  (changed,) = pipeline.plan(config, str(tmp_path))
  with pytest.raises(workdir_lib.RecordMismatchError, match=rf'depth: recorded {depth}, given'):
    pipeline.is_finished(changed)


# --- 3. A mismatched model is refused when it is loaded. ---


def test_evaluating_with_other_heads_is_refused(run_copy):
  config, workdir = run_copy
  config.model.num_heads, config.model.temporal_heads = 4, 1  # shapes agree with the trained 2, 2
  with pytest.raises(workdir_lib.RecordMismatchError) as e:
    eval_run.evaluate(config, workdir)
  assert 'model.num_heads: recorded 2, given 4' in str(e.value)
  assert 'model.temporal_heads: recorded 2, given 1' in str(e.value)
  assert not os.path.exists(os.path.join(workdir, 'eval'))


# --- 4. One writer per workdir. ---


def hold_lock(workdir: str) -> subprocess.Popen:
  code = textwrap.dedent(f"""
    import sys, time
    from glitr_jax import workdir
    workdir.acquire({workdir!r})
    print('locked', flush=True)
    time.sleep(120)
  """)
  proc = subprocess.Popen(
    [sys.executable, '-c', code], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True
  )
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def test_a_second_command_is_refused_naming_the_holder(run_copy):
  config, workdir = run_copy
  holder = hold_lock(workdir)
  try:
    start = time.time()
    with pytest.raises(workdir_lib.WorkdirLockedError, match=rf'in use by pid {holder.pid} on'):
      loop.train_and_evaluate(config, workdir)
    with pytest.raises(workdir_lib.WorkdirLockedError, match=rf'pid {holder.pid}'):
      eval_run.evaluate(config, workdir)
    assert time.time() - start < 30  # at once: before any data, compilation or restore
  finally:
    holder.kill()
    holder.wait()
  # The holder died without releasing: its lock is taken over.
  workdir_lib.acquire(workdir)
  holder_now = json.loads(pathlib.Path(workdir, 'lock').read_text())
  assert holder_now['pid'] == os.getpid()
  workdir_lib.release(workdir)
  assert pathlib.Path(workdir, 'lock').read_text() == ''


def test_the_lock_is_reentrant_within_a_process(tmp_path):
  with workdir_lib.locked(str(tmp_path)):
    with workdir_lib.locked(str(tmp_path)):  # a pipeline's evaluation stage inside its root
      pass
    assert json.loads((tmp_path / 'lock').read_text())['pid'] == os.getpid()
  assert (tmp_path / 'lock').read_text() == ''


# --- 5. Verified checkpoints. ---


def flip_bytes(path: pathlib.Path, count: int = 4096) -> None:
  data = bytearray(path.read_bytes())
  start = max(0, len(data) // 2 - count // 2)
  for i in range(start, min(len(data), start + count)):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def test_flipped_bytes_make_evaluation_refuse_and_keep_the_old_report(run_copy):
  config, workdir = run_copy
  eval_run.evaluate(config, workdir)
  report = pathlib.Path(workdir, 'eval', 'report.json')
  before = report.read_bytes()
  victim = largest_file(pathlib.Path(workdir, 'checkpoints', '6', 'params'))
  flip_bytes(victim)
  with pytest.raises(checkpoints.CorruptCheckpointError) as e:
    eval_run.evaluate(config, workdir)
  assert str(victim.relative_to(pathlib.Path(workdir, 'checkpoints', '6'))) in str(e.value)
  assert 'SHA-256 differs' in str(e.value)
  assert report.read_bytes() == before


@pytest.mark.parametrize('damage', ['flip', 'truncate'])
def test_resume_falls_back_past_a_damaged_newest_checkpoint(run_copy, damage):
  config, workdir = run_copy
  victim = largest_file(pathlib.Path(workdir, 'checkpoints', '6', 'train'))
  if damage == 'flip':
    flip_bytes(victim)
  else:
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
  config.num_train_steps = 8
  state = loop.train_and_evaluate(config, workdir)
  assert int(state.step) == 8
  moved = list(pathlib.Path(workdir, checkpoints.QUARANTINE_DIR).iterdir())
  assert [p.name.split('-')[0] for p in moved] == ['6']  # kept, out of the way
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in rows] == list(range(1, 9))  # steps 5-6 logged again from step 4
  assert checkpoints.verify_step(os.path.join(workdir, 'checkpoints', '8'))


def test_checksums_are_recorded_for_every_kept_step(trained):
  _, workdir = trained
  steps = sorted(int(p) for p in os.listdir(checkpoints.checkpoint_dir(workdir)))
  assert steps == [2, 4, 6]
  for step in steps:
    assert checkpoints.verify_step(os.path.join(checkpoints.checkpoint_dir(workdir), str(step)))


# --- 6. Prompt preemption. ---


def test_sigterm_saves_within_a_step_and_exits_75(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  proc = subprocess.Popen(
    [
      sys.executable,
      str(REPO / 'main.py'),
      '--config=tests/tiny_config.py:teacher',
      f'--workdir={workdir}',
      f'--config.data.data_dir={data_dir}',
      '--config.num_train_steps=100000',
      '--config.log_every_steps=100000',
      '--config.checkpoint_every_steps=100000',
    ],
    cwd=REPO,
    env=ENV,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    for line in proc.stderr:
      if 'Training teacher for 100000 steps' in line:
        break
    time.sleep(5)  # a few steps in
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    code = proc.wait(timeout=120)
  finally:
    proc.kill()
  assert code == loop.EXIT_PREEMPTED, rest[-3000:]
  assert time.time() - sent < 60
  assert 'rerun the same command to resume' in rest
  (step,) = [int(p) for p in os.listdir(checkpoints.checkpoint_dir(workdir))]
  assert 0 < step < 100000
  assert checkpoints.verify_step(os.path.join(checkpoints.checkpoint_dir(workdir), str(step)))


def test_a_preempted_stage_stops_the_pipeline(monkeypatch, tmp_path):
  ran = []

  def fake_stage(stage):
    ran.append(stage.name)
    raise loop.Preempted(stage.workdir, 7)

  monkeypatch.setattr(pipeline, 'run_stage', fake_stage)
  monkeypatch.setattr(pipeline, 'is_finished', lambda stage: False)
  with pytest.raises(loop.Preempted):
    pipeline.run(demo.get_config(), str(tmp_path))
  assert ran == ['teacher']


# --- 7. The smaller cases. ---


def test_a_misspelt_field_is_one_line_naming_it():
  result = run_main(
    '--config=configs/demo.py', '--workdir=/nonexistent/w', '--config.modle.depth=2'
  )
  assert result.returncode == 1
  assert "--config.modle.depth: the config has no field 'modle.depth'" in result.stderr
  assert 'model.depth' in result.stderr and 'Traceback' not in result.stderr


def test_a_missing_config_file_is_one_line():
  result = run_main('--config=configs/nonexistent.py', '--workdir=/nonexistent/w')
  assert result.returncode == 1
  assert '--config=configs/nonexistent.py: no such file' in result.stderr
  assert 'Traceback' not in result.stderr


def test_prepare_refuses_a_raw_release_that_changed(tmp_path):
  manual, tfds_dir = str(tmp_path / 'raw'), str(tmp_path / 'tfds')
  videos = [
    (f'{split}{i}', name, smooth_frames(i, 3, 24, 32))
    for split in ('train', 'validation')
    for i, name in enumerate(('Swiping Left', 'Zooming In'))
  ]
  write_jester_release(
    manual, {s: [v for v in videos if v[0].startswith(s)] for s in ('train', 'validation')}
  )
  args = ['--dataset=jester', f'--manual_dir={manual}', f'--data_dir={tfds_dir}', '--num_workers=1']
  with flagsaver.flagsaver():
    prepare.flags.FLAGS(['prepare', *args])
    prepare.main(['prepare'])
    prepared = prepare.pipeline.dataset_info(data_config('jester', tfds_dir))
    assert prepared.num_examples == {'train': 2, 'validation': 2}
    # The user fixes a label: the stored dataset no longer matches its raw release.
    csv = pathlib.Path(manual, 'jester-v1-train.csv')
    csv.write_text(csv.read_text().replace('train1;Zooming In', 'train1;Swiping Left'))
    with pytest.raises(prepare.app.UsageError, match=r'changed since .* --overwrite'):
      prepare.main(['prepare'])
    prepare.flags.FLAGS(['prepare', *args, '--overwrite'])
    prepare.main(['prepare'])
  fingerprint = json.loads(pathlib.Path(prepared.data_dir, prepare.FINGERPRINT_FILE).read_text())
  assert fingerprint == prepare.raw_fingerprint(manual)


def test_streaming_refuses_frames_smaller_than_the_model(tmp_path):
  small = str(tmp_path / 'small.webm')
  encode_webm(small, np.zeros((3, 16, 16, 3), np.uint8))
  with pytest.raises(ValueError, match=r'small.webm: 16x16.*--allow_upscale'):
    streaming_cli.check_frame_sizes([small], 64, allow_upscale=False)
  streaming_cli.check_frame_sizes([small], 64, allow_upscale=True)  # said so: allowed
  streaming_cli.check_frame_sizes([small], 16, allow_upscale=False)  # large enough
