"""Several evaluations side by side: ablation variants (paper Fig. 8) or glimpse sizes (Table 1).

    python -m glitr_jax.eval.compare DIR1 DIR2 ... [--labels a,b,c] [--out FILE.md]

Each DIR is a workdir (its eval/report.json), an eval directory, or a report.json. Writes one
markdown file (default compare.md) with: accuracy at t = T per strategy (random ones: mean (std)),
the sensing cost, and early exit per gamma; and one plot beside it (FILE.png): GliTr's accuracy vs t
per run, with the teacher's weights on each run's glimpses (Fig. 8b) and the uniform strategy
(Fig. 8c) in further panels when the reports have them.
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from glitr_jax.eval import report as report_lib
from glitr_jax.eval import strategies as strategies_lib


def report_path(location: str) -> str:
  """report.json of a workdir, an eval directory, or the file itself."""
  candidates = [
    location,
    os.path.join(location, 'report.json'),
    os.path.join(location, 'eval', 'report.json'),
  ]
  for path in candidates:
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
    f'no report.json at {location} (looked for {candidates[1]} and {candidates[2]}): run '
    '`main.py --mode=evaluate` on it first'
  )


def load_report(location: str) -> dict[str, Any]:
  """A report.json, checked for the keys a comparison needs."""
  path = report_path(location)
  with open(path) as f:
    report = json.load(f)
  missing = [k for k in report_lib.REQUIRED_KEYS if k not in report]
  if missing:
    raise ValueError(f'{path} lacks {missing}: not a glitr_jax.eval report')
  return report


def default_labels(locations: Sequence[str]) -> list[str]:
  """The workdir names (the run directory, not 'eval' or 'report.json')."""
  out = []
  for loc in locations:
    path = os.path.abspath(report_path(loc))
    folder = os.path.dirname(path)
    if os.path.basename(folder) == 'eval':
      folder = os.path.dirname(folder)
    out.append(os.path.basename(folder))
  return out


def _pct(v: float) -> str:
  return f'{100.0 * v:.2f}'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  return lines + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]


def markdown(reports: Sequence[dict], labels: Sequence[str], plot_name: str | None) -> str:
  """The comparison tables (and the plot's relative link)."""
  names = [n for n in strategies_lib.ALL if any(n in r['accuracy_per_t'] for r in reports)]
  with_fig8b = any('teacher_at_glitr_accuracy_per_t' in r for r in reports)
  header = ['run', 'examples', 'T', 'glimpse'] + [f'`{n}` @T' for n in names]
  if with_fig8b:
    header.append('teacher weights at GliTr locations @T')
  header += ['pixels / video', 'full frames / video', 'fraction']
  rows = []
  for label, r in zip(labels, reports, strict=True):
    acc, std = r['accuracy_per_t'], r['accuracy_std_per_t']
    t = len(next(iter(acc.values())))
    s = r['sensing']
    row = [label, r['num_examples'], t, f'{s.get("glimpse_size", "?")} px']
    for n in names:
      if n not in acc:
        row.append('-')
      elif n in std:
        row.append(f'{_pct(acc[n][-1])} ({_pct(std[n][-1])})')
      else:
        row.append(_pct(acc[n][-1]))
    if with_fig8b:
      fig8b = r.get('teacher_at_glitr_accuracy_per_t')
      row.append(_pct(fig8b[-1]) if fig8b else '-')
    full = s['full_frame_pixels_per_video']
    glimpses = s['glimpse_pixels_per_video']
    row += [f'{glimpses:,}', f'{full:,}', f'{glimpses / full:.3f}']
    rows.append(row)
  lines = [
    '# GliTr: runs compared',
    '',
    '## Accuracy (%) after all T glimpses, and sensing cost',
    '',
  ]
  lines += _table(header, rows)
  lines += ['', 'Random strategies: mean (std) over seeds.', '']
  gammas = sorted({e['gamma'] for r in reports for e in r['early_exit']})
  if gammas:
    lines += ['## Early exit: accuracy (%) / mean glimpses per video', '']
    exit_rows = []
    for g in gammas:
      row = [f'{g:g}']
      for r in reports:
        match = [e for e in r['early_exit'] if e['gamma'] == g]
        row.append(
          f'{_pct(match[0]["accuracy"])} / {match[0]["mean_glimpses"]:.2f}' if match else '-'
        )
      exit_rows.append(row)
    lines += _table(['gamma'] + list(labels), exit_rows) + ['']
  if plot_name:
    lines += [f'![comparison]({plot_name})', '']
  return '\n'.join(lines)


def plot(reports: Sequence[dict], labels: Sequence[str], path: str) -> str:
  """Accuracy vs t per run: GliTr, then (when present) Fig. 8b and the uniform strategy."""
  panels = [('GliTr (learned policy)', lambda r: r['accuracy_per_t'].get('glitr'), None)]
  if any('teacher_at_glitr_accuracy_per_t' in r for r in reports):
    panels.append(
      (
        "Teacher's weights at GliTr's locations",
        lambda r: r.get('teacher_at_glitr_accuracy_per_t'),
        None,
      )
    )
  if any('uniform' in r['accuracy_per_t'] for r in reports):
    panels.append(
      (
        'Uniform random locations',
        lambda r: r['accuracy_per_t'].get('uniform'),
        lambda r: r['accuracy_std_per_t'].get('uniform'),
      )
    )
  fig = Figure(figsize=(5.0 * len(panels), 4.2), dpi=110)
  for k, (title, get, get_std) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), k + 1)
    for i, (label, r) in enumerate(zip(labels, reports, strict=True)):
      acc = get(r)
      if acc is None:
        continue
      acc = 100.0 * np.asarray(acc)
      t = np.arange(1, len(acc) + 1)
      colour = f'C{i}'
      ax.plot(t, acc, '-o', ms=3, color=colour, label=label)
      std = get_std(r) if get_std else None
      if std is not None:
        std = 100.0 * np.asarray(std)
        ax.fill_between(t, acc - std, acc + std, color=colour, alpha=0.2, lw=0)
    ax.set_title(f'({chr(ord("a") + k)}) {title}', fontsize=10)
    ax.set_xlabel('t (glimpses observed)')
    ax.set_ylabel('accuracy (%)')
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
  FigureCanvasAgg(fig)
  fig.savefig(path, bbox_inches='tight')
  return path


