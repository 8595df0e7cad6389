"""Streaming: agent steps == student_forward, glimpse-only cameras, early exit, the export.

Every agent here serves B = 2 streams of the tiny model, so one compiled agent step (and one
compiled student_forward for (2, 4)-frame clips) is shared by all tests.
"""

import json
import os
import subprocess
import sys
import textwrap

import av
import jax
import numpy as np
import pytest
from PIL import Image
from tiny import tiny_model_config

from glitr_jax import convert, export_runtime, inference, streaming
from glitr_jax.streaming import camera as camera_lib
from glitr_jax.streaming import cli

CONFIG = tiny_model_config()
MODEL = inference.model_for(CONFIG)
B, T, S = 2, CONFIG.num_frames, CONFIG.image_size
G = MODEL.glimpse_pixels
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_params(seed: int = 0, tl_head_std: float = 0.5):
  """Random parameters of the tiny model without compiling its initialiser (seconds on CPU).

  Tl's head is large enough for the glimpses to wander, as a trained policy's do.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(MODEL.init, jax.random.key(0))

  def draw(path, leaf):
    name = '/'.join(k.key for k in path)
    n = rng.standard_normal(leaf.shape).astype(np.float32)
    if name.endswith('scale'):
      return 1.0 + 0.1 * n
    if name.endswith('bias'):
      return 0.05 * n
    if name == 'temploc_head/head/kernel':
      return tl_head_std * n
    if name.endswith('kernel'):
      return n / np.float32(np.sqrt(np.prod(leaf.shape[:-1])))
    return 0.3 * n  # embeddings, tokens, init_loc (non-zero: l_1 is not simply the centre)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def smooth_frames(seed: int, shape) -> np.ndarray:
  """Low-frequency normalised frames: a closed loop on white noise amplifies float rounding."""
  b, t, h, w, c = shape
  y, x = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing='ij')
  coef = np.random.default_rng(seed).standard_normal((b, t, 1, 1, c, 3))
  frames = (
    coef[..., 0] * np.sin(3 * x + 1)[..., None]
    + coef[..., 1] * np.cos(2 * y - 0.5)[..., None]
    + coef[..., 2] * (x * y)[..., None]
  )
  return frames.astype(np.float32)


PARAMS = random_params()
VARIABLES = {'params': PARAMS}
FRAMES = smooth_frames(1, (B, T, S, S, 3))


def stacked(predictions, field: str) -> np.ndarray:
  """(B, steps, ...) of one Prediction field."""
  return np.stack([np.asarray(getattr(p, field)) for p in predictions], axis=1)


def assert_matches_student_forward(result, frames, steps=T, variables=VARIABLES):
  """The first `steps` predictions and locations equal student_forward on `frames` (<= 1e-5)."""
  ref = inference.student_forward(variables, CONFIG, frames)
  locations = np.asarray(ref['locations'])[:, :steps]
  np.testing.assert_allclose(result.locations.transpose(1, 0, 2), locations, atol=1e-5)
  probs = stacked(result.predictions, 'probs')
  np.testing.assert_allclose(probs, jax.nn.softmax(ref['logits'])[:, :steps], atol=1e-5)
  # Log-probabilities are the logits up to one constant per step: the logits agree too.
  log_ref = np.asarray(jax.nn.log_softmax(ref['logits']))[:, :steps]
  np.testing.assert_allclose(np.log(probs), log_ref, atol=1e-5)
  np.testing.assert_array_equal(stacked(result.predictions, 'label'), log_ref.argmax(-1))
  np.testing.assert_allclose(stacked(result.predictions, 'confidence'), probs.max(-1), atol=1e-7)
  next_locations = stacked(result.predictions, 'next_location')[:, :-1]
  np.testing.assert_allclose(next_locations, np.asarray(ref['locations'])[:, 1:steps], atol=1e-5)
  return ref


def test_agent_stepped_through_a_video_equals_student_forward():
  camera = streaming.ArrayCamera(FRAMES)
  result = streaming.run_stream(streaming.GlimpseAgent(VARIABLES, CONFIG, batch_size=B), camera)
  assert result.end == 'done' and result.num_steps == T
  ref = assert_matches_student_forward(result, FRAMES)
  # The policy moves: wrong locations would not go unnoticed.
  assert np.abs(np.diff(np.asarray(ref['locations']), axis=1)).max() > 0.05
  np.testing.assert_allclose(
    result.locations[0], streaming.GlimpseAgent(VARIABLES, CONFIG, B).first_location()
  )
  # Without early exit every stream runs num_frames steps and is done exactly at the last one.
  np.testing.assert_array_equal(stacked(result.predictions, 'done'), [[0, 0, 0, 1]] * B)


def test_the_camera_hands_over_only_glimpses_and_counts_them():
  agent = streaming.GlimpseAgent(VARIABLES, CONFIG, batch_size=B)
  received = []
  step = agent.step
  agent.step = lambda pixels: received.append(np.shape(pixels)) or step(pixels)
  camera = streaming.ArrayCamera(FRAMES)
  result = streaming.run_stream(agent, camera)
  assert received == [(B, G, G, 3)] * T
  assert camera.pixels_read == T * B * G * G == result.pixels_read.sum()
  np.testing.assert_array_equal(camera.pixels_read_per_stream, [T * G * G] * B)
  # What was handed over is the official crop at the requested location.
  crop = camera_lib._extract(FRAMES[:, 1], result.locations[1], G)
  np.testing.assert_allclose(result.glimpses[1], crop, atol=1e-6)

  # Masked-off (done) streams advance in time but get zeros and count nothing.
  camera = streaming.ArrayCamera(FRAMES)
  pixels = camera.read_glimpse(np.zeros((B, 2)), G, active=np.array([True, False]))
  assert pixels.shape == (B, G, G, 3) and pixels[0].any() and not pixels[1].any()
  assert camera.pixels_read == G * G
  with pytest.raises(ValueError, match=r'locations has shape \(3, 2\)'):
    camera.read_glimpse(np.zeros((3, 2)), G)

  # The agent's API takes nothing but a batch of g x g float glimpses.
  agent.reset()
  with pytest.raises(ValueError, match='full 32x32 frame'):
    agent.step(FRAMES[:, 0])
  with pytest.raises(ValueError, match=r'expected \(B, g, g, 3\) = \(2, 16, 16, 3\)'):
    agent.step(np.zeros((1, G, G, 3), np.float32))
  with pytest.raises(ValueError, match='dtype uint8'):
    agent.step(np.zeros((B, G, G, 3), np.uint8))
  assert agent.steps_taken == 0


def test_stepping_past_num_frames_is_an_error_and_reset_restarts_identically():
  agent = streaming.GlimpseAgent(VARIABLES, CONFIG, batch_size=B)
  glimpses = np.random.default_rng(3).standard_normal((T, B, G, G, 3)).astype(np.float32)
  first = [agent.step(glimpses[t]) for t in range(T)]
  assert agent.done.all()
  with pytest.raises(streaming.NumFramesExceededError, match='num_frames=4'):
    agent.step(glimpses[0])
  assert agent.steps_taken == T
  agent.reset()
  assert agent.steps_taken == 0 and not agent.done.any()
  again = [agent.step(glimpses[t]) for t in range(T)]
  for field in streaming.Prediction._fields:
    np.testing.assert_array_equal(stacked(again, field), stacked(first, field), err_msg=field)
  # The raw step refuses silently reusing the last temporal position: its outputs turn NaN.
  state, _ = agent._init_fn(agent._params, agent._stream_ids)
  state = state.replace(step=state.step + T)
  _, prediction = agent._step_fn(agent._params, state, jax.numpy.asarray(glimpses[0]), agent._gamma)
  assert np.isnan(np.asarray(prediction.probs)).all() and np.asarray(prediction.done).all()


def test_one_compiled_step_with_donated_state():
  zeros = np.zeros((B, G, G, 3), np.float32)
  streaming.GlimpseAgent(VARIABLES, CONFIG, batch_size=B).step(zeros)  # compiled here at most
  other = {'params': random_params(seed=5)}
  events = []
  listener = lambda event, duration, **kwargs: events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    agent = streaming.GlimpseAgent(other, CONFIG, batch_size=B, gamma=0.5)
    before = jax.tree.leaves(agent._state)
    agent.step(zeros)
    agent.reset()
    agent.step(zeros)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert all(leaf.is_deleted() for leaf in before), 'the state buffers are donated'
  # New weights, another gamma, a reset: nothing is traced or compiled again.
  assert not [e for e in events if e.startswith('/jax/core/compile/')], events


def exit_model(scale: float = 8.0, alphas=(0.0, 0.5, 1.0, 2.0)):
  """Parameters whose class-0 confidence rises over time, the same for every stream and video.

  Tc's blocks are made identities (zero attention and MLP outputs) and its input projection zero,
  so position t reaches the final LayerNorm as tmp_embed[t] = u + alpha_t * w, with u, w
  orthogonal zero-mean +-1 patterns: LN gives (u + alpha_t w) / sqrt(1 + alpha_t^2), and a head
  reading w gives the class-0 logit z_t = scale * alpha_t / sqrt(1 + alpha_t^2), others 0.

  Returns:
    (variables, expected confidences (T,)).
  """
  params = jax.tree.map(np.array, PARAMS)
  tc = params['temporal_head']
  e = CONFIG.temporal_hidden_size
  for name, block in tc.items():
    if name.startswith('blocks_'):
      for layer in (block['attn']['proj'], block['mlp']['fc2']):
        layer['kernel'][:] = 0.0
        layer['bias'][:] = 0.0
  tc['embed_proj']['kernel'][:] = 0.0
  tc['embed_proj']['bias'][:] = 0.0
  tc['embed_norm']['bias'][:] = 0.0
  tc['norm']['scale'][:] = 1.0
  tc['norm']['bias'][:] = 0.0
  u = np.resize([1.0, -1.0], e)
  w = np.resize([1.0, 1.0, -1.0, -1.0], e)
  tc['tmp_embed'][0] = u[None] + np.asarray(alphas)[:, None] * w[None]
  tc['head']['kernel'][:] = 0.0
  tc['head']['kernel'][:, 0] = scale * w / e
  tc['head']['bias'][:] = 0.0
  z = scale * np.asarray(alphas) / np.sqrt(1.0 + np.asarray(alphas) ** 2)
  confidence = np.exp(z) / (np.exp(z) + CONFIG.num_classes - 1)
  return {'params': params}, confidence


def test_early_exit_stops_reading_once_confident():
  variables, expected = exit_model()
  gamma = 0.9
  exit_step = int(np.argmax(expected > gamma))  # the third glimpse (index 2)
  assert exit_step == 2 and expected[exit_step - 1] < gamma < expected[exit_step]
  agent = streaming.GlimpseAgent(variables, CONFIG, batch_size=B, gamma=gamma)
  camera = streaming.ArrayCamera(FRAMES)
  result = streaming.run_stream(agent, camera)
  assert result.end == 'done' and result.num_steps == exit_step + 1
  assert camera.reads == exit_step + 1, 'no frame is read after the exit step'
  assert camera.pixels_read == (exit_step + 1) * B * G * G
  np.testing.assert_allclose(
    stacked(result.predictions, 'confidence'), [expected[: exit_step + 1]] * B, atol=1e-5
  )
  np.testing.assert_array_equal(stacked(result.predictions, 'label'), 0)
  np.testing.assert_array_equal(stacked(result.predictions, 'done'), [[0, 0, 1]] * B)
  # Up to the exit the outputs are the model's own (early exit changes nothing before it).
  assert_matches_student_forward(result, FRAMES, steps=exit_step + 1, variables=variables)
  # Stepped on regardless, a done stream keeps its exit-step prediction.
  later = agent.step(np.ones((B, G, G, 3), np.float32))
  for field in streaming.Prediction._fields:
    np.testing.assert_array_equal(
      getattr(later, field), getattr(result.final, field), err_msg=field
    )


def test_done_streams_freeze_while_the_others_continue():
  # gamma between the two streams' confidences at some step: one stream exits, the other not.
  camera = streaming.ArrayCamera(FRAMES)
  full = streaming.run_stream(streaming.GlimpseAgent(VARIABLES, CONFIG, batch_size=B), camera)
  conf = stacked(full.predictions, 'confidence')  # (B, T)
  running_max = np.maximum.accumulate(conf, axis=1)
  t = next(t for t in range(T - 1) if abs(running_max[0, t] - running_max[1, t]) > 1e-3)
  fast = int(np.argmax(running_max[:, t]))
  gamma = float(running_max[:, t].mean())
  agent = streaming.GlimpseAgent(VARIABLES, CONFIG, batch_size=B, gamma=gamma)
  camera = streaming.ArrayCamera(FRAMES)
  result = streaming.run_stream(agent, camera)
  exit_fast = int(np.argmax(conf[fast] > gamma))
  assert exit_fast <= t and not (conf[1 - fast, : t + 1] > gamma).any()
  done = stacked(result.predictions, 'done')
  assert done[fast, exit_fast:].all() and not done[fast, :exit_fast].any()
  # The fast stream stops reading; its prediction freezes at its exit step.
  np.testing.assert_array_equal(result.active[:, fast], np.arange(result.num_steps) <= exit_fast)
  assert camera.pixels_read_per_stream[fast] == (exit_fast + 1) * G * G
  for step in range(exit_fast, result.num_steps):
    p = result.predictions[step]
    np.testing.assert_array_equal(p.probs[fast], full.predictions[exit_fast].probs[fast])
    np.testing.assert_array_equal(
      p.next_location[fast], full.predictions[exit_fast].next_location[fast]
    )
  # The other stream is unaffected by its neighbour's exit.
  other = 1 - fast
  np.testing.assert_allclose(
    stacked(result.predictions, 'probs')[other],
    stacked(full.predictions, 'probs')[other, : result.num_steps],
    atol=1e-6,
  )


def write_video(path: str, frames_uint8: np.ndarray, codec: str) -> None:
  """Encodes uint8 (n, H, W, 3) frames with PyAV."""
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=8)
    stream.height, stream.width = frames_uint8.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    for frame in frames_uint8:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def decode(path: str) -> np.ndarray:
  """Every frame of a video as the camera prepares it, decoded independently of the camera."""
  with av.open(path) as container:
    images = [f.to_image() for f in container.decode(video=0)]
  return np.stack([camera_lib.prepare_frame(im, S) for im in images])


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  """A webm (VP9) and an mp4 (H.264) of 6 smooth frames, 40 x 48 (not the model's size)."""
  directory = tmp_path_factory.mktemp('videos')
  clips = smooth_frames(7, (2, 6, 40, 48, 3))
  clips = np.clip((clips - clips.min()) / (clips.max() - clips.min()) * 255, 0, 255)
  paths = [str(directory / 'a.webm'), str(directory / 'b.mp4')]
  write_video(paths[0], clips[0].astype(np.uint8), 'libvpx-vp9')
  write_video(paths[1], clips[1].astype(np.uint8), 'libx264')
  return paths


def test_video_file_camera_streams_the_decoded_frames(videos):
  decoded = np.stack([decode(p) for p in videos])  # (2, 6, 32, 32, 3)
  assert decoded.shape == (B, 6, S, S, 3)
  agent = streaming.GlimpseAgent(VARIABLES, CONFIG, batch_size=B)
  with streaming.VideoFileCamera(videos, S) as camera:
    result = streaming.run_stream(agent, camera)
    assert camera.frames_decoded == B * T, 'decodes one frame per stream and glimpse, no more'
  assert result.end == 'done' and camera.pixels_read == B * T * G * G
  assert_matches_student_forward(result, decoded[:, :T])
  # Every 2nd frame: 3 glimpses, then the 6-frame videos end before the agent is done.
  with streaming.VideoFileCamera(videos, S, frame_stride=2) as camera:
    result = streaming.run_stream(agent, camera)
  assert result.end == 'video_ended' and result.num_steps == 3
  strided = decoded[:, 1::2]
  # Causal: the first 3 steps do not depend on the 4th frame.
  assert_matches_student_forward(result, np.concatenate([strided, strided[:, -1:]], 1), steps=3)
  with pytest.raises(FileNotFoundError, match='missing.webm'):
    streaming.VideoFileCamera([videos[0], videos[0] + '.missing.webm'], S)


def test_cli_streams_videos_prints_every_glimpse_and_writes_gifs(videos, tmp_path):
  checkpoint = str(tmp_path / 'student.npz')
  np.savez(checkpoint, **convert.to_state_dict(PARAMS))
  names = tmp_path / 'classes.txt'
  names.write_text('\n'.join(f'action {i}' for i in range(CONFIG.num_classes)))
  variables, config, class_names = cli.load_model(
    workdir=None,
    checkpoint=checkpoint,
    model_config=CONFIG,
    class_names_path=str(names),
  )
  assert class_names[3] == 'action 3'
  lines = []
  result, gifs = cli.stream_videos(
    variables,
    config,
    videos,
    class_names=class_names,
    gif=str(tmp_path / 'seen.gif'),
    print_fn=lines.append,
  )
  steps = [line for line in lines if ' t=' in line]
  assert len(steps) == B * T and all(f'read {G * G} px' in line for line in steps)
  assert steps[-1].endswith('[done]') and "'action " in steps[-1]
  for gif in gifs:
    with Image.open(gif) as image:
      assert image.n_frames == T
      image.seek(0)
      first = np.asarray(image.convert('RGB'))
    # Glimpse-only view: at t = 1 most of the canvas (outside the 16-px glimpse) is black.
    assert (first[: first.shape[1]].max(-1) == 0).mean() > 0.5
  with pytest.raises(ValueError, match='exactly one of --workdir or --checkpoint'):
    cli.load_model(workdir=None, checkpoint=None, model_config=CONFIG)
  # --compute_dtype: the same weights, run in another dtype; the given config is not changed.
  _, bf16, _ = cli.load_model(
    workdir=None, checkpoint=checkpoint, model_config=CONFIG, compute_dtype='bfloat16'
  )
  assert bf16.compute_dtype == 'bfloat16' and CONFIG.compute_dtype == 'float32'
  assert {k: bf16[k] for k in CONFIG if k != 'compute_dtype'} == {
    k: CONFIG[k] for k in CONFIG if k != 'compute_dtype'
  }
  with pytest.raises(ValueError, match='model.compute_dtype'):
    cli.load_model(workdir=None, checkpoint=checkpoint, model_config=CONFIG, compute_dtype='int4')


_RUNTIME_SCRIPT = textwrap.dedent(
  """
  import sys
  import numpy as np
  from glitr_jax import export_runtime
  inputs = np.load(sys.argv[2])
  b, gamma = int(inputs['b']), float(inputs['gamma'])
  agent = export_runtime.load(sys.argv[1], batch_size=b, gamma=gamma)
  out = {'first': agent.first_location()}
  for t, glimpses in enumerate(inputs['glimpses']):
    prediction = agent.step(glimpses)
    for field in prediction._fields:
      out[f'{field}_{t}'] = np.asarray(getattr(prediction, field))
  try:
    agent.step(inputs['glimpses'][0])
    raise AssertionError('stepping past num_frames must fail')
  except export_runtime.NumFramesExceededError:
    pass
  heavy = [m for m in ('flax', 'glitr_jax.models', 'glitr_jax.streaming', 'glitr_jax.train',
                       'orbax', 'optax', 'tensorflow') if m in sys.modules]
  assert not heavy, f'the runtime imported {heavy}'
  np.savez(sys.argv[3], **out)
  """
)


def test_exported_artifact_runs_in_a_fresh_process_without_the_training_code(tmp_path):
  variables, _ = exit_model()
  export_dir = tmp_path / 'export'
  meta = streaming.export_agent(
    variables, CONFIG, export_dir, class_names=[f'c{i}' for i in range(CONFIG.num_classes)]
  )
  assert meta['platforms'] == ['cpu', 'cuda']
  on_disk = json.loads((export_dir / 'meta.json').read_text())
  assert (on_disk['num_frames'], on_disk['glimpse_pixels'], on_disk['image_size']) == (T, G, S)
  # Three streams from an export made without a batch size (B is symbolic); gamma exits at 3.
  b, gamma = 3, 0.9
  glimpses = np.random.default_rng(4).standard_normal((T, b, G, G, 3)).astype(np.float32)
  np.savez(tmp_path / 'inputs.npz', glimpses=glimpses, b=b, gamma=gamma)
  env = dict(os.environ, PYTHONPATH=REPO)
  subprocess.run(
    [
      sys.executable,
      '-c',
      _RUNTIME_SCRIPT,
      str(export_dir),
      str(tmp_path / 'inputs.npz'),
      str(tmp_path / 'out.npz'),
    ],
    check=True,
    env=env,
    cwd=str(tmp_path),
    timeout=300,
  )
  out = np.load(tmp_path / 'out.npz')
  agent = streaming.GlimpseAgent(variables, CONFIG, batch_size=b, gamma=gamma)
  np.testing.assert_allclose(out['first'], agent.first_location(), atol=1e-6)
  for t in range(T):
    prediction = agent.step(glimpses[t])
    for field in streaming.Prediction._fields:
      np.testing.assert_allclose(
        out[f'{field}_{t}'], getattr(prediction, field), atol=1e-6, err_msg=f'{field} at {t}'
      )
  assert out['done_2'].all() and not out['done_1'].any()


def test_export_keeps_the_agents_bfloat16_and_int8_weights(tmp_path):
  config = tiny_model_config(compute_dtype='bfloat16')
  variables = {'params': PARAMS}
  meta = streaming.export_agent(variables, config, tmp_path, platforms=None, int8_heads=True)
  with np.load(tmp_path / 'weights.npz') as stored:
    dtypes = {name: stored[name].dtype for name in meta['param_names']}
  qkv = 'temporal_head/blocks_0/attn/qkv'
  assert dtypes[f'{qkv}/kernel'] == np.int8 and dtypes[f'{qkv}/kernel_scale'] == np.float32
  assert dtypes['backbone/blocks_0/attn/qkv/kernel'] == np.uint16  # bfloat16 bits
  assert dtypes['temploc_head/init_loc'] == np.float32
  # The export runs what the in-process agent with the same weights runs.
  exported = export_runtime.load(tmp_path, batch_size=2)
  agent = streaming.GlimpseAgent(variables, config, batch_size=2, int8_heads=True)
  glimpses = np.random.default_rng(5).standard_normal((2, G, G, 3)).astype(np.float32)
  for _ in range(CONFIG.num_frames):
    want, got = agent.step(glimpses), exported.step(glimpses)
    np.testing.assert_allclose(got.probs, want.probs, atol=1e-6)
    np.testing.assert_allclose(got.next_location, want.next_location, atol=1e-6)
