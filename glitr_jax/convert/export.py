r"""Writes a trained workdir's GliTr as an official checkpoint (the official release's key names).

  python -m glitr_jax.convert.export --workdir=$WORKDIR [--step=N | --which=best] \
      --out=glitr.safetensors

The output is the official state dict (`backbone.*`, `temporal_head.*`, `temploc_head.*` in
PyTorch layouts, glitr_jax.convert.official; docs/design.md 1.7), which
`glitr_jax.convert.load_official` (and the official PyTorch code, for `.pth`) reads back. The
format follows the extension:
  .safetensors  the flat state dict (safetensors.numpy; no torch needed), with the step and the
                model config as JSON in the file's metadata;
  .pth / .pt    `torch.save({'model': state_dict, 'step': N, 'model_config': {...}})`, the
                official release's layout (needs torch);
  .npz          the flat state dict (numpy.savez).
The file is written beside its final name and renamed into place, so a failed export never leaves
a partial file under that name.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import safetensors.numpy
from absl import app, flags, logging

from glitr_jax import weights
from glitr_jax.convert import official
from glitr_jax.train import checkpoints

FLAGS = flags.FLAGS
SUFFIXES = ('.safetensors', '.pth', '.pt', '.npz')


def save_official(
  params: Any, path: str, metadata: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
  """Writes GliTr parameters as an official state dict, in the format `path`'s extension names.

  Args:
    params: GliTr parameters (`{'backbone': ..., 'temporal_head': ..., 'temploc_head': ...}`).
    path: output file, ending in one of `SUFFIXES`.
    metadata: JSON-serialisable extras (e.g. step, model_config): safetensors metadata (as JSON
      strings) or entries beside `model` in a `.pth`; not stored in `.npz`.

  Returns:
    The state dict written (official key -> float32 array in PyTorch layout).

  Raises:
    ValueError: an unknown extension.
    ImportError: a `.pth` without torch installed.
  """
  if not path.endswith(SUFFIXES):
    raise ValueError(f'{path}: unknown output type (expected one of {", ".join(SUFFIXES)})')
  state = {
    k: np.array(v, dtype=np.float32, order='C') for k, v in official.to_state_dict(params).items()
  }
  metadata = dict(metadata or {})
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  # The temporary name keeps the extension: numpy.savez appends '.npz' to names without it.
  base, ext = os.path.splitext(path)
  tmp = f'{base}.partial{ext}'
  if ext == '.safetensors':
    safetensors.numpy.save_file(
      state, tmp, metadata={'format': 'pt', **{k: json.dumps(v) for k, v in metadata.items()}}
    )
  elif ext == '.npz':
    np.savez(tmp, **state)
  else:
    try:
      import torch  # noqa: PLC0415 (optional dependency, only for .pth output)
    except ImportError as e:
      raise ImportError(
        f'Writing {path} needs PyTorch (pip install torch); .safetensors needs no torch'
      ) from e
    torch.save({'model': {k: torch.from_numpy(v) for k, v in state.items()}, **metadata}, tmp)
  os.replace(tmp, path)
  return state


def export_workdir(
  workdir: str, out: str, step: int | None = None, which: str = 'latest'
) -> tuple[str, int | None]:
  """Exports a workdir's checkpoint as an official GliTr checkpoint file.

  Args:
    workdir: the training workdir (its config.json gives the model config).
    out: the output file (see `save_official`).
    step: the checkpoint step to export; None exports the one `which` names.
    which: without `step`, 'latest' or 'best' (by validation accuracy at t = T).

  Returns:
    (out, the step exported).

  Raises:
    FileNotFoundError: no config.json, no checkpoint, or no checkpoint of that step.
  """
  config = weights.read_workdir_config(workdir)
  source = workdir
  if step is not None:
    source = os.path.join(checkpoints.checkpoint_dir(workdir), str(step))
    if not os.path.isdir(source):
      root = checkpoints.checkpoint_dir(workdir)
      steps = sorted(int(s) for s in os.listdir(root) if s.isdigit()) if os.path.isdir(root) else []
      raise FileNotFoundError(f'{workdir} has no checkpoint of step {step} (it has: {steps})')
  params, got = weights.load_params(source, config.model, which)
  metadata = {'step': got, 'model_config': config.model.to_dict()}
  save_official(params, out, metadata)
  return out, got


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    out, step = export_workdir(FLAGS.workdir, FLAGS.out, FLAGS.step, FLAGS.which)
  except (FileNotFoundError, ValueError, ImportError) as e:  # one line naming the file or step
    raise SystemExit(f'glitr_jax.convert.export: {e}') from None
  logging.info('Wrote step %s of %s to %s', step, FLAGS.workdir, out)
  print(f'{out}: step {step} of {FLAGS.workdir}')


def define_flags() -> None:
  """The command's flags (defined only when it runs: main.py defines a --workdir of its own)."""
  flags.DEFINE_string('workdir', None, 'The training workdir (its config.json and checkpoints).')
  flags.DEFINE_string('out', None, 'Output file: .safetensors, .pth / .pt (torch needed) or .npz.')
  flags.DEFINE_integer('step', None, 'Checkpoint step to export (default: the one --which names).')
  flags.DEFINE_enum('which', 'latest', ['latest', 'best'], 'Without --step: newest or best.')
  flags.mark_flags_as_required(['workdir', 'out'])


if __name__ == '__main__':
  define_flags()
  app.run(main)