def compare(locations: Sequence[str], labels: Sequence[str] | None, out: str) -> str:
  """Writes `out` (markdown) and the plot beside it; returns the markdown text."""
  if not locations:
    raise ValueError('name at least one workdir or report.json to compare')
  reports = [load_report(loc) for loc in locations]
  labels = list(labels) if labels else default_labels(locations)
  if len(labels) != len(reports):
    raise ValueError(f'--labels has {len(labels)} names for {len(reports)} runs')
  out = os.path.abspath(out)
  os.makedirs(os.path.dirname(out), exist_ok=True)
  plot_path = os.path.splitext(out)[0] + '.png'
  plot(reports, labels, plot_path)
  text = markdown(reports, labels, os.path.basename(plot_path))
  with open(out, 'w') as f:
    f.write(text + '\n')
  return text


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m glitr_jax.eval.compare',
    description='Tabulate several GliTr evaluations (workdirs or report.json files) side by side.',
  )
  parser.add_argument('runs', nargs='+', help='workdirs, eval directories or report.json files')
  parser.add_argument('--labels', default='', help='comma-separated names, one per run')
  parser.add_argument('--out', default='compare.md', help='markdown file to write (plot: .png)')
  args = parser.parse_args(argv)
  labels = [s.strip() for s in args.labels.split(',')] if args.labels else None
  text = compare(args.runs, labels, args.out)
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
