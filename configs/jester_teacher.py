r"""Jester teacher (paper section 5, docs/design.md 3.2), initialised from the SSv2 teacher.

  python main.py --config=configs/jester_teacher.py --workdir=$WORKDIR \
      --config.init.checkpoint=$SSV2_TEACHER_WORKDIR --config.data.data_dir=$TFDS_DATA_DIR

Hardware: the paper used 4 V100-32GB (global batch 100 = 4 x 25). Expected: 50 epochs; the teacher
reaches about 95% online accuracy at t = 8 on Jester validation (paper Fig. 10b). The SSv2
teacher's weights load non-strictly: Tc's classifier is dropped (174 -> 27 classes) and both heads'
temporal embeddings are subsampled [::2] (16 -> 8 frames). No L_dist (no Jester VideoMAE exists).

Arguments (`configs/jester_teacher.py:glimpse=128`): glimpse = 64 | 96 | 128 px.
"""

from configs import ssv2_teacher


def get_config(arg=None):
  c = ssv2_teacher.get_config(arg)
  c.model.num_classes = 27
  c.model.num_frames = 8
  c.data.name = 'jester'

  # No L_dist, so no offline model; the weights start from the SSv2 teacher (init.checkpoint).
  c.loss.dist = 0.0
  c.offline.model = ''
  c.init.drop_classifier = True
  c.init.temporal_stride = 2

  c.optim.lr_tc = c.optim.lr_tl = 1e-5
  c.optim.min_lr_tc = c.optim.min_lr_tl = 1e-7
  c.optim.warmup_epochs_tl = 0.0

  c.batch_size = 100
  c.num_epochs = 50.0
  c.eval.batch_size = 100
  return c
