r"""SSv2 teacher (paper section 5, docs/design.md 3.2): full frames, trains Tf, Tc and Tl.

  python main.py --config=configs/ssv2_teacher.py --workdir=$WORKDIR \
      --config.init.backbone=ibot_vits16_teacher.pth \
      --config.offline.checkpoint=videomae_vitb_ssv2_ft.pth \
      --config.data.data_dir=$TFDS_DATA_DIR

Hardware: the paper used 4 A100-40GB (global batch 60 = 4 x 15); any 4-8 GPUs or a TPU v4-8 slice
(the batch is global and split over all devices). Expected: ~36 h on 4 A100s for 40 epochs; the
official teacher reaches about 60% online accuracy at t = 16 on SSv2 validation (paper Fig. 5,
"Teacher"; with L_dist, Fig. 10a). Weights: Tf from iBOT's ImageNet ViT-S/16 (init.backbone), Tc
and Tl from scratch (Tl a copy of Tc). L_dist against VideoMAE ViT-B/16 fine-tuned on SSv2
(offline.checkpoint, on the fly by default; offline.mode='precomputed' with data.offline_logits
reads logits precomputed by `python -m glitr_jax.tools.precompute_offline_logits`).

Arguments (`configs/ssv2_teacher.py:glimpse=128`): glimpse = 64 | 96 | 128 px (the consistency
branch's glimpses).
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, glimpse=96)
  c = common.get_base_config()
  c.stage = 'teacher'
  common.set_glimpse(c, args.glimpse)
  c.model.num_classes = 174
  c.model.num_frames = 16

  c.data.name = 'something_something_v2'
  c.data.augment.device = True  # the training augmentation runs in the train step (data/config.py)
  c.data.augment.random_erasing = 0.25
  c.data.augment.mixup = 0.8
  c.data.augment.cutmix = 1.0

  c.loss.dist = 1.0
  c.offline.model = 'videomae'
  c.offline.mode = 'on_the_fly'

  c.optim.lr_tf, c.optim.lr_tc, c.optim.lr_tl = 1e-5, 1e-4, 1e-4
  c.optim.min_lr_tf, c.optim.min_lr_tc, c.optim.min_lr_tl = 1e-7, 1e-6, 1e-6
  c.optim.warmup_epochs_tl = 15.0

  c.batch_size = 60
  c.num_epochs = 40.0
  c.eval.batch_size = 64
  return c
