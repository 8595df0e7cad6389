r"""Runs a trained GliTr student on video files as a small-field-of-view camera would feed it.

  python -m glitr_jax.streaming --workdir=/tmp/ssv2_student --video=clip.webm --gamma=0.9
  python -m glitr_jax.streaming --checkpoint=glitr_ssv2_student.pth \
      --model_config=configs/ssv2_student.py --class_names=category.txt --video=clip.webm
  python -m glitr_jax.streaming --workdir=/tmp/ssv2_student --export=/tmp/glitr_export

After every glimpse it prints each stream's prediction and the pixels read; at the end it writes a
GIF per video of what the model saw (the glimpses only, pasted where they were taken). Several
--video flags run as one batch of streams (they advance together; the batch ends with the shortest
video). A video whose frames are smaller than the model's input is refused (a camera that small
cannot give the glimpses the model was trained on) unless --allow_upscale. --export writes the
jax.export artifact that glitr_jax.export_runtime runs without Flax.
"""

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import av
import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from glitr_jax import convert, weights
from glitr_jax.models import config as model_config_lib
from glitr_jax.streaming import render
from glitr_jax.streaming.agent import GlimpseAgent
from glitr_jax.streaming.camera import EVAL_CROP_FRACTION, VideoFileCamera
from glitr_jax.streaming.export import DEFAULT_PLATFORMS, export_agent
from glitr_jax.streaming.runner import StreamResult, run_stream

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'A training workdir holding a student (config + checkpoints).')
flags.DEFINE_string('checkpoint', None, 'An official GliTr .pth or .npz (needs --model_config).')
config_flags.DEFINE_config_file(
  'model_config',
  None,
  'With --checkpoint: an experiment config (configs/ssv2_student.py[:glimpse=96]) whose `model` '
  'is used, or a file whose get_config() returns a model config.',
)
flags.DEFINE_string(
  'class_names', None, 'With --checkpoint: class names, a JSON list or one name per line.'
)
flags.DEFINE_multi_string('video', [], 'Video file(s); each is one stream of the batch.')
flags.DEFINE_float('gamma', None, 'Early-exit threshold on the max class probability (0..1).')
flags.DEFINE_integer('frame_stride', 1, 'Use every N-th frame of the videos.')
flags.DEFINE_float(
  'crop_fraction', EVAL_CROP_FRACTION, 'Centre-crop fraction of the short side (224/256 = eval).'
)
flags.DEFINE_string(
  'gif', None, "GIF of what was seen; default '<video name>.glimpses.gif' in the current dir."
)
flags.DEFINE_bool(
  'allow_upscale', False, "Accept videos whose frames are smaller than the model's input."
)
flags.DEFINE_enum(
  'compute_dtype',
  None,
  ['float32', 'bfloat16'],
  "Run in this dtype instead of the model config's (bfloat16: faster on CPUs with AMX).",
)
flags.DEFINE_bool(
  'int8_heads',
  False,
  "Keep Tc's and Tl's block weights in int8 (streaming and --export): faster steps on CPUs.",
)
flags.DEFINE_string('export', None, 'Write the exported streaming step to this directory.')
flags.DEFINE_list('export_platforms', list(DEFAULT_PLATFORMS), 'Platforms the export runs on.')


def read_class_names(path: str) -> tuple[str, ...]:
  """Class names from a JSON list or a text file with one name per line (TSM's category.txt)."""
  with open(path) as f:
    text = f.read()
  if text.lstrip().startswith('['):
    names = json.loads(text)
  else:
    names = [line.strip() for line in text.splitlines() if line.strip()]
  if not names or not all(isinstance(n, str) for n in names):
    raise ValueError(f'{path}: expected a JSON list of class names or one name per line')
  return tuple(names)


def load_model(
  *,
  workdir: str | None,
  checkpoint: str | None,
  model_config: ml_collections.ConfigDict | None,
  class_names_path: str | None = None,
  compute_dtype: str | None = None,
) -> tuple[dict[str, Any], ml_collections.ConfigDict, tuple[str, ...] | None]:
  """The student's variables, model config and class names, from a workdir or a checkpoint.

  Args:
    workdir: a training workdir (loaded by glitr_jax.weights.load_student).
    checkpoint: an official .pth/.npz file, used with `model_config` instead of a workdir.
    model_config: an experiment config (its `model` is used) or a model config.
    class_names_path: optional class-name file (overrides the workdir's).
    compute_dtype: run in this dtype ('float32' or 'bfloat16') instead of the model config's
      (the weights are the same).

  Returns:
    (variables {'params': ...}, model_config, class_names or None).
  """
  if (workdir is None) == (checkpoint is None):
    raise ValueError('give exactly one of --workdir or --checkpoint (with --model_config)')
  if workdir is not None:
    variables, config, class_names, step = weights.load_student(workdir)
    logging.info('Loaded the student of %s (step %s)', workdir, step)
  else:
    if model_config is None:
      raise ValueError(
        f'--checkpoint={checkpoint} needs --model_config (the model it was trained as)'
      )
    config = model_config.model if 'model' in model_config else model_config
    variables = convert.load_official(checkpoint, config)
    class_names = None
    logging.info('Loaded the official checkpoint %s', checkpoint)
  if compute_dtype:
    config = config.copy_and_resolve_references()
    config.compute_dtype = compute_dtype
    model_config_lib.validate(config)
  if class_names_path:
    class_names = read_class_names(class_names_path)
  if class_names is not None and len(class_names) != config.num_classes:
    raise ValueError(
      f'{len(class_names)} class names for model.num_classes={config.num_classes} '
      f'({class_names_path or workdir})'
    )
  return variables, config, None if class_names is None else tuple(class_names)


