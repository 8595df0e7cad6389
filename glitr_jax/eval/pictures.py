"""Pictures of an evaluation: accuracy curves, early exit, where GliTr looks, what it saw.

Matplotlib's object-oriented API (Figure + the Agg canvas, no pyplot state, no display needed)
for plots and PNG grids, PIL for animated GIFs. Frames arrive ImageNet-normalised, as the model
sees them, and are un-normalised for display.
"""

import math
import os
import textwrap
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colors, patches
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from glitr_jax import glimpse as glimpse_lib
from glitr_jax import pixels
from glitr_jax.eval import online
from glitr_jax.eval import strategies as strategies_lib

STYLE = {  # strategy -> (label, colour, line style)
  strategies_lib.GLITR: ('GliTr (learned)', 'tab:red', '-'),
  strategies_lib.TEACHER: ('Teacher locations', 'tab:purple', '--'),
  strategies_lib.CENTER: ('Center', 'tab:green', '-'),
  strategies_lib.BOTTOM_LEFT: ('Bottom left', 'tab:brown', '-'),
  strategies_lib.UNIFORM: ('Uniform random', 'tab:blue', '-'),
  strategies_lib.GAUSSIAN: ('Gaussian random', 'tab:orange', '-'),
  strategies_lib.TEACHER_FULL_FRAMES: ('Teacher, full frames', 'black', ':'),
}
COLUMNS = 8  # frames per row in example grids and histogram panels
CORRECT, WRONG = '#1a9850', '#d73027'


def glimpse_only(
  frames_thw3: np.ndarray, locations_t2: np.ndarray, glimpse_pixels: int
) -> np.ndarray:
  """What the model saw: each frame's pixels under its glimpse, zeros (black) elsewhere.

  Args:
    frames_thw3: (T, H, W, 3) uint8 frames.
    locations_t2: (T, 2) glimpse locations.
    glimpse_pixels: glimpse side g.

  Returns:
    (T, H, W, 3) uint8.
  """
  h, w = frames_thw3.shape[1:3]
  seen_thw = np.asarray(glimpse_lib.footprint(np.asarray(locations_t2), glimpse_pixels, (h, w)))
  return np.where(seen_thw[..., None], frames_thw3, 0).astype(np.uint8)


def _save(fig: Figure, path: str) -> str:
  FigureCanvasAgg(fig)
  fig.savefig(path, dpi=fig.dpi, bbox_inches='tight')
  return path


def _class_name(class_names: Sequence[str] | None, index: int) -> str:
  if class_names is not None and 0 <= index < len(class_names):
    return str(class_names[index])
  return f'class {index}'


def plot_accuracy(
  accuracy_per_t: Mapping[str, Sequence[float]],
  accuracy_std_per_t: Mapping[str, Sequence[float]],
  path: str,
  *,
  num_seeds: int = 1,
  title: str = 'Online accuracy after every glimpse',
) -> str:
  """Accuracy vs t for every strategy (paper Fig. 5); random strategies with +-1 std bands."""
  fig = Figure(figsize=(8.0, 4.5), dpi=110)
  ax = fig.add_subplot()
  for name in [n for n in STYLE if n in accuracy_per_t] + sorted(set(accuracy_per_t) - set(STYLE)):
    label, colour, style = STYLE.get(name, (name, None, '-'))
    acc = 100.0 * np.asarray(accuracy_per_t[name])
    t = np.arange(1, len(acc) + 1)
    width = 2.4 if name == strategies_lib.GLITR else 1.5
    ax.plot(t, acc, style, color=colour, marker='o', ms=3, lw=width, label=label)
    if name in accuracy_std_per_t:
      std = 100.0 * np.asarray(accuracy_std_per_t[name])
      ax.fill_between(t, acc - std, acc + std, color=colour, alpha=0.2, lw=0)
  ax.set_xlabel('t (glimpses observed)')
  ax.set_ylabel('accuracy (%)')
  band = f'; bands: +-1 std over {num_seeds} seeds' if accuracy_std_per_t else ''
  ax.set_title(f'{title}{band}', fontsize=10)
  ax.grid(alpha=0.3)
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.legend(fontsize=8, loc='center left', bbox_to_anchor=(1.01, 0.5))
  return _save(fig, path)


