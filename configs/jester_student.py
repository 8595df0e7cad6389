r"""Jester student, GliTr (paper section 5): 8 glimpses of 96 px, trained against its teacher.

  python main.py --config=configs/jester_student.py --workdir=$WORKDIR \
      --config.teacher_checkpoint=$JESTER_TEACHER_WORKDIR --config.data.data_dir=$TFDS_DATA_DIR

Hardware: the paper used 4 V100-32GB (global batch 800 = 4 x 200); 8 GPUs or a TPU v4-8 slice work
unchanged. Expected: 150 epochs; online accuracy at t = 8 of 91.15% (96 px), 84.03% (64 px) and
93.91% (128 px) on Jester validation (paper Table 1).

Arguments (`configs/jester_student.py:glimpse=128,variant=baseline`): as configs/ssv2_student.py.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, glimpse=96, variant='spatiotemporal')
  c = common.get_base_config()
  c.stage = 'student'
  common.set_glimpse(c, args.glimpse)
  common.set_variant(c, args.variant)
  c.model.num_classes = 27
  c.model.num_frames = 8

  c.data.name = 'jester'
  c.data.augment.device = True  # the training augmentation runs in the train step (data/config.py)
  c.optim.lr_tf = c.optim.lr_tc = c.optim.lr_tl = 1e-5
  c.optim.min_lr_tf = c.optim.min_lr_tc = c.optim.min_lr_tl = 1e-7

  c.batch_size = 800
  c.num_epochs = 150.0
  c.eval.batch_size = 100
  return c
