"""The optional wandb writer, run in wandb's offline mode and read back from what wandb wrote.

wandb 0.30 has no Python reader for an offline run's transaction log (`run-<id>.wandb`; its Go
service writes it and `wandb sync` uploads it), so `wandb_records` reads the log's framing as wandb
writes it (a ':W&B' header, then LevelDB-log records in 32 KiB blocks, each CRC-32 checked) and
parses every record with wandb's own protobuf (`wandb.proto.wandb_internal_pb2.Record`).
"""

import glob
import json
import os
import struct
import sys
import time
import zlib

import jax.numpy as jnp
import ml_collections
import numpy as np
import PIL.Image
import pytest
from wandb.proto import wandb_internal_pb2

from glitr_jax.train import wandb_writer

_BLOCK = 32768
_HEADER = 7  # checksum (4), length (2), type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: str) -> list[wandb_internal_pb2.Record]:
  """Every record of a `.wandb` transaction log, in order."""
  with open(path, 'rb') as f:
    data = f.read()
  ident, magic, version = struct.unpack('<4sHB', data[:_HEADER])
  assert (ident, magic, version) == (b':W&B', 0xBEE1, 0), (ident, magic, version)
  records, pending, pos = [], b'', _HEADER
  while pos + _HEADER <= len(data):
    left = _BLOCK - pos % _BLOCK
    if left < _HEADER:  # a block's tail too short for a header is padding
      pos += left
      continue
    checksum, length, kind = struct.unpack('<IHB', data[pos : pos + _HEADER])
    if (checksum, length, kind) == (0, 0, 0):  # zero padding to the end of the block
      pos += left
      continue
    if pos + _HEADER + length > len(data):  # a record still being written
      break
    chunk = data[pos + _HEADER : pos + _HEADER + length]
    assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f'{path}: bad CRC at {pos}'
    pos += _HEADER + length
    if kind == _FIRST:
      pending = chunk
    elif kind == _MIDDLE:
      pending += chunk
    elif kind in (_FULL, _LAST):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending + chunk if kind == _LAST else chunk)
      records.append(record)
      pending = b''
  return records