def plot_early_exit(
  early_exit: Sequence[Mapping[str, float]],
  path: str,
  glitr_accuracy_per_t: Sequence[float] | None = None,
) -> str:
  """Accuracy vs mean glimpses per video over the gamma sweep (paper Fig. 9)."""
  fig = Figure(figsize=(6.0, 4.5), dpi=110)
  ax = fig.add_subplot()
  if glitr_accuracy_per_t is not None:
    acc = 100.0 * np.asarray(glitr_accuracy_per_t)
    ax.plot(np.arange(1, len(acc) + 1), acc, ':', color='gray', label='no early exit: stop at t')
  xs = [e['mean_glimpses'] for e in early_exit]
  ys = [100.0 * e['accuracy'] for e in early_exit]
  ax.plot(xs, ys, '-o', color='tab:red', label='early exit at max prob > gamma')
  # Thresholds that give the same point share one label ('0.9-1.01').
  groups: dict[tuple[float, float], list[float]] = {}
  for e, x, y in zip(early_exit, xs, ys, strict=True):
    groups.setdefault((round(x, 6), round(y, 6)), []).append(float(e['gamma']))
  for (x, y), gs in groups.items():
    text = f'{gs[0]:g}' if len(gs) == 1 else f'{min(gs):g}-{max(gs):g}'
    ax.annotate(text, (x, y), textcoords='offset points', xytext=(4, -10), fontsize=7)
  ax.set_xlabel('mean glimpses per video')
  ax.set_ylabel('accuracy (%)')
  ax.set_title('GliTr with early exit (labels: gamma)', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc='best')
  return _save(fig, path)


def plot_location_histograms(histogram_tbb: np.ndarray, path: str, *, frame_hw=None) -> str:
  """Where GliTr looks at each t: a heatmap of glimpse centres over the frame (paper Fig. 6).

  Args:
    histogram_tbb: (T, bins, bins) counts (rows ly from the top, columns lx).
    path: the PNG to write.
    frame_hw: (H, W) for the axis labels in pixels (default: normalised coordinates).
  """
  t = histogram_tbb.shape[0]
  cols = min(t, COLUMNS)
  rows = math.ceil(t / cols)
  fig = Figure(figsize=(1.9 * cols + 0.8, 2.0 * rows + 0.5), dpi=110)
  fractions = histogram_tbb / np.maximum(histogram_tbb.sum(axis=(1, 2), keepdims=True), 1)
  top = max(float(fractions.max()), 1e-9)
  h, w = frame_hw if frame_hw is not None else (2.0, 2.0)
  extent = (0, w, h, 0) if frame_hw is not None else (-1, 1, 1, -1)
  image = None
  for i in range(t):
    ax = fig.add_subplot(rows, cols, i + 1)
    # Square-root colour scale: l_1 (one bin) would otherwise wash out the later, spread-out t.
    norm = colors.PowerNorm(gamma=0.5, vmin=0.0, vmax=top)
    image = ax.imshow(fractions[i], cmap='magma', norm=norm, extent=extent)
    ax.set_title(f't={i + 1}', fontsize=9)
    bins = histogram_tbb.shape[-1]
    edges_x = np.linspace(extent[0], extent[1], bins + 1)
    edges_y = np.linspace(extent[3], extent[2], bins + 1)
    ax.set_xticks(edges_x[[0, -1]])
    ax.set_yticks(edges_y[[0, -1]])
    ax.tick_params(labelsize=6, length=2)
    for e in edges_x[1:-1]:
      ax.axvline(e, color='white', lw=0.3, alpha=0.25)
    for e in edges_y[1:-1]:
      ax.axhline(e, color='white', lw=0.3, alpha=0.25)
  fig.suptitle(
    'Glimpse centres of GliTr per t (fraction of videos; frame coordinates)', fontsize=10
  )
  fig.colorbar(image, ax=fig.axes, shrink=0.8, label='fraction of videos (sqrt scale)')
  return _save(fig, path)


def _caption(example: online.Example, t: int, class_names) -> tuple[str, bool]:
  pred = int(example.predictions[t])
  text = f'{_class_name(class_names, pred)} ({example.confidence[t]:.2f})'
  return text, pred == example.label


