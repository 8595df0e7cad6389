r"""Jester student, GliTr (paper section 5): 8 glimpses of 96 px, trained against its teacher.

  python main.py --config=configs/jester_student.py --workdir=$WORKDIR \
      --config.teacher_checkpoint=$JESTER_TEACHER_WORKDIR --config.data.data_dir=$TFDS_DATA_DIR

Hardware: the paper used 4 V100-32GB (global batch 800 = 4 x 200); 8 GPUs or a TPU v4-8 slice work
unchanged. Expected: 150 epochs; online accuracy at t = 8 of 91.15% (96 px), 84.03% (64 px) and
93.91% (128 px) on Jester validation (paper Table 1).

Arguments (`configs/jester_student.py:glimpse=128,variant=baseline`): as configs/ssv2_student.py.
"""

from configs import ssv2_student


def get_config(arg=None):
  c = ssv2_student.get_config(arg)
  c.model.num_classes = 27
  c.model.num_frames = 8
  c.data.name = 'jester'
  c.optim.min_lr_tc = c.optim.min_lr_tl = 1e-7

  c.batch_size = 800
  c.num_epochs = 150.0
  c.eval.batch_size = 100
  return c
