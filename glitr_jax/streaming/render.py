"""Pictures of what a stream saw: only the glimpses, pasted where they were taken (PIL)."""

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from glitr_jax import glimpse, pixels
from glitr_jax.streaming.runner import StreamResult

# Earlier glimpses stay on the canvas, dimmed, so the picture shows the stream's memory.
_PAST_BRIGHTNESS = 0.35
_BOX_LIVE = (255, 64, 64)
_BOX_DONE = (64, 255, 64)
_CAPTION_HEIGHT = 14


def glimpse_view(
  result: StreamResult,
  stream: int,
  frame_hw: tuple[int, int],
  class_names: Sequence[str] | None = None,
  min_side: int = 256,
) -> list[Image.Image]:
  """One picture per step of what stream `stream` has seen; nothing else of the frame is shown.

  Args:
    result: run_stream's result (with its glimpses kept).
    stream: which stream b.
    frame_hw: (H, W) of the model's frames.
    class_names: names of the classes for the caption (indices when None).
    min_side: the frame is upscaled (nearest) to at least this many pixels.

  Returns:
    RGB PIL images: black canvas, earlier glimpses dimmed, the current one bright with a box (red
    while live, green at the exit step), and a caption with the prediction.
  """
  if result.glimpses is None:
    raise ValueError('the StreamResult kept no glimpses (run_stream(keep_glimpses=True))')
  h, w = frame_hw
  canvas = np.zeros((h, w, 3), np.float32)
  scale = max(1, -(-min_side // max(h, w)))
  images = []
  for t in range(result.num_steps):
    if not result.active[t, stream]:
      break
    loc = result.locations[t, stream][None]
    g = result.glimpses.shape[2]
    x0, y0, x1, y1 = np.asarray(glimpse.box(loc, g, frame_hw))[0]
    # A glimpse's samples sit ~1 px apart from x0 to x1: paste it resized to that span.
    span_w, span_h = int(round(x1 - x0)) + 1, int(round(y1 - y0)) + 1
    patch = Image.fromarray(pixels.denormalize(result.glimpses[t, stream])).resize(
      (span_w, span_h), Image.NEAREST
    )
    layer = Image.new('RGB', (w, h))
    mask = Image.new('L', (w, h))
    layer.paste(patch, (int(round(x0)), int(round(y0))))
    mask.paste(
      255, (int(round(x0)), int(round(y0)), int(round(x0)) + span_w, int(round(y0)) + span_h)
    )
    inside = np.asarray(mask) > 0
    shown = canvas * _PAST_BRIGHTNESS
    shown[inside] = np.asarray(layer, np.float32)[inside]
    canvas[inside] = shown[inside]
    frame = Image.fromarray(shown.astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
    prediction = result.predictions[t]
    done = bool(prediction.done[stream])
    draw = ImageDraw.Draw(frame)
    draw.rectangle(
      [x0 * scale, y0 * scale, (x1 + 1) * scale - 1, (y1 + 1) * scale - 1],
      outline=_BOX_DONE if done else _BOX_LIVE,
      width=max(1, scale // 2),
    )
    label = int(prediction.label[stream])
    name = class_names[label] if class_names is not None else f'class {label}'
    out = Image.new('RGB', (frame.width, frame.height + _CAPTION_HEIGHT))
    out.paste(frame, (0, 0))
    caption = f't={t + 1}: {name} p={float(prediction.confidence[stream]):.2f}'
    ImageDraw.Draw(out).text((2, frame.height + 1), caption + (' (done)' if done else ''))
    images.append(out)
  return images


def write_gif(images: Sequence[Image.Image], path: str, frame_ms: int = 500) -> None:
  """Writes the pictures as a looping GIF."""
  if not images:
    raise ValueError(f'{path}: no pictures to write (the stream took no glimpse)')
  images[0].save(
    path, save_all=True, append_images=list(images[1:]), duration=frame_ms, loop=0, optimize=False
  )