def plot_example(
  example: online.Example,
  path: str,
  *,
  glimpse_pixels: int,
  class_names: Sequence[str] | None = None,
) -> str:
  """A video as GliTr saw it: frames with the glimpse box above, the glimpse-only view below.

  Each column is one t, titled with the prediction after that glimpse (green when right, red
  when wrong) and its confidence; the suptitle names the true class.
  """
  frames = pixels.denormalize(example.frames)
  seen = glimpse_only(frames, example.locations, glimpse_pixels)
  t, h, w = frames.shape[:3]
  boxes = np.asarray(glimpse_lib.box(np.asarray(example.locations), glimpse_pixels, (h, w)))
  cols = min(t, COLUMNS)
  pairs = math.ceil(t / cols)
  fig = Figure(figsize=(1.9 * cols, 4.5 * pairs + 0.4), dpi=110, layout='constrained')
  fig.get_layout_engine().set(h_pad=0.02, w_pad=0.02, hspace=0.0, wspace=0.0)
  grid = fig.add_gridspec(2 * pairs, cols)
  for i in range(t):
    r, c = 2 * (i // cols), i % cols
    top = fig.add_subplot(grid[r, c])
    top.imshow(frames[i], interpolation='nearest')
    x0, y0, x1, y1 = boxes[i]
    top.add_patch(
      patches.Rectangle(
        (x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, ec='yellow', lw=1.6
      )
    )
    top.set_xlim(-0.5, w - 0.5)
    top.set_ylim(h - 0.5, -0.5)
    text, right = _caption(example, i, class_names)
    wrapped = '\n'.join(textwrap.wrap(text, 22)[:3])
    top.set_title(f't={i + 1}\n{wrapped}', fontsize=7, color=CORRECT if right else WRONG)
    bottom = fig.add_subplot(grid[r + 1, c])
    bottom.imshow(seen[i], interpolation='nearest')
    for ax in (top, bottom):
      ax.set_xticks([])
      ax.set_yticks([])
  name = _class_name(class_names, example.label)
  vid = f'video {example.video_id}' if example.video_id else f'example {example.index}'
  fig.suptitle(
    f'{vid} - true: {name}\ntop: frames with the glimpse (reference only); bottom: what GliTr saw',
    fontsize=9,
  )
  return _save(fig, path)


def _font(size: int):
  try:
    return ImageFont.load_default(size=size)
  except (OSError, TypeError):  # Pillow built without FreeType: the fixed bitmap font.
    return ImageFont.load_default()


def example_gif(
  example: online.Example,
  path: str,
  *,
  glimpse_pixels: int,
  class_names: Sequence[str] | None = None,
  display_size: int = 256,
  frame_ms: int = 600,
) -> str:
  """An animated GIF of the same: frame with the glimpse box | glimpse-only view, and a caption.

  Args:
    example: the video.
    path: the .gif to write.
    glimpse_pixels: glimpse side g.
    class_names: names of the classes (default 'class i').
    display_size: frames are scaled up (nearest) so that their longer side is at least this.
    frame_ms: display time of each t.
  """
  frames = pixels.denormalize(example.frames)
  seen = glimpse_only(frames, example.locations, glimpse_pixels)
  t, h, w = frames.shape[:3]
  scale = max(1, math.ceil(display_size / max(h, w)))
  boxes = np.asarray(glimpse_lib.box(np.asarray(example.locations), glimpse_pixels, (h, w)))
  font = _font(13)
  pad, caption_h = 6, 58
  width, height = 2 * w * scale + 3 * pad, h * scale + 2 * pad + caption_h
  truth = _class_name(class_names, example.label)
  images = []
  for i in range(t):
    canvas = Image.new('RGB', (width, height), (24, 24, 24))
    left = Image.fromarray(frames[i]).resize((w * scale, h * scale), Image.NEAREST)
    right = Image.fromarray(seen[i]).resize((w * scale, h * scale), Image.NEAREST)
    canvas.paste(left, (pad, pad))
    canvas.paste(right, (2 * pad + w * scale, pad))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = boxes[i]
    # Pixel p covers [p, p + 1) * scale: the box spans the edges of its first and last samples.
    edges = [pad + x0 * scale, pad + y0 * scale, pad + (x1 + 1) * scale, pad + (y1 + 1) * scale]
    draw.rectangle(edges, outline=(255, 220, 0), width=2)
    text, right_pred = _caption(example, i, class_names)
    y = h * scale + 2 * pad
    draw.text((pad, y), f't={i + 1}/{t}  frame | what GliTr saw', fill=(220, 220, 220), font=font)
    colour = (80, 200, 120) if right_pred else (240, 90, 80)
    draw.text((pad, y + 18), f'prediction: {text}', fill=colour, font=font)
    draw.text((pad, y + 36), f'true: {truth}', fill=(220, 220, 220), font=font)
    images.append(canvas.convert('P', palette=Image.ADAPTIVE, colors=255))
  images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
  return path


def write_example_pictures(
  examples: Sequence[online.Example],
  directory: str,
  *,
  glimpse_pixels: int,
  class_names: Sequence[str] | None = None,
) -> list[dict[str, str]]:
  """PNG grid + GIF for each example under `directory`; returns their file names per example."""
  os.makedirs(directory, exist_ok=True)
  out = []
  for k, example in enumerate(examples):
    stem = f'example_{k:02d}'
    png = plot_example(
      example,
      os.path.join(directory, f'{stem}.png'),
      glimpse_pixels=glimpse_pixels,
      class_names=class_names,
    )
    gif = example_gif(
      example,
      os.path.join(directory, f'{stem}.gif'),
      glimpse_pixels=glimpse_pixels,
      class_names=class_names,
    )
    out.append({'png': os.path.basename(png), 'gif': os.path.basename(gif)})
  return out
