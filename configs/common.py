"""Shared base config. Each experiment config imports `get_base_config` and overrides fields.

Sections (stable names, used by main.py, the trainers and the evaluation):
  model       the GliTr architecture (glitr_jax.models.config)
  data        dataset, splits, input pipeline and augmentation
  loss        loss-term weights (ablations set a weight to 0) and label smoothing
  optim       per-module AdamW learning rates (Tf, Tc, Tl), floors, warm-up, weight decay
  offline     the offline model behind the teacher's L_dist (VideoMAE)
  init        where a teacher's weights start from
  eval        evaluation: strategies, seeds, early exit, pictures
  mesh        device mesh
  checkpoint  orbax checkpointing
Batch sizes are global (summed over all devices of all hosts).
"""

import ml_collections

from glitr_jax.data import config as data_config_lib
from glitr_jax.models import config as model_config_lib


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a `:key=value,key2=value2` config argument (big_vision style) into typed fields.

  A bare word (`:teacher`) sets the first default key. Values take the type of their default.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  first = next(iter(defaults)) if defaults else None
  for item in arg.split(','):
    if not item:
      continue
    key, _, value = item.partition('=')
    if not _:
      key, value = first, item
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r}; known: {sorted(defaults)}')
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.lower() in ('1', 'true', 'yes')
    else:
      out[key] = kind(value)
  return out


GLIMPSE_PIXELS = (64, 96, 128)
VARIANTS = {  # The paper's ablation (Fig. 8): which consistency terms the student uses.
  'spatiotemporal': (1.0, 1.0),
  'spatial': (1.0, 0.0),
  'temporal': (0.0, 1.0),
  'baseline': (0.0, 0.0),
}


def set_glimpse(c: ml_collections.ConfigDict, pixels: int) -> None:
  """Glimpse side in pixels (64 / 96 / 128 in the paper) -> model.glimpse_patches."""
  patch = c.model.patch_size
  if pixels % patch:
    raise ValueError(f'glimpse={pixels} px is not a whole number of {patch}-px patches')
  c.model.glimpse_patches = pixels // patch


def set_variant(c: ml_collections.ConfigDict, variant: str) -> None:
  """Student loss variant: spatiotemporal | spatial | temporal | baseline (CE only)."""
  if variant not in VARIANTS:
    raise ValueError(f'variant={variant!r}; known: {sorted(VARIANTS)}')
  c.loss.spatial, c.loss.temporal = VARIANTS[variant]