def gif_paths(videos: Sequence[str], gif: str | None) -> list[str]:
  """Each stream's GIF: --gif (suffixed _<i> for several videos), or <name>.glimpses.gif."""
  if gif:
    if len(videos) == 1:
      return [gif]
    stem, ext = os.path.splitext(gif)
    return [f'{stem}_{i}{ext or ".gif"}' for i in range(len(videos))]
  stems = [os.path.splitext(os.path.basename(v))[0] for v in videos]
  if len(set(stems)) < len(stems):
    stems = [f'{stem}_{i}' for i, stem in enumerate(stems)]
  return [stem + '.glimpses.gif' for stem in stems]


def check_frame_sizes(videos: Sequence[str], image_size: int, *, allow_upscale: bool) -> None:
  """Refuses videos whose short side is below the model's frame side (unless allowed).

  Raises:
    ValueError: naming each such video, its size and the model's.
  """
  small = []
  for path in videos:
    try:
      with av.open(path) as container:
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
    except (av.error.FFmpegError, OSError, IndexError):
      continue  # VideoFileCamera names what is wrong with the file
    if min(w, h) < image_size:
      small.append(f'{path}: {w}x{h}')
  if small and not allow_upscale:
    raise ValueError(
      f"frames smaller than the model's {image_size}x{image_size} input (they would be upscaled, "
      f'which the model never saw in training): {"; ".join(small)}. Pass --allow_upscale to run '
      'anyway.'
    )
  for video in small:
    logging.warning("Upscaling %s to the model's %d px", video, image_size)


def stream_videos(
  variables: dict[str, Any],
  model_config: ml_collections.ConfigDict,
  videos: Sequence[str],
  *,
  gamma: float | None = None,
  class_names: Sequence[str] | None = None,
  frame_stride: int = 1,
  crop_fraction: float = EVAL_CROP_FRACTION,
  gif: str | None = None,
  int8_heads: bool = False,
  print_fn: Callable[[str], None] = print,
) -> tuple[StreamResult, list[str]]:
  """Runs the agent over the videos (one stream each), printing every step; writes the GIFs.

  Returns:
    The StreamResult and the GIF paths written.
  """
  agent = GlimpseAgent(
    variables, model_config, batch_size=len(videos), gamma=gamma, int8_heads=int8_heads
  )
  g = agent.glimpse_pixels
  name = lambda label: class_names[label] if class_names is not None else f'class {label}'
  tags = [os.path.basename(v) for v in videos]
  if len(set(tags)) < len(tags):
    tags = [f'{i}:{tag}' for i, tag in enumerate(tags)]

  def on_step(t, prediction, locations_b2, _, active_b):
    for b, tag in enumerate(tags):
      if not active_b[b]:
        continue
      lx, ly = locations_b2[b]
      print_fn(
        f'[{tag}] t={t + 1} glimpse at ({lx:+.3f}, {ly:+.3f}): read {g * g} px '
        f'(total {camera.pixels_read_per_stream[b]}) -> {name(int(prediction.label[b]))!r} '
        f'p={float(prediction.confidence[b]):.3f}' + (' [done]' if prediction.done[b] else '')
      )

  with VideoFileCamera(
    videos, model_config.image_size, frame_stride=frame_stride, crop_fraction=crop_fraction
  ) as camera:
    result = run_stream(agent, camera, on_step=on_step)
  if not result.num_steps:
    raise ValueError(f'no frame could be read from {list(videos)}')
  full = model_config.image_size**2
  for b, tag in enumerate(tags):
    taken = int(result.glimpses_taken[b])
    read = int(result.pixels_read[:, b].sum())
    print_fn(
      f'[{tag}] {"done" if result.final.done[b] else result.end} after {taken} glimpse(s): '
      f'{name(int(result.final.label[b]))!r} p={float(result.final.confidence[b]):.3f}; '
      f'{read} pixels read = {100 * read / (taken * full):.1f}% of {taken} full '
      f'{model_config.image_size}x{model_config.image_size} frames'
    )
  paths = gif_paths(videos, gif)
  frame_hw = (model_config.image_size, model_config.image_size)
  for b, path in enumerate(paths):
    render.write_gif(render.glimpse_view(result, b, frame_hw, class_names), path)
    print_fn(f'[{tags[b]}] wrote {path}')
  return result, paths


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS.video and not FLAGS.export:
    raise ValueError('nothing to do: give --video=FILE (repeatable) and/or --export=DIR')
  variables, model_config, class_names = load_model(
    workdir=FLAGS.workdir,
    checkpoint=FLAGS.checkpoint,
    model_config=FLAGS.model_config,
    class_names_path=FLAGS.class_names,
    compute_dtype=FLAGS.compute_dtype,
  )
  if FLAGS.export:
    meta = export_agent(
      variables,
      model_config,
      FLAGS.export,
      class_names=class_names,
      platforms=FLAGS.export_platforms or None,
      int8_heads=FLAGS.int8_heads,
    )
    print(f'exported the streaming step ({", ".join(meta["platforms"])}) to {FLAGS.export}')
  if FLAGS.video:
    check_frame_sizes(FLAGS.video, model_config.image_size, allow_upscale=FLAGS.allow_upscale)
    stream_videos(
      variables,
      model_config,
      FLAGS.video,
      gamma=FLAGS.gamma,
      class_names=class_names,
      frame_stride=FLAGS.frame_stride,
      crop_fraction=FLAGS.crop_fraction,
      gif=FLAGS.gif,
      int8_heads=FLAGS.int8_heads,
    )
