"""GliTr: Tf + Tc + Tl + init_loc, as pure functions of a parameter pytree.

The parameters are one dict whose top-level names follow the official state dict:
  {'backbone': Tf (ViT), 'temporal_head': Tc, 'temploc_head': Tl (with 'init_loc')}.
`GliTr` holds the three module definitions and composes them; it has no state of its own, so every
method is a pure function of `params` and its inputs, usable under jit, grad and lax.scan.

Forwards (docs/design.md 1.6):
  teacher_forward   full frames: f~ = Tf(x), y~ = Tc(f~), locations [init_loc, Tl(sg(f~))[:T-1]].
  student_forward   Algorithm 1: l_1 = init_loc; for each t, g_t = crop(x_t, l_t),
                    f^_t = Tf(g_t, pos(l_t)), l_{t+1} = Tl(sg(f^_{1:t}))[t]; then y^ = Tc(f^) in one
                    causal pass. The scan body holds only crop -> Tf -> Tl's cached step; because Tc
                    is causal, one pass after the scan equals Tc's output at every step.
  student_step      one online step (crop -> Tf -> Tc and Tl cached steps) for streaming.
With `locations` given, student_forward takes every glimpse at those locations (the evaluation
baselines, the teacher's consistency branch), with no sequential dependency: one batched Tf pass.
"""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from glitr_jax import glimpse as glimpse_lib
from glitr_jax.models import config as config_lib
from glitr_jax.models import temporal, vit

Params = Any


@flax.struct.dataclass
class StepState:
  """What an online student carries between glimpses.

  Attributes:
    tc: Tc's key/value cache.
    tl: Tl's key/value cache.
    location: (B, 2) where the next glimpse is to be taken.
  """

  tc: temporal.TemporalCache
  tl: temporal.TemporalCache
  location: jax.Array


@functools.lru_cache(maxsize=16)
def _jitted_init(model: 'GliTr'):
  return jax.jit(model._init)


def _split(rng: jax.Array | None, n: int) -> list[jax.Array | None]:
  return [None] * n if rng is None else list(jax.random.split(rng, n))


def _rngs(rng: jax.Array | None) -> dict[str, jax.Array]:
  return {} if rng is None else {'dropout': rng}


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _rollout(model: 'GliTr', train: bool, params, frames_bthwc, rng):
  """GliTr.policy_rollout: the scan forward; a loop-free replay for the backward pass."""
  return model._rollout_scan(params, frames_bthwc, train, rng)


def _rollout_fwd(model: 'GliTr', train: bool, params, frames_bthwc, rng):
  feats_btd, locs_bt2 = model._rollout_scan(params, frames_bthwc, train, rng)
  # Residuals: the inputs (already alive) and the (B, T, D) features, not the scan's activations.
  return (feats_btd, locs_bt2), (params, frames_bthwc, rng, feats_btd)


def _rollout_bwd(model: 'GliTr', train: bool, residuals, cotangents):
  params, frames_bthwc, rng, feats_btd = residuals
  replay = lambda p, x: model._replay(p, x, jax.lax.stop_gradient(feats_btd), train, rng)
  _, vjp = jax.vjp(replay, params, frames_bthwc)
  d_params, d_frames = vjp(cotangents)
  return d_params, d_frames, None  # The RNG has no cotangent.


_rollout.defvjp(_rollout_fwd, _rollout_bwd)


