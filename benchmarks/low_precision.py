r"""Accuracy of the low-precision online paths: bfloat16 and int8 heads against float32.

The online loop (`GliTr.student_step` jitted, state from `GliTr.init_step_state`: full frames in,
the glimpse cropped inside, one step per frame, as benchmarks/inference.py's cached way) is run on
the same videos in three paths:

  float32     the model config's compute_dtype 'float32', the weights as loaded
  bfloat16    compute_dtype 'bfloat16', the product weights stored once in bfloat16
              (glitr_jax.inference.cast_params)
  int8_heads  that, and Tc's and Tl's block weights in int8 with per-channel scales
              (glitr_jax.inference.quantize_head_weights)

The model and videos are either a trained student (--workdir, a workdir whose data is
`glitr_synthetic`: its first --num_videos validation videos, rendered as
glitr_jax/tools/policy_coverage.py renders them, with their labels) or, without --workdir, the
model config --model (the official GliTr student by default; --model.x=y, --frames=T sets
num_frames) with random weights (`machine.random_params`) on random normal videos.

Prints ONE JSON object: what ran (source, checkpoint_step, num_videos, batch, frames, image_size,
num_classes, float32_weight_dtypes, elapsed_s), `float32_accuracy_at_T` (with labels, else null)
and, in `paths`, for bfloat16 and int8_heads against float32:
  max_abs_logit_diff, mean_abs_logit_diff        over every video, step and class
  top1_agreement_last_step, top1_agreement_all_steps  share of (video[, step]) with the same argmax
  max_abs_location_diff, mean_abs_location_diff  over the T glimpse locations per video (where
                                                 each step cropped: l_1, the learned init_loc,
                                                 then Tl's predictions) and both coordinates
  accuracy_at_T                                  with labels (the path's argmax at t = T), else null
  weight_dtypes                                  the dtypes of the parameters the path ran on
plus machine.machine_info().

  python benchmarks/low_precision.py --workdir=/tmp/glitr_study/seed_0/student --num_videos=300
  python benchmarks/low_precision.py --num_videos=64 --frames=16     # official size, random

The flags are defined only when the file runs as a script, so that tests can import its functions.
"""

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)
import ml_collections  # noqa: E402

from glitr_jax import inference, pixels, weights  # noqa: E402
from glitr_jax.data import synthetic  # noqa: E402
from glitr_jax.models import config as model_config_lib  # noqa: E402

FLAGS = flags.FLAGS
PATHS = ('float32', 'bfloat16', 'int8_heads')


def _define_flags() -> None:
  from ml_collections import config_flags  # noqa: PLC0415

  flags.DEFINE_string(
    'workdir', None, 'A student workdir (data glitr_synthetic); without it, random weights.'
  )
  flags.DEFINE_integer(
    'num_videos', 64, 'Videos compared (with --workdir: its first validation videos).'
  )
  flags.DEFINE_integer('batch', 32, 'Videos per online batch (the last batch may be smaller).')
  flags.DEFINE_integer('frames', None, 'Without --workdir: T (num_frames of --model).')
  config_flags.DEFINE_config_dict(
    'model',
    model_config_lib.get_model_config(drop_path_rate=0.0),
    'Without --workdir: the model (glitr_jax.models.config), official size; --model.x=y.',
  )


# The comparison arithmetic: NumPy arrays in, Python floats out.


