r"""glitr-jax entry point.

  python main.py --config=configs/ssv2_teacher.py --workdir=/tmp/ssv2_teacher
  python main.py --config=configs/ssv2_student.py --workdir=/tmp/ssv2_student \
      --config.teacher_checkpoint=/tmp/ssv2_teacher
  python main.py --config=configs/ssv2_student.py --workdir=/tmp/ssv2_student --mode=evaluate
  python main.py --config=configs/demo.py --workdir=/tmp/glitr_demo

Any config field can be overridden with --config.<field>=<value>; a field the config lacks is
refused, naming it. Running a training command again over the same workdir resumes it. With
several processes (multi-host GPUs or TPU pods) every process runs the same command;
jax.distributed is initialised from the environment (TPU, SLURM) or from --coordinator_address /
--num_processes / --process_id.

Exit status: 0 done; 1 an error (the last log line says what and where); 75 (EX_TEMPFAIL)
preempted: SIGTERM arrived, the state was saved, and the same command resumes the run.
"""

import difflib
import importlib.util
import os
import sys

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from glitr_jax import run
from glitr_jax import workdir as workdir_lib
from glitr_jax.train import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:arg]).')
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and reports.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate'], 'Train the config stage, or evaluate.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process runs).')
flags.DEFINE_integer('process_id', None, 'This process index (multi-process runs).')
flags.mark_flags_as_required(['config', 'workdir'])


def _maybe_initialize_distributed() -> None:
  explicit = FLAGS.coordinator_address is not None
  cluster = any(
    v in os.environ
    for v in ('SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS')
  )
  slurm_multi = int(os.environ.get('SLURM_NTASKS', '1')) > 1
  if explicit:
    jax.distributed.initialize(
      coordinator_address=FLAGS.coordinator_address,
      num_processes=FLAGS.num_processes,
      process_id=FLAGS.process_id,
    )
  elif cluster and (slurm_multi or 'TPU_WORKER_HOSTNAMES' in os.environ):
    jax.distributed.initialize()  # auto-detected from the cluster environment


class _QuietLibraries:
  """Keeps libraries' INFO chatter (orbax logs every checkpoint file) off the console.

  Also orbax's warning for a checkpoint saved without metrics: only evaluated steps have them
  (they rank checkpoints for checkpoint.keep_best), so most saves are expected to lack them.
  """

  def filter(self, record) -> bool:
    noisy = ('/orbax/', '/tensorflow_datasets/', '/grain/')
    if '/orbax/' in record.pathname and 'tracked_metric' in str(record.msg):
      return False
    return record.levelno >= 30 or not any(p in record.pathname for p in noisy)


def _config_argument(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The config `--config=path[:arg]` names, as config_flags builds it (without overrides)."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_glitr_config', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _fields(config: ml_collections.ConfigDict, prefix: str = '') -> list[str]:
  out = []
  for key, value in config.items():
    out.append(prefix + key)
    if isinstance(value, ml_collections.ConfigDict):
      out += _fields(value, f'{prefix}{key}.')
  return out


def _unknown_override(argv: list[str], config: ml_collections.ConfigDict) -> str | None:
  """'--config.x: ...' for the first override naming a field the config lacks, with suggestions."""
  known = set(_fields(config))
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    field = arg[len('--config.') :].split('=', 1)[0]
    if field in known:
      continue
    leaf = field.rsplit('.', 1)[-1]
    hints = sorted(f for f in known if f.endswith('.' + leaf))
    hints += [h for h in difflib.get_close_matches(field, known, n=3) if h not in hints]
    hint = f'; did you mean {" or ".join(hints[:4])}?' if hints else ''
    return f'--config.{field}: the config has no field {field!r}{hint}'
  return None


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a bad flag, --config file or override exits with one line naming it."""
  try:
    rest = FLAGS(argv)
    FLAGS.config.keys()  # a config file that failed to load raises here
    return rest
  except flags.Error as e:  # config_flags wraps a failing get_config() with its traceback
    _usage_error(_config_error(argv, e) if str(e).startswith('flag --config=') else str(e))
  except Exception as e:
    _usage_error(_config_error(argv, e))


def _config_error(argv: list[str], error: Exception) -> str:
  spec = _config_argument(argv)
  if spec is None:
    return '--config is required'
  path = spec.partition(':')[0]
  if not os.path.isfile(path):
    return f'--config={spec}: no such file {os.path.abspath(path)}'
  try:
    config = _load_config_file(spec)
  except Exception as load_error:  # the config file itself fails (a bad :arg, say)
    return f'--config={spec}: {_one_line(load_error)}'
  return _unknown_override(argv, config) or f'--config={spec}: {_one_line(error)}'


def _usage_error(message: str) -> None:
  sys.stderr.write(f'FATAL Flags parsing error: {message}\n')
  sys.exit(1)


def _one_line(error: BaseException) -> str:
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  return ' '.join(text.replace("\\'", "'").split())


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  _maybe_initialize_distributed()
  logging.info(
    'JAX process %d/%d, local devices: %s',
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
  )
  try:
    run.main(FLAGS.config, FLAGS.workdir, FLAGS.mode)
  except loop.Preempted as e:
    logging.warning('%s (exit status %d)', e, loop.EXIT_PREEMPTED)
    sys.exit(loop.EXIT_PREEMPTED)
  except workdir_lib.WorkdirError as e:
    logging.error('%s', e)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
