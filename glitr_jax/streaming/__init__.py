"""Streaming GliTr: a camera-facing agent that sees one glimpse per step, and its export.

    from glitr_jax import streaming
    agent = streaming.GlimpseAgent(variables, model_config, batch_size=1, gamma=0.9)
    with streaming.VideoFileCamera('clip.webm', model_config.image_size) as camera:
      result = streaming.run_stream(agent, camera)
    result.final.label, result.pixels_read.sum()
    streaming.export_agent(variables, model_config, 'export_dir')  # glitr_jax.export_runtime.load

Command line: `python -m glitr_jax.streaming --workdir=DIR --video=FILE [--gamma=0.9]` (see
glitr_jax/streaming/cli.py).
"""

from glitr_jax.agent_host import NumFramesExceededError, Prediction, StreamingAgent
from glitr_jax.streaming.agent import AgentState, GlimpseAgent, agent_step, init_state
from glitr_jax.streaming.camera import (
  ArrayCamera,
  Camera,
  FrameCamera,
  VideoFileCamera,
  normalize,
  prepare_frame,
)
from glitr_jax.streaming.export import export_agent
from glitr_jax.streaming.render import glimpse_view, write_gif
from glitr_jax.streaming.runner import StreamResult, run_stream

__all__ = [
  'AgentState',
  'ArrayCamera',
  'Camera',
  'FrameCamera',
  'GlimpseAgent',
  'NumFramesExceededError',
  'Prediction',
  'StreamResult',
  'StreamingAgent',
  'VideoFileCamera',
  'agent_step',
  'export_agent',
  'glimpse_view',
  'init_state',
  'normalize',
  'prepare_frame',
  'run_stream',
  'write_gif',
]