def get_base_config() -> ml_collections.ConfigDict:
  """Fields every experiment has; the values are those of the SSv2 student unless noted."""
  c = ml_collections.ConfigDict()
  c.stage = 'student'  # 'teacher' | 'student'
  c.seed = 0

  c.model = model_config_lib.get_model_config()  # glitr_jax.models.config documents the fields

  # --- Data (glitr_jax.data.config defines and documents every field). ---
  c.data = data_config_lib.get_data_config()

  # --- Losses (docs/design.md section 2); every weight is 1 in the paper. ---
  c.loss = ml_collections.ConfigDict()
  c.loss.ce = 1.0
  c.loss.spatial = 1.0  # MSE between glimpse features and the teacher's frame features
  c.loss.temporal = 1.0  # KL between glimpse logits and the teacher's logits
  c.loss.dist = 0.0  # teacher only: KL(y~_T, offline logits)
  c.loss.label_smoothing = 0.1

  # --- Optimisation (docs/design.md section 3). lr = base * batch_size / 128. ---
  c.optim = ml_collections.ConfigDict()
  c.optim.lr_tf = 1e-5
  c.optim.lr_tc = 1e-5
  c.optim.lr_tl = 1e-5
  c.optim.min_lr_tf = 1e-7
  c.optim.min_lr_tc = 1e-6
  c.optim.min_lr_tl = 1e-6
  c.optim.warmup_epochs_tf = 0.0
  c.optim.warmup_epochs_tc = 0.0
  c.optim.warmup_epochs_tl = 0.0
  c.optim.warmup_lr = 1e-6  # absolute start of a warm-up (timm's warmup_lr)
  c.optim.weight_decay = 0.05
  c.optim.decay_mask = False  # True: spare embeddings, biases and norms (off in the paper)
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8
  c.optim.grad_clip_norm = 0.0  # 0 = no clipping

  c.batch_size = 360
  c.num_epochs = 100.0
  c.num_train_steps = -1  # > 0 wins over num_epochs
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.eval_every_steps = 5000
  c.donate = True  # donate the train state's buffers to the step

  # --- Weights a run starts from. ---
  c.teacher_checkpoint = ''  # student: teacher workdir, orbax checkpoint, or official .pth/.npz
  c.init = ml_collections.ConfigDict()
  c.init.backbone = ''  # teacher: ImageNet ViT-S/16 state dict (timm / DeiT / iBOT naming)
  c.init.checkpoint = ''  # teacher: a GliTr teacher to start from (Jester from SSv2)
  c.init.drop_classifier = False  # drop temporal_head.head.* of init.checkpoint
  c.init.temporal_stride = 1  # subsample the temporal embeddings [::stride]

  # --- The offline model behind L_dist (teacher, SSv2). ---
  c.offline = ml_collections.ConfigDict()
  c.offline.model = ''  # '' | 'videomae'
  c.offline.checkpoint = ''  # VideoMAE fine-tuned: transformers dir, .safetensors, .pth, .npz
  c.offline.mode = 'on_the_fly'  # | 'precomputed' (reads data.offline_logits)
  # Sizes of the VideoMAE the checkpoint holds (glitr_jax.models.videomae): ViT-B/16 fine-tuned on
  # SSv2. num_classes must equal model.num_classes (same class order); on the fly VideoMAE sees the
  # teacher's clip, so num_frames / image_size must also equal model.num_frames / image_size.
  c.offline.videomae = ml_collections.ConfigDict()
  c.offline.videomae.hidden_size = 768
  c.offline.videomae.depth = 12
  c.offline.videomae.num_heads = 12
  c.offline.videomae.mlp_ratio = 4.0
  c.offline.videomae.tubelet_size = 2
  c.offline.videomae.patch_size = 16
  c.offline.videomae.num_frames = 16
  c.offline.videomae.image_size = 224
  c.offline.videomae.num_classes = 174
  c.offline.videomae.compute_dtype = 'float32'  # | 'bfloat16' (parameters stay float32)

  # --- Evaluation (main.py --mode=evaluate, and periodic evaluation while training). ---
  c.eval_checkpoint = ''  # '' = the newest checkpoint in the workdir
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.strategies = ('glitr', 'uniform', 'gaussian', 'center', 'bottom_left', 'teacher')
  c.eval.num_seeds = 3  # seeds for the random strategies
  c.eval.gammas = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01)
  c.eval.num_pictures = 4
  c.eval.max_examples = -1  # > 0: evaluate on the first N examples only (quick looks)
  c.eval.seed = 0  # base seed of the random strategies (draws depend on it and the example index)
  c.eval.checkpoint = 'latest'  # --mode=evaluate on a workdir: 'latest' or 'best' (validated)
  c.eval.histogram_bins = 0  # bins per side of the glimpse-centre histograms (0: ~patch grid)
  c.eval.teacher_at_glitr = True  # also the teacher's weights at GliTr's locations (Fig. 8b)
  c.eval.strategies_per_pass = 0  # given-location strategies per vmapped pass (0 = all at once)

  # --- Devices. ---
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # size of the data axis (-1 = every device)
  c.mesh.param_sharding = 'replicated'  # room for FSDP-style sharding later

  # --- Optional Weights & Biases logging beside TensorBoard (glitr_jax.train.wandb_writer). ---
  c.wandb = ml_collections.ConfigDict()
  c.wandb.project = ''  # '' = off; else the wandb project (the run id is kept in the workdir)
  c.wandb.entity = ''
  c.wandb.name = ''  # '' = wandb's default run name
  c.wandb.tags = ()

  # --- Checkpoints (orbax). ---
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.keep = 3
  c.checkpoint.keep_best = True  # also keep the best by validation accuracy at t = T
  c.checkpoint.async_save = True
  return c
