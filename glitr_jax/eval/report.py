"""An evaluation's report: report.json (numbers), report.md (tables and pictures), the pictures.

report.json keys (a contract: compare.py and outside scripts read them):
  accuracy_per_t       strategy -> T floats in [0, 1] (random strategies: mean over seeds)
  accuracy_std_per_t   random strategy -> T floats (std over seeds)
  early_exit           [{gamma, accuracy, mean_glimpses}] of the learned policy
  sensing              {glimpse_pixels_per_video, full_frame_pixels_per_video, glimpse_fraction}
  num_examples         examples counted (each once)
  checkpoint_step      the evaluated step (null for official files)
and, beside them: accuracy_per_seed, teacher_at_glitr_accuracy_per_t (paper Fig. 8b: the
teacher's weights classifying GliTr's glimpses), glitr_location_mean_per_t / _std_per_t,
glitr_locations_outside_frame_per_t, num_seeds, checkpoint, dataset, split, model, class_names,
pictures. The glimpse-centre histograms are in locations.npz.
"""

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from glitr_jax.eval import metrics, online, pictures
from glitr_jax.eval import strategies as strategies_lib

REQUIRED_KEYS = (
  'accuracy_per_t',
  'accuracy_std_per_t',
  'early_exit',
  'sensing',
  'num_examples',
  'checkpoint_step',
)
ACCURACY_PLOT = 'accuracy_per_t.png'
EARLY_EXIT_PLOT = 'early_exit.png'
LOCATIONS_PLOT = 'glimpse_locations.png'
LOCATIONS_FILE = 'locations.npz'
EXAMPLES_DIR = 'examples'


def _floats(values) -> list[float]:
  return [float(v) for v in np.asarray(values).reshape(-1)]


