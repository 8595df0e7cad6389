"""report.json's contract, report.md, the pictures, and the compare CLI."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from glitr_jax import pixels
from glitr_jax.eval import compare, online, report, strategies

T = 4
G = 16


def fake_results(scale: float = 1.0, num_examples: int = 13) -> online.Results:
  """Results as OnlineEvaluator.run returns them, with known numbers."""
  rng = np.random.default_rng(0)
  t = np.arange(1, T + 1) / T
  acc = {name: np.clip(scale * (0.2 + 0.1 * k) * t, 0, 1) for k, name in enumerate(strategies.ALL)}
  per_seed = {
    name: np.stack([acc[name] + d for d in (-0.02, 0.0, 0.02)]) for name in strategies.RANDOM
  }
  frames = rng.normal(size=(T, 32, 32, 3)).astype(np.float32)
  example = online.Example(
    frames=frames,
    locations=np.array([[0, 0], [0.5, -0.5], [-1.2, 0.9], [0.3, 0.3]], np.float32),
    predictions=np.array([0, 1, 1, 2]),
    confidence=np.array([0.3, 0.5, 0.7, 0.9], np.float32),
    label=1,
    index=7,
    video_id='video7',
  )
  hist = np.zeros((T, 5, 5), np.int64)
  hist[:, 2, 2] = num_examples
  return online.Results(
    num_examples=num_examples,
    accuracy_per_t=acc,
    accuracy_std_per_t={k: v.std(0) for k, v in per_seed.items()},
    accuracy_per_seed=per_seed,
    teacher_at_glitr=0.9 * acc['glitr'],
    early_exit=[
      {'gamma': 0.0, 'accuracy': acc['glitr'][0], 'mean_glimpses': 1.0},
      {'gamma': 0.5, 'accuracy': acc['glitr'][2], 'mean_glimpses': 2.5},
      {'gamma': 1.01, 'accuracy': acc['glitr'][-1], 'mean_glimpses': float(T)},
    ],
    location_histogram=hist,
    outside_frame=np.array([0.0, 0.0, 1 / 13, 0.0]),
    location_mean=np.zeros((T, 2)),
    location_std=np.full((T, 2), 0.1),
    examples=[example],
  )


def build(results, step=5):
  return report.build(
    results,
    num_frames=T,
    glimpse_pixels=G,
    frame_hw=(32, 32),
    checkpoint_step=step,
    num_seeds=3,
    extra={'dataset': 'glitr_synthetic', 'split': 'validation', 'checkpoint': '/runs/a'},
  )


def check_required_contract(r: dict) -> None:
  """The keys and shapes that issue 4 fixes."""
  assert set(report.REQUIRED_KEYS) <= set(r)
  assert set(r['accuracy_per_t']) == set(strategies.ALL)
  for values in r['accuracy_per_t'].values():
    assert len(values) == T and all(isinstance(v, float) and 0 <= v <= 1 for v in values)
  assert set(r['accuracy_std_per_t']) == {'uniform', 'gaussian'}
  assert all(len(v) == T for v in r['accuracy_std_per_t'].values())
  for e in r['early_exit']:
    assert set(e) == {'gamma', 'accuracy', 'mean_glimpses'}
    assert 0 <= e['accuracy'] <= 1 and 1 <= e['mean_glimpses'] <= T
  assert r['sensing']['glimpse_pixels_per_video'] == T * G * G
  assert r['sensing']['full_frame_pixels_per_video'] == T * 32 * 32
  assert isinstance(r['num_examples'], int)


def test_report_json_has_the_required_keys_and_shapes(tmp_path):
  results = fake_results()
  r = build(results)
  report.write(r, results, str(tmp_path), glimpse_pixels=G, class_names=['a', 'b', 'c', 'd'])
  with open(tmp_path / 'report.json') as f:
    written = json.load(f)
  check_required_contract(written)
  assert written['checkpoint_step'] == 5 and written['num_examples'] == 13
  np.testing.assert_allclose(written['accuracy_per_t']['center'], results.accuracy_per_t['center'])
  assert written['teacher_at_glitr_accuracy_per_t'] == pytest.approx(list(results.teacher_at_glitr))
  assert np.asarray(written['accuracy_per_seed']['uniform']).shape == (3, T)
  assert written['sensing']['glimpse_fraction'] == pytest.approx(0.25)
  official = build(results, step=None)
  assert official['checkpoint_step'] is None


def test_report_markdown_tables_and_pictures(tmp_path):
  results = fake_results()
  r = build(results)
  paths = report.write(r, results, str(tmp_path), glimpse_pixels=G, class_names=None)
  text = open(paths['markdown']).read()
  # Every strategy row with T percentages; random ones with (std).
  center = [line for line in text.splitlines() if line.startswith('| `center` |')][0]
  assert center.count('|') == T + 2
  assert f'{100 * results.accuracy_per_t["center"][-1]:.2f}' in center
  uniform = [line for line in text.splitlines() if line.startswith('| `uniform` |')][0]
  assert uniform.count('(') == T
  assert '| 1.01 |' in text and '1,024' in text and '4,096' in text
  links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
  assert {'accuracy_per_t.png', 'early_exit.png', 'glimpse_locations.png'} <= set(links)
  assert 'examples/example_00.png' in links and 'examples/example_00.gif' in links
  for link in links:
    with Image.open(tmp_path / link) as image:
      assert image.width >= 200 and image.height >= 150, link
  with Image.open(tmp_path / 'examples/example_00.gif') as gif:
    assert gif.n_frames == T
  saved = np.load(tmp_path / report.LOCATIONS_FILE)
  np.testing.assert_array_equal(saved['histogram'], results.location_histogram)


def test_glimpse_only_view_keeps_exactly_the_glimpse_pixels():
  from glitr_jax.eval import pictures  # noqa: PLC0415

  frames = np.full((2, 32, 32, 3), 200, np.uint8)
  seen = pictures.glimpse_only(frames, np.array([[0.0, 0.0], [-0.5, 0.5]], np.float32), 16)
  # A 16-px glimpse centred on a 32-px frame samples x in [7.75, 23.25]: pixels 7..24 are read.
  lit = np.flatnonzero(seen[0, 16, :, 0])
  assert lit[0] == 7 and lit[-1] == 24
  # bottom_left of a 4-patch grid with 2-patch glimpses: the frame's bottom-left quarter.
  rows, cols = np.nonzero(seen[1, :, :, 0])
  assert cols.min() == 0 and rows.max() == 31 and cols.max() <= 16 and rows.min() >= 15
  normalised = (np.full((1, 2, 2, 3), 0.5) - pixels.IMAGENET_MEAN) / pixels.IMAGENET_STD
  np.testing.assert_array_equal(pixels.denormalize(normalised), np.full((1, 2, 2, 3), 128))


def write_workdir(root, name, scale, glimpse=G):
  results = fake_results(scale)
  r = report.build(
    results, num_frames=T, glimpse_pixels=glimpse, frame_hw=(32, 32), checkpoint_step=9,
    num_seeds=3,
  )  # fmt: skip
  out = os.path.join(root, name, 'eval')
  os.makedirs(out)
  with open(os.path.join(out, 'report.json'), 'w') as f:
    json.dump(r, f)
  return os.path.join(root, name), r


def test_compare_cli_tabulates_workdirs(tmp_path, capsys):
  dir_a, rep_a = write_workdir(str(tmp_path), 'spatiotemporal', 1.0)
  dir_b, rep_b = write_workdir(str(tmp_path), 'baseline', 0.5, glimpse=8)
  out = tmp_path / 'cmp' / 'ablation.md'
  assert compare.main([dir_a, os.path.join(dir_b, 'eval', 'report.json'), '--out', str(out)]) == 0
  text = out.read_text()
  assert text == capsys.readouterr().out
  rows = {line.split(' | ')[0][2:]: line for line in text.splitlines() if line.startswith('| ')}
  assert 'spatiotemporal' in rows and 'baseline' in rows  # default labels: the workdir names
  assert f'{100 * rep_a["accuracy_per_t"]["glitr"][-1]:.2f}' in rows['spatiotemporal']
  assert f'{100 * rep_b["accuracy_per_t"]["glitr"][-1]:.2f}' in rows['baseline']
  assert '1,024' in rows['spatiotemporal'] and '256' in rows['baseline']
  assert '| 1.01 |' in text  # the early-exit table
  with Image.open(tmp_path / 'cmp' / 'ablation.png') as image:
    assert image.width > image.height * 2  # three panels: GliTr, Fig. 8b, uniform
  assert '![comparison](ablation.png)' in text
  compare.main([dir_a, dir_b, '--labels', 'ours,ce only', '--out', str(out)])
  assert '| ours |' in out.read_text() and '| ce only |' in out.read_text()


def test_compare_errors_name_the_problem(tmp_path):
  dir_a, _ = write_workdir(str(tmp_path), 'a', 1.0)
  with pytest.raises(FileNotFoundError, match='nowhere'):
    compare.compare([str(tmp_path / 'nowhere')], None, str(tmp_path / 'x.md'))
  with pytest.raises(ValueError, match='--labels has 2 names for 1 runs'):
    compare.compare([dir_a], ['x', 'y'], str(tmp_path / 'x.md'))
  bad = tmp_path / 'bad.json'
  bad.write_text(json.dumps({'accuracy_per_t': {}}))
  with pytest.raises(ValueError, match='lacks'):
    compare.compare([str(bad)], None, str(tmp_path / 'x.md'))
