r"""The demo: GliTr end to end on `glitr_synthetic`, on a laptop's CPU.

  python main.py --config=configs/demo.py --workdir=/tmp/glitr_demo             # all three stages
  python main.py --config=configs/demo.py:teacher --workdir=/tmp/glitr_demo     # one stage
  python main.py --config=configs/demo.py:student --workdir=/tmp/glitr_demo
  python main.py --config=configs/demo.py:evaluate --workdir=/tmp/glitr_demo
  python main.py --config=configs/demo.py:baseline --workdir=/tmp/glitr_demo    # CE-only student

Builds the synthetic benchmark (4,000 training and 1,000 validation videos, seconds), trains the
teacher on full frames (750 steps), trains the student from it (450 steps), and evaluates it
(glitr_jax.pipeline runs the stages into DIR/teacher, DIR/student and DIR/eval; finished stages are
skipped). `:baseline` trains a student with the same budget and CE only (the paper's ablation)
into DIR/baseline and evaluates it into DIR/baseline/eval. `python -m glitr_jax.tools.demo_study
--workdir=DIR --seeds=0,1,2,3,4` runs both over seeds and tabulates them; README.md and
docs/demo_experiments.md give the measured results and the wall time on 2 CPU cores.

The benchmark, in the paper's glimpse regime: 64x64 frames, 8 frames; the student sees 24x24
glimpses (a side of 0.375 of the frame's; the paper's 64-128 px of 224 are 0.29-0.57). An 11-px
two-colour target drifts right, its path centred on a ring round the frame's centre at a
uniformly random angle within the quarter of the ring that its first colour pair picks (a
45-degree arc: a different place in every video, drawn from a continuous distribution; where it
happens says something of what happens, so the teacher, which sees the whole frame, knows where
to look); a halo whose hue says where the target is reaches every glimpse. The class (16) is the
target's colour pair in frames 1-4 and in frames 5-8 (4 x 4): a glimpse must find the target and
see it in both halves of the clip, so accuracy at t <= 4 is at most 25%. A glimpse at the centre
or at the bottom-left corner, or at uniformly random places, misses the target in most videos
(tests/data_synthetic_test.py computes it). The model is a tiny GliTr (ViT of width 64 and depth 3
on 8-px patches; temporal heads of width 64 and depth 2), trained from scratch (sine-cosine
position tables); the teacher's Tl warms up over its first 125 steps, as the official SSv2
teacher's Tl warms up (docs/design.md 3.2), so it starts learning once Tf names what it sees. The
students train Tf, Tc and Tl at one base rate, as the paper's students do.

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
  # 24-px glimpses of 64-px frames: a glimpse side of 0.375 of the frame's, the paper's regime
  # (64-128 px of 224: 0.29-0.57).
  m.image_size, m.patch_size, m.glimpse_patches = 64, 8, 3
  m.hidden_size, m.depth, m.num_heads, m.mlp_ratio = 64, 3, 4, 2.0
  m.temporal_hidden_size, m.temporal_depth, m.temporal_heads = 64, 2, 4
  m.num_classes, m.num_frames = 16, 8
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
  # The class is the target's colour pair in frames 1-4 and in frames 5-8 (4 x 4 sequences): it
  # needs the target seen in both halves of the clip. The target's path is centred on a ring
  # round the frame's centre (16-21 px from it, at a uniformly random angle in the 45-degree arc
  # of its first colour pair's quarter), drifting right; a halo whose hue says where the target
  # is reaches every glimpse. No distractors: with two (and a 7-px target) a teacher of this size
  # stayed at chance for 150 steps.
  s.num_motions, s.num_phases = 1, 2
  s.num_places = 0
  s.ring_radius, s.ring_width, s.place_jitter = 0.29, 0.08, 1.0
  s.ring_arc = 0.5
  s.speed = 0.5
  s.num_distractors = 0
  s.target_size = 11
  s.cue, s.cue_radius, s.cue_tint = 0.3, 40.0, 1.5
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
  # The students' Tf, Tc and Tl at one base rate (the paper's recipe, docs/design.md 3.2).
  student_optim = c.optim.copy_and_resolve_references()
  student_optim.update(
    dict(lr_tf=2e-3, lr_tc=2e-3, lr_tl=2e-3, min_lr_tf=2e-5, min_lr_tc=2e-5, min_lr_tl=2e-5)
  )
  student_loss = c.loss.copy_and_resolve_references()
  student_loss.update(dict(ce=1.0, spatial=1.0, temporal=1.0))
  for field in pipeline.PER_STAGE:  # each stage's own (one home per field)
    del c[field]
  c.pipeline = dict(
    stages=STAGES[args.stage],
    teacher=dict(num_train_steps=750, num_epochs=0.0, optim=teacher_optim, loss=teacher_loss),
    student=dict(num_train_steps=450, num_epochs=0.0, optim=student_optim, loss=student_loss),
    baseline=dict(loss=dict(zip(('spatial', 'temporal'), common.VARIANTS['baseline']))),
  )
  return c
