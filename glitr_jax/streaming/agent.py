"""GlimpseAgent: GliTr's student run online, one glimpse per stream and step.

The device side is two pure functions of (params, state): `init_state` and `agent_step`. The step
is `GliTr.glimpse_step` (Tf on the glimpse, then Tc's and Tl's cached steps, docs/design.md 1.6)
plus the early-exit bookkeeping, so one jit-compiled call per glimpse runs the whole model for B
independent streams. The host side (input checks, step count, the threshold) is
`glitr_jax.agent_host.StreamingAgent`, shared with the exported runtime.

Streams that are done. A stream is done from the first step whose max softmax probability exceeds
gamma (docs/design.md section 5, early exit), and at the num_frames-th step. Its prediction then
freezes: every later step returns the probs, label, confidence and next_location of its exit step,
whatever pixels arrive for it (`run_stream` stops reading its camera). The batch keeps running
while any stream is live; the finished streams' KV caches keep advancing on the ignored pixels,
which costs nothing extra (the batch is computed anyway) and never reaches their outputs.
"""

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from glitr_jax import agent_host, inference
from glitr_jax.agent_host import Prediction
from glitr_jax.models import glitr

Params = Any


@flax.struct.dataclass
class AgentState:
  """Everything an agent carries between glimpses (all on the device).

  Attributes:
    model: the student's KV caches and the location of the next glimpse.
    step: () int32, glimpses taken so far.
    done: (B,) bool, streams that have finished.
    probs: (B, C) the latest prediction of each stream (frozen at its exit step once done).
    next_location: (B, 2) where each stream's next glimpse is to be taken (frozen once done).
  """

  model: glitr.StepState
  step: jax.Array
  done: jax.Array
  probs: jax.Array
  next_location: jax.Array


def init_state(model: glitr.GliTr, params: Params, batch_size: int) -> tuple[AgentState, jax.Array]:
  """A fresh state for `batch_size` streams, and l_1 (B, 2).

  Call it under jit: the caches' zero arrays must be distinct buffers for the state to be donated
  (`TemporalTransformer.init_cache` shares one array between layers outside jit).
  """
  step_state = model.init_step_state(params, batch_size)
  num_classes = model.temporal_head.num_outputs
  state = AgentState(
    model=step_state,
    step=jnp.zeros((), jnp.int32),
    done=jnp.zeros((batch_size,), bool),
    probs=jnp.zeros((batch_size, num_classes), jnp.float32),
    next_location=step_state.location,
  )
  return state, step_state.location


def agent_step(
  model: glitr.GliTr,
  params: Params,
  state: AgentState,
  glimpses_bhwc: jax.Array,
  gamma: jax.Array,
) -> tuple[AgentState, Prediction]:
  """One glimpse for every stream: GliTr's online step plus early exit.

  Args:
    model: the GliTr definition.
    params: its parameters.
    state: the agents' state; `state.model.location` is where these glimpses were taken.
    glimpses_bhwc: (B, g, g, 3) normalised glimpse pixels.
    gamma: () float32 early-exit threshold (+inf: never exit early).

  Returns:
    The next state and the Prediction (probs (B, C), label (B,), confidence (B,),
    next_location (B, 2), done (B,)). A stream already done keeps its frozen prediction. Past
    num_frames the temporal embedding has no position left: the host refuses such a step
    (StreamingAgent), and should a caller of the raw function try, probs come back NaN rather
    than silently reusing the last position.
  """
  model_state, out = model.glimpse_step(params, state.model, glimpses_bhwc)
  live_b = ~state.done
  probs_bc = jax.nn.softmax(out['logits'], axis=-1)
  probs_bc = jnp.where(live_b[:, None], probs_bc, state.probs)
  next_b2 = jnp.where(live_b[:, None], out['next_location'], state.next_location)
  confidence_b = probs_bc.max(axis=-1)
  in_range = state.step < model.num_frames
  done_b = state.done | (confidence_b > gamma) | (state.step + 1 >= model.num_frames)
  probs_bc = jnp.where(in_range, probs_bc, jnp.nan)
  new_state = AgentState(
    model=model_state,
    step=state.step + 1,
    done=done_b,
    probs=probs_bc,
    next_location=next_b2,
  )
  prediction = Prediction(
    probs=probs_bc,
    label=jnp.argmax(probs_bc, axis=-1).astype(jnp.int32),
    confidence=jnp.where(in_range, confidence_b, jnp.nan),
    next_location=next_b2,
    done=done_b,
  )
  return new_state, prediction


def _agent_functions(model: glitr.GliTr):
  """The jit-compiled (init, step) pair of one model, shared by all its agents.

  Each compiles once per batch size; the parameters and gamma are arguments, so new weights or
  thresholds reuse the compiled code. The step donates the state (argument 1).
  """
  init = jax.jit(lambda params, ids_b: init_state(model, params, ids_b.shape[0]))
  step = jax.jit(functools.partial(agent_step, model), donate_argnums=1)
  return init, step


def stored_params(params: Params, model_config: ml_collections.ConfigDict, int8_heads: bool):
  """The weights as the agent keeps them: cast once to the compute dtype (a bfloat16 step then
  reads them as they are), the heads' block weights in int8 when asked."""
  params = inference.cast_params(params, model_config.compute_dtype)
  return inference.quantize_head_weights(params) if int8_heads else params


class GlimpseAgent(agent_host.StreamingAgent):
  """GliTr for B camera streams, one glimpse at a time.

      agent = GlimpseAgent(variables, model_config, batch_size=2, gamma=0.9)
      location = agent.first_location()                          # (B, 2)
      while not agent.done.all():
        prediction = agent.step(camera.read_glimpse(location, agent.glimpse_pixels))
        location = np.asarray(prediction.next_location)

  The state (KV caches, step count, which streams are done) lives in the agent; `step` is one
  jit-compiled call whose state buffers are donated. The agent keeps the weights of the products
  in the model config's compute_dtype (`glitr_jax.inference.cast_params`), so a bfloat16 model
  holds them in bfloat16 and never converts them per step. `step` accepts only (B, g, g, 3)
  glimpses: the agent never sees a frame. At most num_frames steps per stream; then reset().
  """

  def __init__(
    self,
    variables: dict[str, Params],
    model_config: ml_collections.ConfigDict,
    batch_size: int = 1,
    gamma: float | None = None,
    int8_heads: bool = False,
  ):
    """Builds the agent.

    Args:
      variables: {'params': GliTr parameters} (glitr_jax.convert.load_official or a workdir).
      model_config: the model config the parameters belong to.
      batch_size: number of independent streams B.
      gamma: early-exit threshold on the max softmax probability, in [0, 1]; None disables
        early exit (every stream runs num_frames steps).
      int8_heads: store Tc's and Tl's block weights in int8
        (`glitr_jax.inference.quantize_head_weights`), for CPUs, where the heads' few-row
        products are bound by the bytes of weights they read.
    """
    if 'params' not in variables:
      raise ValueError(
        "variables must be {'params': ...} (as glitr_jax.convert.load_official gives)"
      )
    self.model_config = model_config
    self.model = inference.model_for(model_config)
    init, step = inference.compiled(model_config, _agent_functions)
    super().__init__(
      init,
      step,
      jax.device_put(stored_params(variables['params'], model_config, int8_heads)),
      batch_size=batch_size,
      gamma=gamma,
      num_frames=self.model.num_frames,
      glimpse_pixels=self.model.glimpse_pixels,
      image_size=self.model.image_size,
      num_classes=model_config.num_classes,
    )
