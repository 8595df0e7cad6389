r"""The demo: GliTr end to end on `glitr_synthetic`, on a laptop's CPU.

  python main.py --config=configs/demo.py --workdir=/tmp/glitr_demo             # all three stages
  python main.py --config=configs/demo.py:teacher --workdir=/tmp/glitr_demo     # one stage
  python main.py --config=configs/demo.py:student --workdir=/tmp/glitr_demo
  python main.py --config=configs/demo.py:evaluate --workdir=/tmp/glitr_demo
  python main.py --config=configs/demo.py:baseline --workdir=/tmp/glitr_demo    # CE-only student

Builds the synthetic benchmark (4,000 training and 1,000 validation videos, seconds), trains the
teacher on full frames (300 steps), trains the student from it (600 steps), and evaluates it
(glitr_jax.pipeline runs the stages into DIR/teacher, DIR/student and DIR/eval; finished stages are
skipped). `:baseline` trains a student with the same budget and CE only (the paper's ablation)
into DIR/baseline and evaluates it into DIR/baseline/eval.

The benchmark: 64x64 frames, 8 frames, a 9-px two-colour target drifting right near one of 4
places on a row in the upper part of the frame, on a textured background. The class (8) is the
place and the target's identity (2 colour pairs); the background's hue says the place, so any
glimpse tells where to look next, and only a glimpse at the target tells its identity. The student
sees 16x16 glimpses (6.25% of each frame). The model is a tiny GliTr (ViT of width 64 and depth 3
on 8-px patches; temporal heads of width 64 and depth 2), trained from scratch (sine-cosine
position tables); the teacher's Tl warms up over its first 125 steps, as the official SSv2
teacher's Tl warms up (docs/design.md 3.2), so it starts learning once Tf names what it sees. The
student's Tl is in effect held (a thousandth of the rate of its Tf and Tc): the student's policy is
the teacher's Tl run on the student's own glimpse features, which the spatial term pulls towards
the teacher's full-frame features that Tl was trained on.

Shared fields are overridden at the top (`--config.seed=1`, `--config.model.glimpse_patches=4`,
`--config.data.synthetic.num_distractors=2`), a stage's own fields (run length, optim, loss) in
its section (`--config.pipeline.teacher.num_train_steps=10`,
`--config.pipeline.student.optim.lr_tl=2e-3`); each field has one home, so every override takes
effect (glitr_jax.pipeline), and each stage's config.json records what it ran. README.md gives
the measured results.
"""

from configs import common
from glitr_jax import pipeline

STAGES = {
  'all': (pipeline.TEACHER, pipeline.STUDENT, pipeline.EVALUATE),
  'teacher': (pipeline.TEACHER,),
  'student': (pipeline.STUDENT,),
  'evaluate': (pipeline.EVALUATE,),
  'baseline': (pipeline.BASELINE, pipeline.BASELINE_EVALUATE),
}


def get_config(arg=None):
  args = common.parse_arg(arg, stage='all')
  if args.stage not in STAGES:
    raise ValueError(f'configs/demo.py:{args.stage}: known stages {sorted(STAGES)}')
  c = common.get_base_config()
  c.stage = pipeline.PIPELINE
  c.seed = 0

  m = c.model
  m.image_size, m.patch_size, m.glimpse_patches = 64, 8, 2
  m.hidden_size, m.depth, m.num_heads, m.mlp_ratio = 64, 3, 4, 2.0
  m.temporal_hidden_size, m.temporal_depth, m.temporal_heads = 64, 2, 4
  m.num_classes, m.num_frames = 8, 8
  m.drop_path_rate = 0.0
  m.posemb_init = 'sincos'  # from scratch: position tables start distinct (models/layers.py)

  d = c.data
  d.name = 'glitr_synthetic'
  d.worker_count = 0  # 2 cores: decoding in the main process beats a worker competing with XLA
  d.eval_short_side = m.image_size
  d.augment.rand_augment = ''
  d.augment.random_resized_crop = False
  s = d.synthetic
  s.frame_size, s.num_frames, s.num_classes = m.image_size, m.num_frames, m.num_classes
  s.seed = c.get_ref('seed')
  # The class is (place, identity): 4 places x 2 colour pairs. The scene's hue says the place;
  # the identity needs a glimpse at the target, which drifts right (a policy has to follow it).
  s.num_motions = 1
  s.num_places, s.place_layout, s.place_radius, s.place_tint = 4, 'row', 0.28, 0.12
  s.speed = 0.5
  s.num_distractors = 0
  s.target_size = 9
  s.cue = 0.0
  s.texture = 0.08

  c.batch_size = 32
  c.log_every_steps = 25
  c.checkpoint_every_steps = 200
  c.eval_every_steps = 0
  c.checkpoint.keep = 1
  c.checkpoint.keep_best = False

  c.eval.batch_size = 100
  c.eval.num_seeds = 2
  c.eval.num_pictures = 4

  # Learning rates are per 128 videos (optim.peak_lr): x 32 / 128 at batch 32.
  teacher_optim = c.optim.copy_and_resolve_references()
  teacher_optim.update(
    dict(
      lr_tf=8e-3,
      lr_tc=8e-3,
      lr_tl=8e-3,
      min_lr_tf=4e-5,
      min_lr_tc=4e-5,
      min_lr_tl=4e-5,
      warmup_epochs_tl=1.0,  # 125 steps: 4,000 videos / 32
    )
  )
  teacher_loss = c.loss.copy_and_resolve_references()
  teacher_loss.update(dict(ce=1.0, spatial=1.0, temporal=1.0, dist=0.0))
  # The student's Tl at a thousandth of Tf's and Tc's rate, in effect held: the student's
  # policy is the teacher's Tl run on the student's glimpse features. Tl was trained on the
  # teacher's full-frame features, and the spatial term pulls the glimpse features towards
  # those, so the spatiotemporal student learns where to look by learning what to see; the
  # CE-only student's glimpses move only as a side effect of CE on its features or through
  # the crop's gradient, which reaches a few pixels round the target (README.md; with Tl
  # free, the students' policies move away from the teacher's, whose locations then stop
  # being an upper bound).
  student_optim = c.optim.copy_and_resolve_references()
  student_optim.update(
    dict(lr_tf=2e-3, lr_tc=2e-3, lr_tl=2e-6, min_lr_tf=2e-5, min_lr_tc=2e-5, min_lr_tl=2e-8)
  )
  student_loss = c.loss.copy_and_resolve_references()
  student_loss.update(dict(ce=1.0, spatial=1.0, temporal=1.0))
  for field in pipeline.PER_STAGE:  # each stage's own (one home per field)
    del c[field]
  c.pipeline = dict(
    stages=STAGES[args.stage],
    teacher=dict(num_train_steps=300, num_epochs=0.0, optim=teacher_optim, loss=teacher_loss),
    student=dict(num_train_steps=600, num_epochs=0.0, optim=student_optim, loss=student_loss),
    baseline=dict(loss=dict(zip(('spatial', 'temporal'), common.VARIANTS['baseline']))),
  )
  return c