def build(
  results: online.Results,
  *,
  num_frames: int,
  glimpse_pixels: int,
  frame_hw: tuple[int, int],
  checkpoint_step: int | None,
  num_seeds: int,
  extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """The report.json dictionary of an evaluation.

  Args:
    results: what OnlineEvaluator.run returned.
    num_frames: T.
    glimpse_pixels: glimpse side g.
    frame_hw: (H, W) of the frames.
    checkpoint_step: the evaluated step (None for official files).
    num_seeds: repetitions of the random strategies.
    extra: further keys (checkpoint path, dataset, class names, ...).
  """
  report = {
    'accuracy_per_t': {k: _floats(v) for k, v in results.accuracy_per_t.items()},
    'accuracy_std_per_t': {k: _floats(v) for k, v in results.accuracy_std_per_t.items()},
    'early_exit': [
      {'gamma': float(e['gamma']), 'accuracy': e['accuracy'], 'mean_glimpses': e['mean_glimpses']}
      for e in results.early_exit
    ],
    'sensing': metrics.sensing_cost(num_frames, glimpse_pixels, frame_hw),
    'num_examples': int(results.num_examples),
    'checkpoint_step': None if checkpoint_step is None else int(checkpoint_step),
    'num_seeds': int(num_seeds),
    'accuracy_per_seed': {k: np.asarray(v).tolist() for k, v in results.accuracy_per_seed.items()},
  }
  if results.teacher_at_glitr is not None:
    report['teacher_at_glitr_accuracy_per_t'] = _floats(results.teacher_at_glitr)
  if results.location_mean is not None:
    report['glitr_location_mean_per_t'] = np.asarray(results.location_mean).tolist()
    report['glitr_location_std_per_t'] = np.asarray(results.location_std).tolist()
    report['glitr_locations_outside_frame_per_t'] = _floats(results.outside_frame)
  report.update(extra or {})
  return report


def _percent(v: float) -> str:
  return f'{100.0 * v:.2f}'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
  return lines


def _ordered(names) -> list[str]:
  return [n for n in strategies_lib.ALL if n in names] + sorted(
    set(names) - set(strategies_lib.ALL)
  )


def markdown(report: Mapping[str, Any]) -> str:
  """report.md: the numbers of report.json as tables, with the pictures linked relatively."""
  acc = report['accuracy_per_t']
  std = report['accuracy_std_per_t']
  t = len(next(iter(acc.values())))
  lines = ['# GliTr evaluation', '']
  facts = [
    ('checkpoint', report.get('checkpoint', '')),
    ('step', report['checkpoint_step']),
    ('dataset', f'{report.get("dataset", "")} / {report.get("split", "")}'),
    ('examples', report['num_examples']),
    ('glimpse', f'{report["sensing"]["glimpse_size"]} px, T = {t}'),
    ('random strategies', f'mean (std) over {report.get("num_seeds", 1)} seeds'),
  ]
  lines += [f'- **{k}**: {v}' for k, v in facts] + ['']
  lines += ['## Online accuracy after every glimpse (%)', '']
  rows = []
  for name in _ordered(acc):
    cells = [_percent(v) for v in acc[name]]
    if name in std:
      cells = [f'{c} ({_percent(s)})' for c, s in zip(cells, std[name], strict=True)]
    rows.append([f'`{name}`'] + cells)
  if 'teacher_at_glitr_accuracy_per_t' in report:
    rows.append(['teacher weights at GliTr locations'] + [
      _percent(v) for v in report['teacher_at_glitr_accuracy_per_t']
    ])  # fmt: skip
  lines += _table(['strategy'] + [f't={i + 1}' for i in range(t)], rows)
  lines += ['', f'![accuracy per t]({ACCURACY_PLOT})', '']
  if report['early_exit']:
    lines += ['## Early exit (learned policy)', '']
    lines += _table(
      ['gamma', 'accuracy (%)', 'mean glimpses'],
      [
        [f'{e["gamma"]:g}', _percent(e['accuracy']), f'{e["mean_glimpses"]:.2f}']
        for e in report['early_exit']
      ],
    )
    lines += ['', f'![early exit]({EARLY_EXIT_PLOT})', '']
  s = report['sensing']
  h, w = s['frame_size']
  lines += ['## Sensing cost per video', '']
  lines += _table(
    ['observation', 'pixels per video', 'fraction of full frames'],
    [
      [f'{s["num_frames"]} glimpses of {s["glimpse_size"]}x{s["glimpse_size"]}',
       f'{s["glimpse_pixels_per_video"]:,}', f'{s["glimpse_fraction"]:.3f}'],
      [f'{s["num_frames"]} full frames of {h}x{w}', f'{s["full_frame_pixels_per_video"]:,}', '1'],
    ],
  )  # fmt: skip
  lines.append('')
  pics = report.get('pictures', {})
  if pics.get('locations'):
    lines += ['## Where GliTr looks', '']
    if 'glitr_locations_outside_frame_per_t' in report:
      off = max(report['glitr_locations_outside_frame_per_t'])
      lines += [f'Glimpse centres off the frame: at most {_percent(off)}% of videos at any t.', '']
    lines += [f'![glimpse locations]({pics["locations"]})', '']
  if pics.get('examples'):
    lines += ['## Examples', '']
    for item in pics['examples']:
      lines += [f'![example]({item["png"]})', '', f'![animation]({item["gif"]})', '']
  return '\n'.join(lines)


def write(
  report: dict[str, Any],
  results: online.Results,
  out_dir: str,
  *,
  glimpse_pixels: int,
  class_names: Sequence[str] | None = None,
) -> dict[str, str]:
  """Writes the pictures, report.json, report.md and locations.npz under `out_dir`.

  Adds the pictures' relative paths to `report['pictures']`.

  Returns:
    {'json': path, 'markdown': path}.
  """
  os.makedirs(out_dir, exist_ok=True)
  pics: dict[str, Any] = {}
  pictures.plot_accuracy(
    report['accuracy_per_t'],
    report['accuracy_std_per_t'],
    os.path.join(out_dir, ACCURACY_PLOT),
    num_seeds=report['num_seeds'],
  )
  pics['accuracy'] = ACCURACY_PLOT
  if report['early_exit']:
    pictures.plot_early_exit(
      report['early_exit'],
      os.path.join(out_dir, EARLY_EXIT_PLOT),
      report['accuracy_per_t'].get(strategies_lib.GLITR),
    )
    pics['early_exit'] = EARLY_EXIT_PLOT
  if results.location_histogram is not None:
    h, w = report['sensing']['frame_size']
    pictures.plot_location_histograms(
      results.location_histogram, os.path.join(out_dir, LOCATIONS_PLOT), frame_hw=(h, w)
    )
    pics['locations'] = LOCATIONS_PLOT
    np.savez(
      os.path.join(out_dir, LOCATIONS_FILE),
      histogram=results.location_histogram,
      outside_frame=results.outside_frame,
      mean=results.location_mean,
      std=results.location_std,
    )
  if results.examples:
    files = pictures.write_example_pictures(
      results.examples,
      os.path.join(out_dir, EXAMPLES_DIR),
      glimpse_pixels=glimpse_pixels,
      class_names=class_names,
    )
    pics['examples'] = [{k: f'{EXAMPLES_DIR}/{v}' for k, v in item.items()} for item in files]
  report['pictures'] = pics
  json_path = os.path.join(out_dir, 'report.json')
  with open(json_path, 'w') as f:
    json.dump(report, f, indent=1)
  md_path = os.path.join(out_dir, 'report.md')
  with open(md_path, 'w') as f:
    f.write(markdown(report) + '\n')
  return {'json': json_path, 'markdown': md_path}
