"""notebooks/quickstart.ipynb runs top to bottom on CPU at its smallest size (nbclient).

The parameters cell is followed by an injected cell (papermill's convention) that shrinks the
run: a few training steps on a few dozen videos. The notebook then trains both stages, evaluates,
runs the student online and draws its pictures; the test checks what it left in the workdir.
"""

import json
import os
import pathlib

import nbformat
from nbclient import NotebookClient

_REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = _REPO / 'notebooks' / 'quickstart.ipynb'


def _inject(nb, values: dict) -> None:
  index = next(i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', []))
  source = '\n'.join(f'{k} = {v!r}' for k, v in values.items())
  cell = nbformat.v4.new_code_cell(source)
  cell.metadata['tags'] = ['injected-parameters']
  nb.cells.insert(index + 1, cell)


def test_quickstart_notebook_runs_on_cpu(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  workdir = tmp_path / 'run'
  _inject(
    nb,
    {
      'WORKDIR': str(workdir),
      'DATA_DIR': str(tmp_path / 'tfds'),
      'TEACHER_STEPS': 4,
      'STUDENT_STEPS': 4,
      'TRAIN_EXAMPLES': 64,
      'VALIDATION_EXAMPLES': 32,
      'EVAL_BATCH_SIZE': 16,
      'NUM_VIDEOS': 2,
    },
  )
  client = NotebookClient(
    nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(_REPO)}}
  )
  client.execute()

  report = json.loads((workdir / 'eval' / 'report.json').read_text())
  assert report['num_examples'] == 32
  assert (workdir / 'notebook' / 'video0_glimpses.gif').stat().st_size > 0
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert not [o for o in outputs if o.get('output_type') == 'error']
  text = ''.join(o.get('text', '') for o in outputs if o.get('output_type') == 'stream')
  assert 'video 1 (' in text and 'correct at t=T:' in text
  images = [
    o for o in outputs if 'image/png' in o.get('data', {}) or 'image/gif' in o.get('data', {})
  ]
  assert len(images) >= 3, 'the accuracy plot, the glimpse GIF and the location histograms'
  assert os.path.isdir(workdir / 'teacher') and os.path.isdir(workdir / 'student')
