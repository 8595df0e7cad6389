r"""glitr-jax entry point.

  python main.py --config=configs/ssv2_teacher.py --workdir=/tmp/ssv2_teacher
  python main.py --config=configs/ssv2_student.py --workdir=/tmp/ssv2_student \
      --config.teacher_checkpoint=/tmp/ssv2_teacher
  python main.py --config=configs/ssv2_student.py --workdir=/tmp/ssv2_student --mode=evaluate
  python main.py --config=configs/demo.py --workdir=/tmp/glitr_demo

Any config field can be overridden with --config.<field>=<value>. Running a training command again
over the same workdir resumes it. With several processes (multi-host GPUs or TPU pods) every process
runs the same command; jax.distributed is initialised from the environment (TPU, SLURM) or from
--coordinator_address / --num_processes / --process_id.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from glitr_jax import host_memory

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:arg]).')
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and reports.')
flags.DEFINE_enum('mode', 'train', ['train', 'evaluate'], 'Train the config stage, or evaluate.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-process runs).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process runs).')
flags.DEFINE_integer('process_id', None, 'This process index (multi-process runs).')
flags.mark_flags_as_required(['config', 'workdir'])


def _maybe_initialize_distributed() -> None:
  import jax  # noqa: PLC0415 (after absl parsed the flags)

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


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  host_memory.configure(host_memory.HOST_MALLOC.value)  # before JAX starts its backend
  _maybe_initialize_distributed()
  import jax  # noqa: PLC0415

  from glitr_jax import run  # noqa: PLC0415

  logging.info(
    'JAX process %d/%d, local devices: %s, host allocator: %s (--host_malloc=%s)',
    jax.process_index(),
    jax.process_count(),
    jax.local_devices(),
    host_memory.malloc_library(),
    host_memory.HOST_MALLOC.value,
  )
  run.main(FLAGS.config, FLAGS.workdir, FLAGS.mode)


if __name__ == '__main__':
  app.run(main)