def finished_records(path: str, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
  """The records of a finished run's log. `run.finish()` can return before wandb's service has
  flushed the log to disk, so this waits for the log's final `exit` record."""
  deadline = time.monotonic() + timeout_s
  while True:
    records = wandb_records(path) if os.path.exists(path) else []
    if any(r.WhichOneof('record_type') == 'exit' for r in records):
      return records
    assert time.monotonic() < deadline, f'{path}: no exit record after {timeout_s} s'
    time.sleep(0.05)


def offline_run(wandb_dir: str, run_id: str, index: int) -> dict:
  """What the `index`-th offline run of `run_id` recorded: run, config and history by step."""
  logs = sorted(glob.glob(os.path.join(wandb_dir, 'wandb', f'offline-run-*-{run_id}')))
  records = finished_records(os.path.join(logs[index], f'run-{run_id}.wandb'))
  out = {'run': None, 'config': {}, 'history': {}, 'dir': logs[index]}
  for record in records:
    kind = record.WhichOneof('record_type')
    if kind == 'run':
      out['run'] = record.run
      updates = record.run.config.update
    elif kind == 'config':
      updates = record.config.update
    elif kind == 'history':
      row: dict = {}
      for (
        item
      ) in record.history.item:  # nested_key ['glimpses', 'count'] -> row['glimpses']['count']
        *parents, leaf = list(item.nested_key) or [item.key]
        node = row
        for name in parents:
          node = node.setdefault(name, {})
        node[leaf] = json.loads(item.value_json)
      out['history'][record.history.step.num] = row
      continue
    else:
      continue
    out['config'].update({u.key: json.loads(u.value_json) for u in updates})
  return out


def wandb_config(project='glitr-test', name='tiny-run', tags=('teacher', 'ssv2')):
  c = ml_collections.ConfigDict()
  c.wandb = ml_collections.ConfigDict(dict(project=project, entity='', name=name, tags=tags))
  return c


@pytest.fixture
def offline(tmp_path, monkeypatch):
  wandb_dir = str(tmp_path / 'wandb_files')
  os.makedirs(wandb_dir)
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_DIR', wandb_dir)
  monkeypatch.setenv('WANDB_SILENT', 'true')
  monkeypatch.setenv('WANDB_CONSOLE', 'off')  # leave pytest's stdout capture alone
  return wandb_dir


def test_offline_run_records_the_logged_values_and_a_resume_continues_it(offline, tmp_path):
  workdir = str(tmp_path / 'workdir')
  writer = wandb_writer.maybe_wandb_writer(wandb_config(), workdir)
  with open(os.path.join(workdir, 'wandb_run_id.txt')) as f:
    run_id = f.read().strip()
  writer.write_hparams({'optim.lr_tf': 3e-3, 'model.depth': 2})
  writer.write_scalars(1, {'train/loss': 1.5, 'train/accuracy': np.float32(0.25)})
  writer.write_scalars(2, {'train/loss': jnp.asarray(0.75)})
  glimpses = np.random.default_rng(0).uniform(size=(2, 8, 8, 3))
  writer.write_images(2, {'glimpses': glimpses})
  writer.write_histograms(2, {'locations': np.linspace(-1, 1, 100)}, {'locations': 10})
  writer.flush()
  writer.close()

  first = offline_run(offline, run_id, 0)
  assert first['run'].run_id == run_id and first['run'].project == 'glitr-test'
  assert first['run'].display_name == 'tiny-run' and list(first['run'].tags) == ['teacher', 'ssv2']
  assert first['config']['optim.lr_tf'] == 3e-3 and first['config']['model.depth'] == 2
  history = first['history']
  assert sorted(history) == [1, 2]
  assert history[1]['train/loss'] == 1.5 and history[1]['train/accuracy'] == 0.25
  assert history[2]['train/loss'] == 0.75
  assert history[2]['glimpses']['_type'] == 'images/separated'
  assert history[2]['glimpses']['count'] == 2
  for name, image in zip(history[2]['glimpses']['filenames'], glimpses):
    with PIL.Image.open(os.path.join(first['dir'], 'files', name)) as png:
      np.testing.assert_array_equal(np.asarray(png), np.round(image * 255).astype(np.uint8))
  assert history[2]['locations']['_type'] == 'histogram'
  assert len(history[2]['locations']['values']) == 10

  # A resumed run (same workdir) continues the same wandb run. (wandb names an offline run's
  # directory by the second it started in: a resume within the same second would share it.)
  time.sleep(1.01 - time.time() % 1.0)  # into the next second
  again = wandb_writer.maybe_wandb_writer(wandb_config(), workdir)
  assert again.run.id == run_id
  again.write_scalars(3, {'train/loss': 0.5})
  again.close()
  second = offline_run(offline, run_id, 1)
  assert second['run'].run_id == run_id
  assert second['history'][3]['train/loss'] == 0.5

  other = wandb_writer.maybe_wandb_writer(wandb_config(), str(tmp_path / 'another_run'))
  assert other.run.id != run_id  # a new workdir is a new wandb run
  other.close()


def test_no_project_means_no_writer_and_no_wandb_import(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'wandb', None)  # importing wandb now fails
  assert wandb_writer.maybe_wandb_writer(wandb_config(project=''), str(tmp_path)) is None
  with pytest.raises(AttributeError, match='wandb'):  # a config without the section is an error
    wandb_writer.maybe_wandb_writer(ml_collections.ConfigDict(), str(tmp_path))
  assert not os.path.exists(tmp_path / 'wandb_run_id.txt')
  with pytest.raises(ImportError, match="config.wandb.project='glitr' needs wandb"):
    wandb_writer.maybe_wandb_writer(wandb_config(project='glitr'), str(tmp_path))


def test_a_damaged_run_id_file_is_named(tmp_path):
  (tmp_path / 'wandb_run_id.txt').write_text('not an id!\n')
  with pytest.raises(ValueError, match=r"wandb_run_id.txt holds 'not an id!'"):
    wandb_writer.read_or_create_run_id(str(tmp_path))
