r"""The official PyTorch release's training step, timed from its own code, beside train_step.py.

The official code is not part of this repository: `--official_dir` is a checkout of it
(github.com/facebookresearch/GliTr). Its model.py is imported as it is (benchmarks/torch_compat.py
lets it build on timm 1.x without changing what it computes) and its VideoTransformer built as its
main.py builds it for one stage: ViT-S/16 Tf (`deit_small_patch16_224`), drop-path 0.1, Tc and Tl
of width 768 and depth 4, random weights in place of the iBOT checkpoint it reads. A step is one
iteration of its engine.py's training loop:

  teacher  timm's Mixup (mixup 0.8, cutmix 1.0, switch 0.5, label smoothing 0.1) on the batch,
           SoftTargetCrossEntropy; the forward (Tf, Tc, Tl on the frames, then copies of Tf and Tc
           on the glimpses Tl chose, for L_mse and L_kld), zero_grad, backward, the three AdamW
           steps. Without the VideoMAE distillation teacher (L_tch = 0), as train_step.py runs it.
  student  no mixup (the release's student recipe), LabelSmoothingCrossEntropy(0.1); the frozen
           teacher (the same VideoTransformer, requires_grad off) on the full frames under
           no_grad, the glimpse loop over T, backward, the three AdamW steps.

The learning-rate schedulers and the logged metrics of the loop are left out (they do not touch
the model). The same frames, glimpse, classes and batch as train_step.py; ONE JSON object:

  median_step_s             median wall time of `--steps` timed steps, after `--warmup`
  model_flops_per_step      benchmarks/flop_count.py's analytic count (the same as train_step.py's)
  matmul_flops_per_s        torch's dense float32 2048^2 matmul rate in this process (the higher of
                            a reading before and after the steps, as train_step.py)
  mfu                       model_flops_per_step / median_step_s / matmul_flops_per_s
  plus the step times, torch's and timm's versions, torch's threads and the machine (the same
  keys as train_step.py's; `backend` and `devices` are JAX's, which runs nothing here).

Alternate it with train_step.py on one machine (a shared machine's load drifts):

  python benchmarks/official_step.py --official_dir=/path/to/GliTr --stage=teacher --frames=8
  python benchmarks/train_step.py --stage=teacher --batch=2 --frames=8 --glimpse=96
  python benchmarks/official_step.py --official_dir=/path/to/GliTr --stage=student --frames=16
"""

import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import flop_count  # noqa: E402  (benchmarks/flop_count.py, beside this script)
import machine  # noqa: E402  (benchmarks/machine.py)
import torch_compat  # noqa: E402  (benchmarks/torch_compat.py)

from configs import common  # noqa: E402

_OFFICIAL_DIR = flags.DEFINE_string(
  'official_dir', None, 'A checkout of the official release (its model.py is imported).'
)
_STAGE = flags.DEFINE_enum('stage', 'student', ['teacher', 'student'], 'Which training step.')
_BATCH = flags.DEFINE_integer('batch', 2, 'Videos per step B.')
_FRAMES = flags.DEFINE_integer('frames', 16, 'Frames per video T.')
_GLIMPSE = flags.DEFINE_integer('glimpse', 96, 'Glimpse side in pixels (a multiple of 16).')
_CLASSES = flags.DEFINE_integer('num_classes', 174, 'Classes (SSv2: 174).')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed steps first (torch allocates on the first).')
_THREADS = flags.DEFINE_integer('threads', 0, "torch's intra-op threads (0: this process's CPUs).")
_MATMUL_SIZE = flags.DEFINE_integer('matmul_size', 2048, 'Side of the peak-rate matmuls.')
flags.mark_flag_as_required('official_dir')

_IMAGE = 224  # the release's frame side (its ViT's position embedding is 14 x 14 patches)