@dataclasses.dataclass(frozen=True)
class GliTr:
  """The three modules and the glimpse geometry. Build it with `GliTr.from_config`."""

  backbone: vit.VisionTransformer
  temporal_head: temporal.TemporalTransformer
  temploc_head: temporal.TemporalTransformer
  image_size: int
  glimpse_patches: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> 'GliTr':
    """Builds GliTr from a model config (glitr_jax.models.config), after validating it."""
    config_lib.validate(config)
    dtype = jnp.dtype(config.compute_dtype)
    grid = config.image_size // config.patch_size
    backbone = vit.VisionTransformer(
      patch_size=config.patch_size,
      hidden_size=config.hidden_size,
      depth=config.depth,
      num_heads=config.num_heads,
      mlp_ratio=config.mlp_ratio,
      grid_size=grid,
      drop_path_rate=config.drop_path_rate,
      remat=config.remat,
      posemb_init=config.posemb_init,
      dtype=dtype,
    )
    head = lambda outputs, location: temporal.TemporalTransformer(
      hidden_size=config.temporal_hidden_size,
      depth=config.temporal_depth,
      num_heads=config.temporal_heads,
      num_frames=config.num_frames,
      num_outputs=outputs,
      mlp_ratio=config.mlp_ratio,
      drop_path_rate=config.drop_path_rate,
      location_head=location,
      posemb_init=config.posemb_init,
      dtype=dtype,
    )
    return cls(
      backbone=backbone,
      temporal_head=head(config.num_classes, False),
      temploc_head=head(2, True),
      image_size=config.image_size,
      glimpse_patches=config.glimpse_patches,
    )

  # --- Geometry. ---
  @property
  def grid_size(self) -> int:
    return self.backbone.grid_size

  @property
  def glimpse_pixels(self) -> int:
    return self.glimpse_patches * self.backbone.patch_size

  @property
  def num_frames(self) -> int:
    return self.temporal_head.num_frames

  # --- Initialisation. ---
  def init(self, rng: jax.Array) -> Params:
    """Parameters from scratch (docs/design.md 1.5): Tl starts as an exact copy of Tc.

    Tl shares Tc's blocks, input projection and temporal embedding at initialisation (copied, not
    aliased), and has its own head (PyTorch default init x 0.1, no bias) and init_loc = (0, 0).
    Compiled once per model (running Flax's init op by op costs seconds on a CPU).
    """
    return _jitted_init(self)(rng)

  def _init(self, rng: jax.Array) -> Params:
    k_f, k_c, k_l = jax.random.split(rng, 3)
    frames = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
    feats = jnp.zeros((1, self.num_frames, self.backbone.hidden_size), jnp.float32)
    backbone = self.backbone.init(k_f, frames)['params']
    tc = self.temporal_head.init(k_c, feats)['params']
    tl_own = self.temploc_head.init(k_l, feats)['params']
    tl = {k: jax.tree.map(jnp.copy, v) for k, v in tc.items() if k != 'head'}
    tl['head'] = tl_own['head']
    tl['init_loc'] = tl_own['init_loc']
    return {'backbone': backbone, 'temporal_head': tc, 'temploc_head': tl}

  # --- Building blocks. ---
  def init_location(self, params: Params, batch_size: int) -> jax.Array:
    """(B, 2) copies of the learnable first location l_1."""
    init_loc = params['temploc_head']['init_loc'].astype(jnp.float32)
    return jnp.broadcast_to(init_loc, (batch_size, 2))

  def encode_frames(
    self, params: Params, frames_nhwc: jax.Array, *, train: bool = False, rng=None
  ) -> jax.Array:
    """Tf on full frames with the full position-embedding grid: (N, H, W, 3) -> (N, D)."""
    return self.backbone.apply(
      {'params': params['backbone']}, frames_nhwc, None, not train, rngs=_rngs(rng)
    )

  def glimpse_pos_embed(self, backbone_params: Params, locations_n2: jax.Array) -> jax.Array:
    """(N, n*n, D): the position-embedding grid sampled at each glimpse location."""
    grid = self.grid_size
    pos_hwd = backbone_params['pos_embed'].reshape(grid, grid, -1)
    return glimpse_lib.sample_pos_embed(pos_hwd, locations_n2, self.glimpse_patches)

  def encode_glimpses(
    self,
    params: Params,
    glimpses_nhwc: jax.Array,
    locations_n2: jax.Array,
    *,
    train: bool = False,
    rng=None,
  ) -> jax.Array:
    """Tf on glimpse pixels taken at `locations`: (N, g, g, 3) -> (N, D)."""
    pos = self.glimpse_pos_embed(params['backbone'], locations_n2)
    return self.backbone.apply(
      {'params': params['backbone']}, glimpses_nhwc, pos, not train, rngs=_rngs(rng)
    )

  def glimpse_features(
    self,
    params: Params,
    frames_nhwc: jax.Array,
    locations_n2: jax.Array,
    *,
    train: bool = False,
    rng=None,
  ) -> jax.Array:
    """Crop at `locations`, then Tf: (N, H, W, 3), (N, 2) -> (N, D)."""
    glimpses = glimpse_lib.extract(frames_nhwc, locations_n2, self.glimpse_pixels)
    return self.encode_glimpses(params, glimpses, locations_n2, train=train, rng=rng)

  def classify(
    self, params: Params, feats_btd: jax.Array, *, train: bool = False, rng=None
  ) -> jax.Array:
    """Tc's causal pass: (B, T, D) -> (B, T, C) logits, y_t from features 1..t."""
    out, _ = self.temporal_head.apply(
      {'params': params['temporal_head']}, feats_btd, None, not train, rngs=_rngs(rng)
    )
    return out

  def locate(
    self, params: Params, feats_btd: jax.Array, *, train: bool = False, rng=None
  ) -> jax.Array:
    """Tl's causal pass on stop_gradient(features): (B, T, D) -> (B, T, 2), l_{t+1} at t."""
    out, _ = self.temploc_head.apply(
      {'params': params['temploc_head']},
      jax.lax.stop_gradient(feats_btd),
      None,
      not train,
      rngs=_rngs(rng),
    )
    return out

  # --- Teacher. ---
  def teacher_forward(
    self, params: Params, frames_bthwc: jax.Array, *, train: bool = False, rng=None
  ) -> dict[str, jax.Array]:
    """The teacher on full frames.

    Args:
      params: GliTr parameters.
      frames_bthwc: (B, T, H, W, 3) normalised frames.
      train: enables stochastic depth (needs `rng`).
      rng: PRNG key for stochastic depth.

    Returns:
      logits (B, T, C); features (B, T, D) full-frame features f~; locations (B, T, 2) =
      [init_loc, l~_2, ..., l~_T] (Tl's last prediction is dropped).
    """
    b, t = frames_bthwc.shape[:2]
    r_f, r_c, r_l = _split(rng, 3)
    feats = self.encode_frames(
      params, frames_bthwc.reshape((b * t,) + frames_bthwc.shape[2:]), train=train, rng=r_f
    ).reshape(b, t, -1)
    logits = self.classify(params, feats, train=train, rng=r_c)
    preds = self.locate(params, feats, train=train, rng=r_l)
    locations = jnp.concatenate([self.init_location(params, b)[:, None], preds[:, :-1]], axis=1)
    return {'logits': logits, 'features': feats, 'locations': locations}

  def frame_targets(self, params: Params, frames_bthwc: jax.Array) -> dict[str, jax.Array]:
    """A frozen teacher's consistency targets: full-frame logits and features (no Tl), eval mode."""
    b, t = frames_bthwc.shape[:2]
    feats = self.encode_frames(
      params, frames_bthwc.reshape((b * t,) + frames_bthwc.shape[2:])
    ).reshape(b, t, -1)
    return {'logits': self.classify(params, feats), 'features': feats}

  # --- Student. ---
  def glimpse_features_at(
    self,
    params: Params,
    frames_bthwc: jax.Array,
    locations_bt2: jax.Array,
    *,
    train: bool = False,
    rng=None,
  ) -> jax.Array:
    """Glimpse features for given locations, all B*T glimpses in one batched Tf pass."""
    b, t = frames_bthwc.shape[:2]
    feats = self.glimpse_features(
      params,
      frames_bthwc.reshape((b * t,) + frames_bthwc.shape[2:]),
      locations_bt2.reshape(b * t, 2),
      train=train,
      rng=rng,
    )
    return feats.reshape(b, t, -1)

  def policy_rollout(
    self, params: Params, frames_bthwc: jax.Array, *, train: bool = False, rng=None
  ) -> tuple[jax.Array, jax.Array]:
    """The closed glimpse loop: lax.scan over time of crop -> Tf -> Tl's cached step.

    Under differentiation the loop is not differentiated step by step: the scan runs forward only
    (no residuals), and the backward pass replays the same computation without the loop
    (`_replay`): Tl's causal pass over the rollout's features gives every location at once, then
    one batched Tf pass over all B * T glimpses, differentiated as one large computation. This is
    exact because Tl sees stop_gradient(features): the locations depend on the features' values
    only, never on their gradients, so nothing is sequential in the backward pass. The replay
    draws the rollout's drop-path masks (tests/perf_test.py checks the gradients against
    differentiating the scan itself).

    Returns:
      features (B, T, D) of the glimpses and locations (B, T, 2) where they were taken.
      Gradients reach Tl and init_loc through the crops; Tl sees stop_gradient(features).
    """
    return _rollout(self, train, params, frames_bthwc, rng)

  def _rollout_scan(
    self, params: Params, frames_bthwc: jax.Array, train: bool, rng
  ) -> tuple[jax.Array, jax.Array]:
    """policy_rollout's forward: the scan (also differentiable by plain autodiff, step by step)."""
    b, t = frames_bthwc.shape[:2]
    r_f, r_l = _split(rng, 2)
    tl_params = {'params': params['temploc_head']}

    def body(carry, xs):
      cache, loc_b2 = carry
      frame_bhwc, step = xs
      r_step = None if r_f is None else jax.random.fold_in(r_f, step)
      feat_bd = self.glimpse_features(params, frame_bhwc, loc_b2, train=train, rng=r_step)
      # One Tl RNG for every step: one drop-path mask per example and block per sequence.
      next_b12, cache = self.temploc_head.apply(
        tl_params, jax.lax.stop_gradient(feat_bd)[:, None], cache, not train, rngs=_rngs(r_l)
      )
      return (cache, next_b12[:, 0]), (feat_bd, loc_b2)

    init = (self.temploc_head.init_cache(b), self.init_location(params, b))
    xs = (jnp.moveaxis(frames_bthwc, 1, 0), jnp.arange(t))
    _, (feats_tbd, locs_tb2) = jax.lax.scan(body, init, xs)
    return jnp.moveaxis(feats_tbd, 0, 1), jnp.moveaxis(locs_tb2, 0, 1)

  def _replay(
    self, params: Params, frames_bthwc: jax.Array, feats_btd: jax.Array, train: bool, rng
  ) -> tuple[jax.Array, jax.Array]:
    """The rollout recomputed without its loop, given the features it produced.

    Tl's causal pass over stop_gradient(feats) yields l_2..l_{T+1} at once (the same outputs
    as its cached steps); every glimpse is then cropped and encoded in one Tf pass, vmapped over
    time so that step t draws the rollout's drop-path masks (its RNG is fold_in(r_f, t)); the
    vmap folds time into the matmuls' rows: (T * B * tokens, D) products, not T small ones.

    Returns:
      features (B, T, D) and locations (B, T, 2), equal to `_rollout_scan`'s outputs.
    """
    b, t = frames_bthwc.shape[:2]
    r_f, r_l = _split(rng, 2)
    preds_bt2 = self.locate(params, feats_btd, train=train, rng=r_l)
    locs_bt2 = jnp.concatenate([self.init_location(params, b)[:, None], preds_bt2[:, :-1]], axis=1)

    def encode(frame_bhwc, loc_b2, step):
      r_step = None if r_f is None else jax.random.fold_in(r_f, step)
      return self.glimpse_features(params, frame_bhwc, loc_b2, train=train, rng=r_step)

    feats_tbd = jax.vmap(encode, in_axes=(1, 1, 0))(frames_bthwc, locs_bt2, jnp.arange(t))
    return jnp.moveaxis(feats_tbd, 0, 1), locs_bt2

  def student_forward(
    self,
    params: Params,
    frames_bthwc: jax.Array,
    *,
    locations: jax.Array | None = None,
    train: bool = False,
    rng=None,
  ) -> dict[str, jax.Array]:
    """GliTr on a video (Algorithm 1).

    Args:
      params: GliTr parameters.
      frames_bthwc: (B, T, H, W, 3) normalised frames.
      locations: None for the learned policy, or (B, T, 2) locations that replace Tl's (the
        evaluation baselines, the teacher's consistency branch).
      train: enables stochastic depth (needs `rng`).
      rng: PRNG key.

    Returns:
      logits (B, T, C) with y_t from glimpses 1..t; locations (B, T, 2) where glimpse t was taken
      (locations[:, 0] is l_1); features (B, T, D) of the glimpses.
    """
    r_roll, r_c = _split(rng, 2)
    if locations is None:
      feats, locations = self.policy_rollout(params, frames_bthwc, train=train, rng=r_roll)
    else:
      feats = self.glimpse_features_at(params, frames_bthwc, locations, train=train, rng=r_roll)
    logits = self.classify(params, feats, train=train, rng=r_c)
    return {'logits': logits, 'locations': locations, 'features': feats}

  def init_step_state(self, params: Params, batch_size: int) -> StepState:
    """Empty caches, and l_1 for the first glimpse."""
    return StepState(
      tc=self.temporal_head.init_cache(batch_size),
      tl=self.temploc_head.init_cache(batch_size),
      location=self.init_location(params, batch_size),
    )

  def glimpse_step(
    self, params: Params, state: StepState, glimpses_bhwc: jax.Array
  ) -> tuple[StepState, dict[str, jax.Array]]:
    """One online step from the glimpse pixels taken at `state.location` (deterministic).

    Only the glimpse is needed, never the frame: this is what a small-field-of-view camera feeds.
    The caller must stop after num_frames steps (the temporal embedding's length).

    Returns:
      The next state, and logits (B, C) for this step, location (B, 2) where this glimpse was
      taken, next_location (B, 2), feature (B, D).
    """
    loc = state.location
    feat_bd = self.encode_glimpses(params, glimpses_bhwc, loc)
    logits_b1c, tc = self.temporal_head.apply(
      {'params': params['temporal_head']}, feat_bd[:, None], state.tc
    )
    next_b12, tl = self.temploc_head.apply(
      {'params': params['temploc_head']}, feat_bd[:, None], state.tl
    )
    out = {
      'logits': logits_b1c[:, 0],
      'location': loc,
      'next_location': next_b12[:, 0],
      'feature': feat_bd,
    }
    return StepState(tc=tc, tl=tl, location=next_b12[:, 0]), out

  def student_step(
    self, params: Params, state: StepState, frames_bhwc: jax.Array
  ) -> tuple[StepState, dict[str, jax.Array]]:
    """One online step from full frames: crop at `state.location`, then `glimpse_step`."""
    glimpses = glimpse_lib.extract(frames_bhwc, state.location, self.glimpse_pixels)
    return self.glimpse_step(params, state, glimpses)
