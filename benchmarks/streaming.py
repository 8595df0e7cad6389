r"""Streaming latency: one glimpse -> prediction + next location, per step, after compilation.

Builds a GlimpseAgent with random weights of the requested sizes (default: the paper's ViT-S/16
student at 224 px, 96-px glimpses, T = 16, one stream), then times many steps and prints ONE JSON
object:
  step_ms        agent.step until its outputs are ready on the device (median, p99, mean)
  loop_ms        a whole closed-loop step with a simulated camera: crop the glimpse at the location
                 (glitr_jax.glimpse.extract on an in-memory frame), agent.step, fetch next_location
  reset_ms       starting new streams (every num_frames steps; not inside step_ms)
  exported_step_ms  the same step through the jax.export artifact (--exported)
  pixels_read_per_step  g * g per stream, and the fraction of a full frame it is.

  python benchmarks/streaming.py                                  # ViT-S/16, 96 px, B = 1, T = 16
  python benchmarks/streaming.py --batch_size=8 --model.glimpse_patches=8 --exported
  python benchmarks/streaming.py --model.depth=2 --model.hidden_size=64 --model.num_heads=2 \
      --model.image_size=64 --model.patch_size=8 --model.glimpse_patches=4 \
      --model.temporal_hidden_size=64 --model.temporal_heads=2 --steps=50
"""

import json
import os
import sys
import tempfile
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import jax  # noqa: E402
import machine  # noqa: E402  (benchmarks/machine.py, beside this script)

from glitr_jax import export_runtime, inference  # noqa: E402
from glitr_jax import streaming as streaming_lib  # noqa: E402
from glitr_jax.models import config as model_config_lib  # noqa: E402
from glitr_jax.streaming import agent as agent_lib  # noqa: E402

_MODEL = config_flags.DEFINE_config_dict(
  'model',
  model_config_lib.get_model_config(drop_path_rate=0.0),
  'The model (glitr_jax.models.config): the paper ViT-S/16 student by default; --model.x=y.',
)
_BATCH = flags.DEFINE_integer('batch_size', 1, 'Independent streams B.')
_STEPS = flags.DEFINE_integer('steps', 320, 'Timed steps (per measurement).')
_WARMUP = flags.DEFINE_integer('warmup_steps', 8, 'Untimed steps after compilation.')
_EXPORTED = flags.DEFINE_bool('exported', False, 'Also time the jax.export artifact.')
_INT8_HEADS = flags.DEFINE_bool('int8_heads', False, "Tc's and Tl's block weights in int8.")


def _stats(seconds: list[float]) -> dict[str, float]:
  ms = 1e3 * np.asarray(seconds)
  return {
    'median': round(float(np.median(ms)), 4),
    'p99': round(float(np.percentile(ms, 99)), 4),
    'mean': round(float(ms.mean()), 4),
  }


def _time_steps(agent, glimpses, steps: int, warmup: int) -> tuple[list[float], list[float]]:
  """Per-step times of agent.step (outputs ready), resetting every num_frames steps."""
  step_s, reset_s = [], []
  agent.reset()
  for i in range(warmup + steps):
    if agent.steps_taken == agent.num_frames:
      start = time.perf_counter()
      agent.reset()
      reset_s.append(time.perf_counter() - start)
    start = time.perf_counter()
    jax.block_until_ready(agent.step(glimpses))
    if i >= warmup:
      step_s.append(time.perf_counter() - start)
  return step_s, reset_s


def _time_loop(agent, frames_bhwc: np.ndarray, steps: int, warmup: int) -> list[float]:
  """Per-step times of the closed loop: camera crop -> step -> next location on the host."""
  loop_s = []
  clip = np.repeat(frames_bhwc[:, None], agent.num_frames, axis=1)
  camera = streaming_lib.ArrayCamera(clip)
  location = agent.first_location()
  agent.reset()
  for i in range(warmup + steps):
    if agent.steps_taken == agent.num_frames:
      agent.reset()
      camera = streaming_lib.ArrayCamera(clip)
      location = agent.first_location()
    start = time.perf_counter()
    pixels = camera.read_glimpse(location, agent.glimpse_pixels)
    prediction = agent.step(pixels)
    location = np.asarray(prediction.next_location)
    if i >= warmup:
      loop_s.append(time.perf_counter() - start)
  return loop_s


def main(argv):
  del argv
  model_config = _MODEL.value
  model_config_lib.validate(model_config)
  variables = {'params': machine.random_params(inference.model_for(model_config))}
  b, s = _BATCH.value, model_config.image_size
  rng = np.random.default_rng(1)
  agent = streaming_lib.GlimpseAgent(
    variables, model_config, batch_size=b, int8_heads=_INT8_HEADS.value
  )
  g = agent.glimpse_pixels
  glimpses = rng.standard_normal((b, g, g, 3)).astype(np.float32)

  start = time.perf_counter()
  jax.block_until_ready(agent.step(glimpses))
  compile_s = time.perf_counter() - start
  step_s, reset_s = _time_steps(agent, glimpses, _STEPS.value, _WARMUP.value)
  frames = rng.standard_normal((b, s, s, 3)).astype(np.float32)
  loop_s = _time_loop(agent, frames, _STEPS.value, _WARMUP.value)

  device = jax.devices()[0]
  result = {
    'benchmark': 'streaming',
    'device': f'{device.platform}:{device.device_kind}',
    'jax_version': jax.__version__,
    'model': {k: model_config[k] for k in model_config_lib.FIELDS if k != 'drop_path_rate'},
    'compute_dtype': model_config.compute_dtype,
    'int8_heads': _INT8_HEADS.value,
    'num_params': int(sum(x.size for x in jax.tree.leaves(variables))),
    'weight_bytes': int(
      sum(
        x.nbytes
        for x in jax.tree.leaves(
          agent_lib.stored_params(variables['params'], model_config, _INT8_HEADS.value)
        )
      )
    ),
    'batch_size': b,
    'glimpse_pixels': g,
    'timed_steps': len(step_s),
    'compile_and_first_step_s': round(compile_s, 3),
    'step_ms': _stats(step_s),
    'loop_ms': _stats(loop_s),
    'reset_ms': _stats(reset_s) if reset_s else None,
    'pixels_read_per_step': g * g,
    'pixels_read_per_step_all_streams': b * g * g,
    'full_frame_pixels': s * s,
    'fraction_of_frame_read': round(g * g / (s * s), 4),
  }
  if _EXPORTED.value:
    with tempfile.TemporaryDirectory() as directory:
      streaming_lib.export_agent(
        variables, model_config, directory, platforms=None, int8_heads=_INT8_HEADS.value
      )
      exported = export_runtime.load(directory, batch_size=b)
      jax.block_until_ready(exported.step(glimpses))
      exported_s, _ = _time_steps(exported, glimpses, _STEPS.value, _WARMUP.value)
    result['exported_step_ms'] = _stats(exported_s)
  result.update(machine.machine_info())
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
