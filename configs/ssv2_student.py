r"""SSv2 student, GliTr (paper section 5): 16 glimpses of 96 px, trained against its teacher.

  python main.py --config=configs/ssv2_student.py --workdir=$WORKDIR \
      --config.teacher_checkpoint=$TEACHER_WORKDIR --config.data.data_dir=$TFDS_DATA_DIR
  python main.py --config=configs/ssv2_student.py --workdir=$WORKDIR --mode=evaluate

Hardware: the paper used 4 A100-40GB (global batch 360 = 4 x 90); 8 GPUs or a TPU v4-8 slice work
unchanged. Expected: 100 epochs; online accuracy at t = 16 of 47.56% (96 px), 38.24% (64 px) and
53.02% (128 px) on SSv2 validation (paper Table 1). The student starts as a copy of its teacher,
which stays frozen as the target of the spatial (feature MSE) and temporal (logit KL) losses.

Arguments (`configs/ssv2_student.py:glimpse=128,variant=baseline`):
  glimpse  64 | 96 | 128 px.
  variant  spatiotemporal (default) | spatial | temporal | baseline: the paper's ablation (Fig. 8)
           keeps CE and switches the consistency terms.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, glimpse=96, variant='spatiotemporal')
  c = common.get_base_config()
  c.stage = 'student'
  common.set_glimpse(c, args.glimpse)
  common.set_variant(c, args.variant)
  c.model.num_classes = 174
  c.model.num_frames = 16

  c.data.name = 'something_something_v2'
  c.data.augment.device = True  # the training augmentation runs in the train step (data/config.py)
  # Students: no mixup, cutmix or random erasing; RandAugment and the random-resized crop stay.
  c.optim.lr_tf = c.optim.lr_tc = c.optim.lr_tl = 1e-5
  c.optim.min_lr_tf, c.optim.min_lr_tc, c.optim.min_lr_tl = 1e-7, 1e-6, 1e-6

  c.batch_size = 360
  c.num_epochs = 100.0
  c.eval.batch_size = 64
  return c