def import_official_model(official_dir: str):
  """The release's model.py as a module, adapted to timm 1.x, with timm importable here."""
  path = os.path.join(official_dir, 'model.py')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--official_dir={official_dir!r} has no model.py (a GliTr checkout?)')
  try:
    import torchvision  # noqa: F401, PLC0415  (timm imports it; it may not load beside torch)
  except (ImportError, RuntimeError):
    torch_compat.install_torchvision_stand_in()
  spec = importlib.util.spec_from_file_location('glitr_official_model', path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # timm's register_model looks its caller's module up there
  spec.loader.exec_module(module)
  torch_compat.adapt_official_model(module)
  return module


def build(official, stage: str, b: int, t: int, glimpse_patches: int, num_classes: int):
  """The release's model, optimisers and one step's function on fixed random inputs."""
  import torch  # noqa: PLC0415
  from timm.data.mixup import Mixup  # noqa: PLC0415
  from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy  # noqa: PLC0415

  weights_dir = tempfile.mkdtemp(prefix='official_step_')
  backbone = official.deit_small_patch16_224(pretrained=False)
  state = {k: v for k, v in backbone.state_dict().items() if not k.startswith('head')}
  checkpoint = os.path.join(weights_dir, 'ibot_vits_16_checkpoint_teacher.pth')  # what it reads
  torch.save({'state_dict': state}, checkpoint)
  kwargs = dict(
    backbone='deit_small_patch16_224',
    num_classes=num_classes,
    num_frames_per_video=t,
    drop=0.0,
    drop_path=0.1,
    num_patches_in_glimpse=glimpse_patches,
    pretrained_dir=weights_dir,
  )
  mixup = None
  if stage == 'teacher':
    mixup = Mixup(
      mixup_alpha=0.8,
      cutmix_alpha=1.0,
      prob=1.0,
      switch_prob=0.5,
      mode='batch',
      label_smoothing=0.1,
      num_classes=num_classes,
    )
    model = official.VideoTransformer(
      criterion=SoftTargetCrossEntropy(), attntype='teacher', **kwargs
    )
  else:
    criterion = LabelSmoothingCrossEntropy(smoothing=0.1)
    teacher = official.VideoTransformer(criterion=criterion, attntype='teacher', **kwargs)
    for p in teacher.parameters():
      p.requires_grad = False
    model = official.VideoTransformer(
      criterion=criterion, attntype='student', teacher=teacher, **kwargs
    )
  shutil.rmtree(weights_dir)  # read only while the models are built
  model.train()
  optimisers = [
    torch.optim.AdamW(getattr(model, part).parameters(), weight_decay=0.05, lr=1e-5)
    for part in ('backbone', 'temporal_head', 'temploc_head')
  ]
  generator = torch.Generator().manual_seed(0)
  video = torch.randn(b, t, 3, _IMAGE, _IMAGE, generator=generator)
  one_hot = torch.nn.functional.one_hot(torch.arange(b) % num_classes, num_classes)

  def step() -> float:
    data, label = video, one_hot
    if mixup is not None:
      data, label = mixup(data.flatten(1, 2), label.long().argmax(-1))
      data = data.reshape(b, t, 3, _IMAGE, _IMAGE)
    _, l_cls, l_tch, l_mse, l_kld, _ = model(data, label)
    for opt in optimisers:
      opt.zero_grad()
    loss = l_cls + l_tch + l_mse + l_kld
    loss.backward()
    for opt in optimisers:
      opt.step()
    return float(loss.detach())

  return step


def matmul_rate(size: int, repeats: int = 7) -> float:
  """torch's dense float32 matmul FLOP/s in this process (median of `repeats` products)."""
  import torch  # noqa: PLC0415

  generator = torch.Generator().manual_seed(1)
  a = torch.randn(size, size, generator=generator)
  b = torch.randn(size, size, generator=generator)
  a @ b
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times)


def main(argv):
  del argv
  import torch  # noqa: PLC0415

  torch.set_num_threads(_THREADS.value or len(os.sched_getaffinity(0)))
  c = common.get_base_config()
  c.model.num_frames = _FRAMES.value
  c.model.num_classes = _CLASSES.value
  c.model.image_size = _IMAGE  # the FLOPs of the release's frames
  common.set_glimpse(c, _GLIMPSE.value)
  stage, b, t = _STAGE.value, _BATCH.value, _FRAMES.value
  official = import_official_model(_OFFICIAL_DIR.value)
  import timm  # noqa: PLC0415  (after import_official_model: torchvision may need its stand-in)

  step = build(official, stage, b, t, c.model.glimpse_patches, _CLASSES.value)

  for _ in range(_WARMUP.value):
    step()
  rate_before = matmul_rate(_MATMUL_SIZE.value)
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    loss = step()
    times.append(time.perf_counter() - start)
  rate_after = matmul_rate(_MATMUL_SIZE.value)
  rate = max(rate_before, rate_after)
  flops = flop_count.model_flops(stage, b, t, c.model)['total']
  median = statistics.median(times)
  print(
    json.dumps(
      {
        'implementation': 'official release (torch)',
        'median_step_s': median,
        'videos_per_s': b / median,
        'model_flops_per_step': flops,
        'matmul_flops_per_s': rate,
        'mfu': flops / median / rate,
        'matmul_flops_per_s_before': rate_before,
        'matmul_flops_per_s_after': rate_after,
        'step_times_s': times,
        'loss': loss,
        'stage': stage,
        'batch': b,
        'frames': t,
        'glimpse': _GLIMPSE.value,
        'torch': torch.__version__,
        'timm': timm.__version__,
        'torch_threads': torch.get_num_threads(),
        **machine.machine_info(),
      }
    )
  )


if __name__ == '__main__':
  app.run(main)
