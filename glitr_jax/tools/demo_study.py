r"""The demo over several seeds: every strategy and both students, the demo's findings per seed.

  python -m glitr_jax.tools.demo_study --workdir=DIR --seeds=0,1,2,3,4 \
      [--perturb=fast_math] [--override=--config.x=y ...]

For each seed S the tool runs, as subprocesses (so that a perturbation can set their environment),

  python main.py --config=configs/demo.py --workdir=DIR/seed_S --config.seed=S OVERRIDES
  python main.py --config=configs/demo.py:baseline --workdir=DIR/seed_S --config.seed=S OVERRIDES

(the spatiotemporal student with every strategy in DIR/seed_S/eval/, the CE-only student with
the same budget in DIR/seed_S/baseline/eval/), then writes

  DIR/study.md                   one table (mean +- std over seeds and every seed, at t = 1 and
                                 t = T), the findings with their margin on every seed (and,
                                 where a finding cannot hold because its right-hand side is too
                                 near 100%, its largest margin), the paper's Fig. 8b and 8c
                                 diagnostics
  DIR/study.json                 the same numbers (per t), the commands and their wall times
  DIR/study_accuracy_per_t.png   accuracy per t, one line per row, a +-1 std band over seeds

`--perturb=fast_math` runs every command with `XLA_FLAGS=--xla_cpu_enable_fast_math=true` (XLA's
CPU fast-math: reassociated reductions, approximate transcendental functions, so other rounding),
into DIR/perturb_fast_math/ (its own seed folders and study files). A seed whose two commands
finished with the same command lines is not run again (DIR/seed_S/study_run.json records them);
an interrupted one resumes (the pipeline skips its finished stages). Std is the sample standard
deviation over seeds (0 for one seed).
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import app, flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PERTURBATIONS = {
  '': {},
  'fast_math': {'XLA_FLAGS': '--xla_cpu_enable_fast_math=true'},
}
RUNS = (('demo', ''), ('baseline', ':baseline'))
RECORD = 'study_run.json'
FIXED_OR_RANDOM = ('uniform', 'gaussian', 'center', 'bottom_left')
# Row -> (run, report key, strategy or None, what it is). Rows from report['accuracy_per_t'] have
# a strategy; the Fig. 8b rows read report['teacher_at_glitr_accuracy_per_t'].
ROWS = {
  'glitr': ('demo', 'accuracy_per_t', 'glitr', 'spatiotemporal student, its learned policy'),
  'baseline_glitr': ('baseline', 'accuracy_per_t', 'glitr', 'CE-only student, its learned policy'),
  'uniform': ('demo', 'accuracy_per_t', 'uniform', 'spatiotemporal student, uniform random'),
  'gaussian': ('demo', 'accuracy_per_t', 'gaussian', 'spatiotemporal student, gaussian random'),
  'center': ('demo', 'accuracy_per_t', 'center', 'spatiotemporal student, centre'),
  'bottom_left': ('demo', 'accuracy_per_t', 'bottom_left', 'spatiotemporal student, bottom left'),
  'teacher': ('demo', 'accuracy_per_t', 'teacher', "spatiotemporal student, teacher's locations"),
  'teacher_full_frames': ('demo', 'accuracy_per_t', 'teacher_full_frames', 'teacher, full frames'),
  'baseline_uniform': (
    'baseline',
    'accuracy_per_t',
    'uniform',
    'CE-only student, uniform random (Fig. 8c)',
  ),
  'teacher_at_glitr': (
    'demo',
    'teacher_at_glitr_accuracy_per_t',
    None,
    "teacher's weights at the spatiotemporal student's locations (Fig. 8b)",
  ),
  'teacher_at_baseline_glitr': (
    'baseline',
    'teacher_at_glitr_accuracy_per_t',
    None,
    "teacher's weights at the CE-only student's locations (Fig. 8b)",
  ),
}
# Row -> (colour, line style) in the plot: the spatiotemporal student's rows solid, the CE-only
# student's dashed in the same colour, the teacher's weights dotted.
PLOT_STYLE = {
  'glitr': ('tab:red', '-'),
  'baseline_glitr': ('tab:red', '--'),
  'uniform': ('tab:blue', '-'),
  'baseline_uniform': ('tab:blue', '--'),
  'gaussian': ('tab:orange', '-'),
  'center': ('tab:green', '-'),
  'bottom_left': ('tab:brown', '-'),
  'teacher': ('tab:purple', '-'),
  'teacher_full_frames': ('black', ':'),
  'teacher_at_glitr': ('tab:gray', ':'),
  'teacher_at_baseline_glitr': ('tab:olive', ':'),
}
MIN_VALIDATION_VIDEOS = 1000  # the demo's findings (README.md) are judged on at least this many

FLAGS = flags.FLAGS


def study_root(workdir: str, perturb: str) -> str:
  """Where a study writes: DIR, or DIR/perturb_<name> for a perturbed one."""
  _check_perturb(perturb)
  return os.path.abspath(workdir if not perturb else os.path.join(workdir, f'perturb_{perturb}'))


def _check_perturb(perturb: str) -> None:
  if perturb not in PERTURBATIONS:
    raise ValueError(f'--perturb={perturb!r}: known {sorted(PERTURBATIONS)}')


def commands(root: str, seed: int, overrides: Sequence[str]) -> dict[str, list[str]]:
  """The two main.py command lines of one seed ({'demo': [...], 'baseline': [...]})."""
  return {
    run: [
      sys.executable,
      os.path.join(REPO, 'main.py'),
      f'--config=configs/demo.py{arg}',
      f'--workdir={os.path.join(root, f"seed_{seed}")}',
      f'--config.seed={seed}',
      *overrides,
    ]
    for run, arg in RUNS
  }


def report_paths(root: str, seed: int) -> dict[str, str]:
  """{'demo': .../eval/report.json, 'baseline': .../baseline/eval/report.json} of one seed."""
  seed_dir = os.path.join(root, f'seed_{seed}')
  return {
    'demo': os.path.join(seed_dir, 'eval', 'report.json'),
    'baseline': os.path.join(seed_dir, 'baseline', 'eval', 'report.json'),
  }


def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, value: Any) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(value, f, indent=1)
  os.replace(tmp, path)


def run_seed(root: str, seed: int, overrides: Sequence[str], perturb: str) -> dict[str, Any]:
  """Runs (or resumes) one seed's two commands; returns its record (commands, wall times).

  A command already recorded as finished, with the same command line and its report present,
  is skipped. Each command's output goes to DIR/seed_S/<run>.log.

  Args:
    root: the study's folder (study_root).
    seed: the seed (`--config.seed`).
    overrides: extra `--config.x=y` arguments for both commands.
    perturb: a key of PERTURBATIONS.

  Returns:
    {run: {'command': [...], 'wall_s': float, 'env': {...}}}.
  """
  seed_dir = os.path.join(root, f'seed_{seed}')
  os.makedirs(seed_dir, exist_ok=True)
  record_path = os.path.join(seed_dir, RECORD)
  record = _read_json(record_path) if os.path.exists(record_path) else {}
  env_extra = PERTURBATIONS[perturb]
  env = dict(os.environ, PYTHONPATH=REPO)
  for key, value in env_extra.items():
    env[key] = f'{env[key]} {value}' if env.get(key) else value
  reports = report_paths(root, seed)
  for run, command in commands(root, seed, overrides).items():
    done = record.get(run)
    if done and done['command'] == command and os.path.exists(reports[run]):
      print(f'[seed {seed}] {run}: finished already ({done["wall_s"]:.0f} s): skipped', flush=True)
      continue
    log_path = os.path.join(seed_dir, f'{run}.log')
    print(f'[seed {seed}] {run}: running (log: {log_path})', flush=True)
    start = time.time()
    with open(log_path, 'a') as log:
      proc = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if proc.returncode != 0:
      with open(log_path) as f:
        tail = f.read()[-3000:]
      raise RuntimeError(
        f'[seed {seed}] {run} failed (exit {proc.returncode}): {" ".join(command)}\n{tail}'
      )
    if not os.path.exists(reports[run]):
      raise RuntimeError(f'[seed {seed}] {run} ended without {reports[run]}')
    record[run] = {'command': command, 'wall_s': wall, 'env': env_extra}
    _write_json(record_path, record)
    print(f'[seed {seed}] {run}: done in {wall:.0f} s', flush=True)
  return record


def collect(root: str, seeds: Sequence[int]) -> dict[str, Any]:
  """Every row's accuracy per t on every seed, from the reports.

  Returns:
    {'rows': {row: {'per_seed': {seed: [T floats]}, 'mean_per_t', 'std_per_t'}},
     'num_examples': {seed: {run: int}}}.
  """
  reports = {s: {run: _read_json(p) for run, p in report_paths(root, s).items()} for s in seeds}
  rows = {}
  for name, (run, key, strategy, _) in ROWS.items():
    per_seed = {}
    for s in seeds:
      values = reports[s][run][key]
      per_seed[str(s)] = [float(v) for v in (values[strategy] if strategy else values)]
    stack = np.array(list(per_seed.values()))
    std = stack.std(axis=0, ddof=1) if len(seeds) > 1 else np.zeros(stack.shape[1])
    rows[name] = {
      'per_seed': per_seed,
      'mean_per_t': stack.mean(axis=0).tolist(),
      'std_per_t': std.tolist(),
    }
  examples = {str(s): {run: reports[s][run]['num_examples'] for run in reports[s]} for s in seeds}
  return {'rows': rows, 'num_examples': examples}


def findings(rows: Mapping[str, Any], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """The demo's findings, each with its margin (points) on every seed; holds when margin >= 0.

  Each finding compares a left-hand side with a right-hand side (`lhs >= rhs + k`, margin
  `lhs - rhs - k`). Its largest margin is what the margin would be with the left-hand side at
  100%: a finding whose largest margin is negative on a seed cannot hold there, whatever the
  left-hand side learns (the right-hand side is too close to the ceiling).

  Args:
    rows: collect()'s rows.
    seeds: the seeds.

  Returns:
    [{'finding', 'margins': {seed: points}, 'holds': {seed: bool}, 'holds_on_every_seed',
      'largest_margins': {seed: points}, 'reachable': {seed: bool}}].
  """

  def at(row, seed, t=-1):
    return 100.0 * rows[row]['per_seed'][str(seed)][t]

  # (finding, lhs(seed), rhs(seed), k): the finding is lhs >= rhs + k.
  checks = [
    (
      'learned policy >= best of uniform, gaussian, center, bottom_left + 10 points (t = T)',
      lambda s: at('glitr', s),
      lambda s: max(at(r, s) for r in FIXED_OR_RANDOM),
      10.0,
    ),
    (
      "teacher's locations >= learned policy - 2 points (t = T)",
      lambda s: at('teacher', s),
      lambda s: at('glitr', s),
      -2.0,
    ),
    (
      'teacher on full frames the best of all strategies (t = T)',
      lambda s: at('teacher_full_frames', s),
      lambda s: max(at(r, s) for r in ('glitr', 'teacher', *FIXED_OR_RANDOM)),
      0.0,
    ),
    (
      'learned policy at t = T >= at t = 1 + 10 points',
      lambda s: at('glitr', s),
      lambda s: at('glitr', s, 0),
      10.0,
    ),
    (
      'spatiotemporal student >= CE-only student + 3 points (learned policies, t = T)',
      lambda s: at('glitr', s),
      lambda s: at('baseline_glitr', s),
      3.0,
    ),
    (
      "diagnostic (Fig. 8b): teacher's weights at the spatiotemporal student's locations >= at "
      "the CE-only student's (t = T)",
      lambda s: at('teacher_at_glitr', s),
      lambda s: at('teacher_at_baseline_glitr', s),
      0.0,
    ),
    (
      'diagnostic (Fig. 8c): spatiotemporal student with uniform random locations >= CE-only '
      'student with them (t = T)',
      lambda s: at('uniform', s),
      lambda s: at('baseline_uniform', s),
      0.0,
    ),
  ]
  out = []
  for text, lhs, rhs, k in checks:
    margins = {str(s): float(lhs(s) - rhs(s) - k) for s in seeds}
    largest = {str(s): float(100.0 - rhs(s) - k) for s in seeds}
    holds = {s: m >= 0 for s, m in margins.items()}
    out.append(
      {
        'finding': text,
        'margins': margins,
        'holds': holds,
        'holds_on_every_seed': all(holds.values()),
        'largest_margins': largest,
        'reachable': {s: m >= 0 for s, m in largest.items()},
      }
    )
  return out


def _cell(values: Sequence[float]) -> str:
  return f'{100.0 * values[0]:.1f} / {100.0 * values[1]:.1f}'


def markdown(study: Mapping[str, Any]) -> str:
  """study.md: the table, the findings and the diagnostics."""
  seeds = study['seeds']
  rows = study['rows']
  t = len(next(iter(rows.values()))['mean_per_t'])
  lines = ['# The demo over seeds', '']
  lines += [
    f'- seeds: {", ".join(str(s) for s in seeds)}; perturbation: {study["perturb"] or "none"}'
    + (f' ({study["env"]})' if study['env'] else ''),
    f'- overrides: {" ".join(study["overrides"]) or "none"}',
    f'- validation videos per evaluation: {study["min_num_examples"]}',
    f'- wall time of `main.py --config=configs/demo.py` per seed: '
    f'{", ".join(f"{w:.0f}" for w in study["wall_s"]["demo"].values())} s; of `:baseline`: '
    f'{", ".join(f"{w:.0f}" for w in study["wall_s"]["baseline"].values())} s '
    '(each from the call that ran it)',
    '',
    f'## Accuracy (%) at t = 1 / t = {t}: mean +- std over seeds, then every seed',
    '',
  ]
  header = ['row', 'what', 't = 1', f't = {t}'] + [f'seed {s}' for s in seeds]
  lines.append('| ' + ' | '.join(header) + ' |')
  lines.append('|' + '|'.join('---' for _ in header) + '|')
  for name, row in rows.items():
    mean, std = row['mean_per_t'], row['std_per_t']
    cells = [
      f'`{name}`',
      ROWS[name][3],
      f'{100 * mean[0]:.1f} +- {100 * std[0]:.1f}',
      f'{100 * mean[-1]:.1f} +- {100 * std[-1]:.1f}',
    ]
    cells += [_cell([row['per_seed'][str(s)][0], row['per_seed'][str(s)][-1]]) for s in seeds]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', '## Findings: margin (points) on every seed; >= 0 holds', '']
  header = ['finding'] + [f'seed {s}' for s in seeds] + ['every seed']
  lines.append('| ' + ' | '.join(header) + ' |')
  lines.append('|' + '|'.join('---' for _ in header) + '|')
  for f in study['findings']:
    cells = [f['finding']]
    cells += [f'{f["margins"][str(s)]:+.1f}' for s in seeds]
    cells.append('holds' if f['holds_on_every_seed'] else 'fails')
    lines.append('| ' + ' | '.join(cells) + ' |')
  unreachable = [f for f in study['findings'] if not all(f['reachable'].values())]
  if unreachable:
    lines += ['', 'Out of reach (the margin even with the left-hand side at 100%):', '']
  for f in unreachable:
    where = [s for s in seeds if not f['reachable'][str(s)]]
    largest = ', '.join(f'{f["largest_margins"][str(s)]:+.1f}' for s in where)
    lines.append(
      f'- {f["finding"]}: cannot hold on seed{"s" * (len(where) > 1)} '
      f'{", ".join(str(s) for s in where)} (largest margin {largest}): its right-hand side is '
      'too near 100%.'
    )
  lines += ['', '![accuracy per t](study_accuracy_per_t.png)', '']
  return '\n'.join(lines)


def plot(rows: Mapping[str, Any], seeds: Sequence[int], path: str) -> str:
  """Accuracy per t, one line per row (its mean over seeds), a +-1 std band over seeds."""
  fig = Figure(figsize=(9.0, 5.0), dpi=110)
  ax = fig.add_subplot()
  for name, row in rows.items():
    colour, style = PLOT_STYLE[name]
    mean, std = 100.0 * np.array(row['mean_per_t']), 100.0 * np.array(row['std_per_t'])
    t = np.arange(1, len(mean) + 1)
    width = 2.4 if name in ('glitr', 'baseline_glitr') else 1.3
    ax.plot(t, mean, style, color=colour, marker='o', ms=3, lw=width, label=name)
    ax.fill_between(t, mean - std, mean + std, color=colour, alpha=0.12, lw=0)
  ax.set_xlabel('t (glimpses observed)')
  ax.set_ylabel('accuracy (%)')
  ax.set_title(
    f'The demo over seeds {",".join(str(s) for s in seeds)}: mean, +-1 std band', fontsize=10
  )
  ax.grid(alpha=0.3)
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.legend(fontsize=8, loc='center left', bbox_to_anchor=(1.01, 0.5))
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=fig.dpi, bbox_inches='tight')
  return path


def study(
  workdir: str, seeds: Sequence[int], overrides: Sequence[str] = (), perturb: str = ''
) -> dict[str, Any]:
  """Runs every seed (resuming), then writes study.md, study.json and the plot.

  Args:
    workdir: DIR (a perturbed study writes under DIR/perturb_<name>).
    seeds: the seeds to run.
    overrides: `--config.x=y` arguments passed to every command.
    perturb: '' or a key of PERTURBATIONS.

  Returns:
    The study.json dictionary.
  """
  root = study_root(workdir, perturb)
  seeds = [int(s) for s in seeds]
  if not seeds:
    raise ValueError('--seeds is empty: name at least one seed')
  for o in overrides:
    if not o.startswith('--config.'):
      raise ValueError(f'--override={o!r}: an override is --config.x=y')
  os.makedirs(root, exist_ok=True)
  started = time.time()
  records = {}
  for i, seed in enumerate(seeds, 1):
    print(f'[study] seed {seed} ({i}/{len(seeds)}, {time.time() - started:.0f} s in)', flush=True)
    records[str(seed)] = run_seed(root, seed, overrides, perturb)
  out = collect(root, seeds)
  result = {
    'workdir': root,
    'seeds': seeds,
    'perturb': perturb,
    'env': PERTURBATIONS[perturb],
    'overrides': list(overrides),
    'commands': {s: {run: r[run]['command'] for run in r} for s, r in records.items()},
    'wall_s': {run: {s: r[run]['wall_s'] for s, r in records.items()} for run, _ in RUNS},
    'min_num_examples': min(min(v.values()) for v in out['num_examples'].values()),
    'num_examples': out['num_examples'],
    'rows': out['rows'],
    'findings': findings(out['rows'], seeds),
  }
  if result['min_num_examples'] < MIN_VALIDATION_VIDEOS:
    print(
      f'[study] note: {result["min_num_examples"]} validation videos; the demo judges its '
      f'findings on >= {MIN_VALIDATION_VIDEOS}',
      flush=True,
    )
  _write_json(os.path.join(root, 'study.json'), result)
  with open(os.path.join(root, 'study.md'), 'w') as f:
    f.write(markdown(result) + '\n')
  plot(result['rows'], seeds, os.path.join(root, 'study_accuracy_per_t.png'))
  print(f'[study] wrote {root}/study.md, study.json, study_accuracy_per_t.png', flush=True)
  for f in result['findings']:
    margins = ', '.join(f'{m:+.1f}' for m in f['margins'].values())
    verdict = 'holds' if f['holds_on_every_seed'] else 'fails'
    print(f'[study] {verdict}: {f["finding"]} (margins {margins})', flush=True)
    if not all(f['reachable'].values()):
      largest = ', '.join(f'{m:+.1f}' for m in f['largest_margins'].values())
      print(f'[study]   out of reach: largest margins {largest}', flush=True)
  return result


def define_flags() -> None:
  """The command line's flags; defined only when run as a program, so that importing this module
  beside another command-line module (glitr_jax.streaming.cli also has --workdir) is harmless."""
  flags.DEFINE_string('workdir', None, 'the study folder (DIR)')
  flags.DEFINE_list('seeds', ['0', '1', '2', '3', '4'], 'seeds, comma-separated')
  flags.DEFINE_enum('perturb', '', list(PERTURBATIONS), 'a rounding perturbation (see above)')
  flags.DEFINE_multi_string('override', [], '--config.x=y passed to every command (repeatable)')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if not FLAGS.workdir:
    raise app.UsageError('--workdir is required')
  study(FLAGS.workdir, [int(s) for s in FLAGS.seeds], FLAGS.override, FLAGS.perturb)


if __name__ == '__main__':
  define_flags()
  app.run(main)