def abs_diff_stats(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
  """(max, mean) of |other - reference| over every element, in float64."""
  reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
  if reference.shape != other.shape:
    raise ValueError(f'shapes differ: {reference.shape} and {other.shape}')
  diff = np.abs(other - reference)
  return float(diff.max()), float(diff.mean())


def top1_agreement(reference_ntc: np.ndarray, other_ntc: np.ndarray) -> tuple[float, float]:
  """(at the last step, over all steps): the share of videos (and steps) whose argmax class over
  the last axis is the same in both (N, T, C) logit arrays."""
  if reference_ntc.shape != other_ntc.shape or reference_ntc.ndim != 3:
    raise ValueError(f'need two equal (N, T, C) shapes: {reference_ntc.shape}, {other_ntc.shape}')
  same_nt = np.argmax(reference_ntc, axis=-1) == np.argmax(other_ntc, axis=-1)
  return float(same_nt[:, -1].mean()), float(same_nt.mean())


def accuracy_at_last_step(logits_ntc: np.ndarray, labels_n: np.ndarray) -> float:
  """The share of videos whose argmax class at the last step is their label."""
  labels_n = np.asarray(labels_n)
  if labels_n.shape != logits_ntc.shape[:1]:
    raise ValueError(f'{labels_n.shape[0]} labels for {logits_ntc.shape[0]} videos')
  return float((np.argmax(logits_ntc[:, -1], axis=-1) == labels_n).mean())


def compare(reference: dict, other: dict, labels_n: np.ndarray | None = None) -> dict:
  """One path's outputs against the reference's: {'logits': (N, T, C), 'locations': (N, T, 2)}
  each; the figures of the module docstring (accuracy_at_T None without labels)."""
  logit_max, logit_mean = abs_diff_stats(reference['logits'], other['logits'])
  loc_max, loc_mean = abs_diff_stats(reference['locations'], other['locations'])
  last, every = top1_agreement(reference['logits'], other['logits'])
  return {
    'max_abs_logit_diff': logit_max,
    'mean_abs_logit_diff': logit_mean,
    'top1_agreement_last_step': last,
    'top1_agreement_all_steps': every,
    'max_abs_location_diff': loc_max,
    'mean_abs_location_diff': loc_mean,
    'accuracy_at_T': None if labels_n is None else accuracy_at_last_step(other['logits'], labels_n),
  }


# The paths and the online loop.


def path_inputs(path: str, model_config, params) -> tuple[ml_collections.ConfigDict, dict]:
  """The model config and parameters of one path (module docstring) from float32 ones."""
  if path not in PATHS:
    raise ValueError(f'unknown path {path!r}; one of {PATHS}')
  config = ml_collections.ConfigDict(model_config.to_dict())
  config.compute_dtype = 'float32' if path == 'float32' else 'bfloat16'
  params = inference.cast_params(params, config.compute_dtype)
  if path == 'int8_heads':
    params = inference.quantize_head_weights(params)
  return config, params


def run_online(model_config, params, batches) -> dict:
  """The online loop over `batches` ((B, T, S, S, 3) float32 videos, B may vary).

  Returns:
    {'logits': float32 (N, T, C), 'locations': float32 (N, T, 2)}: per step, the step's logits
    and the location its glimpse was taken at (the step's `location` output).
  """
  model = inference.model_for(model_config)
  step_fn = jax.jit(model.student_step)
  init_fn = jax.jit(model.init_step_state, static_argnums=1)
  logits, locations = [], []
  for video_btsc in batches:
    video_btsc = jnp.asarray(video_btsc)
    state = init_fn(params, video_btsc.shape[0])
    step_logits, step_locations = [], []
    for t in range(video_btsc.shape[1]):
      state, out = step_fn(params, state, video_btsc[:, t])
      step_logits.append(out['logits'])
      step_locations.append(out['location'])
    logits.append(np.stack([np.asarray(x, np.float32) for x in step_logits], axis=1))
    locations.append(np.stack([np.asarray(x, np.float32) for x in step_locations], axis=1))
  return {'logits': np.concatenate(logits), 'locations': np.concatenate(locations)}


def workdir_inputs(workdir: str, num_videos: int):
  """(model config, float32 params, videos (N, T, S, S, 3) float32, labels (N,), step) of a
  `glitr_synthetic` student workdir: its first `num_videos` validation videos, normalised."""
  variables, mc, _, step = weights.load_student(workdir)
  config = weights.read_workdir_config(workdir)
  if config.data.name != 'glitr_synthetic':
    raise ValueError(f'{workdir}: data.name is {config.data.name!r}; glitr_synthetic is needed')
  sp = synthetic.SyntheticParams.from_config(config.data.synthetic)
  if (sp.frame_size, sp.num_frames) != (mc.image_size, mc.num_frames):
    raise ValueError(
      f'{workdir}: data.synthetic renders {sp.num_frames} frames of {sp.frame_size} px, '
      f'the model takes {mc.num_frames} of {mc.image_size}: they must be equal'
    )
  if not 1 <= num_videos <= sp.validation_examples:
    raise ValueError(f'--num_videos must be in [1, {sp.validation_examples}], not {num_videos}')
  labels = synthetic.labels_for_split(sp, 'validation')[:num_videos]
  videos = [
    synthetic.render_video(sp, int(label), 'validation', i)[0] for i, label in enumerate(labels)
  ]
  frames = pixels.normalize(np.stack(videos).astype(np.float32), 255.0)
  return mc, variables['params'], frames, labels, step


def random_batches(model_config, num_videos: int, batch: int, seed: int = 1):
  """Random normal videos (B, T, S, S, 3) float32, `num_videos` in all, drawn batch by batch."""
  rng = np.random.default_rng(seed)
  t, s = model_config.num_frames, model_config.image_size
  for start in range(0, num_videos, batch):
    n = min(batch, num_videos - start)
    yield rng.standard_normal((n, t, s, s, 3), dtype=np.float32)


def weight_dtypes(params) -> list[str]:
  """The sorted names of the dtypes of a parameter tree's leaves."""
  return sorted({str(np.asarray(x).dtype) for x in jax.tree.leaves(params)})


def main(argv):
  del argv
  if FLAGS.num_videos < 1 or FLAGS.batch < 1:
    raise app.UsageError('--num_videos and --batch must be >= 1')
  model_flags = [name for name in FLAGS if name.startswith('model.') and FLAGS[name].present]
  start = time.perf_counter()
  if FLAGS.workdir:
    if FLAGS.frames is not None or model_flags:
      raise app.UsageError('--frames and --model.* apply without --workdir only')
    mc, params, frames, labels, step = workdir_inputs(FLAGS.workdir, FLAGS.num_videos)
    b = FLAGS.batch

    def batches():
      return (frames[i : i + b] for i in range(0, len(frames), b))

  else:
    mc = ml_collections.ConfigDict(FLAGS.model.to_dict())
    if FLAGS.frames is not None:
      mc.num_frames = FLAGS.frames
    model_config_lib.validate(mc)  # before building the model
    params = jax.tree.map(jnp.asarray, machine.random_params(inference.model_for(mc)))
    labels, step = None, None

    def batches():
      return random_batches(mc, FLAGS.num_videos, FLAGS.batch)

  outputs, dtypes = {}, {}
  for path in PATHS:
    config, path_params = path_inputs(path, mc, params)
    outputs[path] = run_online(config, path_params, batches())
    dtypes[path] = weight_dtypes(path_params)
  reference = outputs['float32']
  paths = {
    path: dict(compare(reference, outputs[path], labels), weight_dtypes=dtypes[path])
    for path in PATHS[1:]
  }
  out = {
    'source': FLAGS.workdir or 'random weights',
    'checkpoint_step': step,
    'num_videos': int(reference['logits'].shape[0]),
    'batch': FLAGS.batch,
    'frames': mc.num_frames,
    'image_size': mc.image_size,
    'num_classes': mc.num_classes,
    'float32_weight_dtypes': dtypes['float32'],
    'float32_accuracy_at_T': None
    if labels is None
    else accuracy_at_last_step(reference['logits'], labels),
    'paths': paths,
    'elapsed_s': time.perf_counter() - start,
    **machine.machine_info(),
  }
  print(json.dumps(out))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
