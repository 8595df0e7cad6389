"""Online accuracy after every glimpse, for the learned policy and the paper's baselines.

    evaluator = OnlineEvaluator(config, model, mesh)
    evaluator(params)                          # {'glitr': (T,) accuracy}       (student stage)
    evaluator(params, strategies=('teacher_full_frames',))   # the teacher on full frames
    results = evaluator.run(params, teacher_params, strategies=ALL, progress=True)

One jitted function per global batch does everything the requested strategies need: the student's
closed glimpse loop once (learned policy, early exit, location histograms), the teacher's
full-frame forward once (its accuracy and its locations), and every strategy whose locations are
known up front (centre, bottom-left, teacher, each seed of uniform and gaussian) as ONE batched
`student_forward(..., locations=...)` pass, vmapped over the strategies (`eval.strategies_per_pass`
bounds how many at a time). It returns integer sums over the batch's real examples, accumulated on
the devices; the host divides once at the end. Padding (mask False) counts nothing, so uneven
splits are exact, and random draws depend on example indices, not on batches or devices.

`model` is anything with GliTr's evaluation interface: `student_forward(params, frames,
locations=None)`, `teacher_forward(params, frames)` (each returning 'logits' (B, T, C) and
'locations' (B, T, 2)), and `num_frames`, `glimpse_patches`, `grid_size`, `glimpse_pixels`.
"""

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from absl import logging

from glitr_jax import data as data_lib
from glitr_jax import sharding
from glitr_jax.eval import metrics
from glitr_jax.eval import strategies as strategies_lib

Params = Any
BATCH_KEYS = ('video', 'label', 'mask', 'index')
TEACHER_AT_GLITR = 'teacher_at_glitr'  # internal counter name (paper Fig. 8b)


@dataclasses.dataclass(frozen=True)
class EvalPlan:
  """What one evaluation computes (static: one compiled step per plan and batch shape).

  Attributes:
    strategies: names from strategies.ALL, in canonical order.
    num_seeds: repetitions of each random strategy.
    seed: base seed of the random strategies.
    gammas: early-exit thresholds (on the learned policy; needs 'glitr').
    histogram_bins: bins per side of the glimpse-centre histograms (0: none; needs 'glitr').
    teacher_at_glitr: also classify GliTr's glimpses with the teacher's weights (paper Fig. 8b:
      the glimpse policy judged by an impartial classifier; needs 'glitr' and a teacher).
    strategies_per_pass: at most this many given-location strategies in one vmapped pass
      (0: all at once); lower it if an evaluation batch runs out of memory.
  """

  strategies: tuple[str, ...] = (strategies_lib.GLITR,)
  num_seeds: int = 1
  seed: int = 0
  gammas: tuple[float, ...] = ()
  histogram_bins: int = 0
  teacher_at_glitr: bool = False
  strategies_per_pass: int = 0

  def __post_init__(self):
    object.__setattr__(self, 'strategies', strategies_lib.validate(tuple(self.strategies)))
    if self.num_seeds < 1:
      raise ValueError(f'eval.num_seeds={self.num_seeds}: must be >= 1')
    if self.histogram_bins < 0:
      raise ValueError(f'eval.histogram_bins={self.histogram_bins}: must be >= 0')
    if self.strategies_per_pass < 0:
      raise ValueError(f'eval.strategies_per_pass={self.strategies_per_pass}: must be >= 0')
    object.__setattr__(self, 'gammas', tuple(float(g) for g in self.gammas))

  @property
  def has_glitr(self) -> bool:
    return strategies_lib.GLITR in self.strategies

  @property
  def needs_teacher(self) -> bool:
    uses = any(s in strategies_lib.NEEDS_TEACHER for s in self.strategies)
    return uses or (self.teacher_at_glitr and self.has_glitr)

  def rows(self, name: str) -> int:
    """Accuracy rows of a strategy: one per seed for the random ones, else one."""
    return self.num_seeds if name in strategies_lib.RANDOM else 1

  def given_location_sets(self) -> list[tuple[str, int]]:
    """(strategy, seed index) of every location set classified in the batched pass."""
    out = []
    for name in self.strategies:
      if name in strategies_lib.GIVEN_LOCATIONS:
        out.extend((name, s) for s in range(self.rows(name)))
    return out


def default_histogram_bins(model_config: ml_collections.ConfigDict) -> int:
  """About one bin per patch, odd so that the frame centre (where l_1 starts) is a bin's middle."""
  grid = int(model_config.image_size // model_config.patch_size)
  return grid + 1 - grid % 2


def plan_from_config(
  config: ml_collections.ConfigDict, strategies: Iterable[str] | None = None
) -> EvalPlan:
  """The plan the `eval` section describes (`strategies` overrides eval.strategies)."""
  e = config.eval
  names = tuple(e.strategies) if strategies is None else tuple(strategies)
  return EvalPlan(
    strategies=strategies_lib.validate(
      names, 'eval.strategies' if strategies is None else 'strategies'
    ),
    num_seeds=int(e.num_seeds),
    seed=int(e.seed),
    gammas=tuple(e.gammas),
    histogram_bins=int(e.histogram_bins) or default_histogram_bins(config.model),
    teacher_at_glitr=bool(e.teacher_at_glitr),
    strategies_per_pass=int(e.strategies_per_pass),
  )


def init_totals(plan: EvalPlan, num_frames: int) -> dict[str, Any]:
  """Zero sums for one evaluation pass (the pytree the step accumulates into)."""
  zeros = lambda *shape: np.zeros(shape, np.int32)
  correct = {name: zeros(plan.rows(name), num_frames) for name in plan.strategies}
  if plan.teacher_at_glitr and plan.has_glitr:
    correct[TEACHER_AT_GLITR] = zeros(1, num_frames)
  totals = {'count': zeros(), 'correct': correct}
  if plan.has_glitr and plan.gammas:
    totals['exit_correct'] = zeros(len(plan.gammas))
    totals['exit_glimpses'] = zeros(len(plan.gammas))
  if plan.has_glitr and plan.histogram_bins:
    totals['histogram'] = zeros(num_frames, plan.histogram_bins, plan.histogram_bins)
    totals['outside'] = zeros(num_frames)
    totals['location_sum'] = np.zeros((num_frames, 2), np.float32)
    totals['location_sq_sum'] = np.zeros((num_frames, 2), np.float32)
  return totals


def make_batch_fn(model, plan: EvalPlan) -> Callable:
  """Builds `step(params, teacher_params, batch, totals) -> (totals, per_example)`.

  Args:
    model: GliTr (or anything with its evaluation interface, see the module docstring).
    plan: what to compute.

  Returns:
    A pure function. `batch` holds video (B, T, H, W, 3), label (B,), mask (B,) bool and index
    (B,) int32; `totals` is `init_totals(plan, T)`'s structure and comes back with this batch's
    sums added. `per_example` holds GliTr's locations (B, T, 2), predictions (B, T), confidence
    (B, T) (max softmax probability) and index (B,) for pictures (empty without 'glitr').
  """
  gammas = jnp.asarray(plan.gammas, jnp.float32)
  location_sets = plan.given_location_sets()

  def step(params, teacher_params, batch, totals):
    frames_bthwc = batch['video']
    labels_b = batch['label'].astype(jnp.int32)
    mask_b = batch['mask'].astype(bool)
    index_b = batch['index']
    b, t = frames_bthwc.shape[:2]
    new = dict(totals)
    correct = dict(totals['correct'])
    new['count'] = totals['count'] + jnp.sum(mask_b, dtype=jnp.int32)
    per_example = {}

    def add(name: str, counts: jax.Array) -> None:
      correct[name] = correct[name] + counts.reshape(-1, t)  # (T,) or (seeds, T)

    glitr_locs = None
    if plan.has_glitr:
      out = model.student_forward(params, frames_bthwc)
      logits_btc, glitr_locs = out['logits'], out['locations']
      add(strategies_lib.GLITR, metrics.correct_per_t(logits_btc, labels_b, mask_b))
      if 'exit_correct' in totals:
        exit_correct, exit_glimpses = metrics.early_exit_counts(
          logits_btc, labels_b, mask_b, gammas
        )
        new['exit_correct'] = totals['exit_correct'] + exit_correct
        new['exit_glimpses'] = totals['exit_glimpses'] + exit_glimpses
      if 'histogram' in totals:
        bins = plan.histogram_bins
        new['histogram'] = totals['histogram'] + metrics.location_histogram(
          glitr_locs, mask_b, bins
        )
        new['outside'] = totals['outside'] + metrics.outside_frame(glitr_locs, mask_b)
        real_bt2 = jnp.where(mask_b[:, None, None], glitr_locs.astype(jnp.float32), 0.0)
        new['location_sum'] = totals['location_sum'] + jnp.sum(real_bt2, axis=0)
        new['location_sq_sum'] = totals['location_sq_sum'] + jnp.sum(real_bt2**2, axis=0)
      probs_btc = jax.nn.softmax(logits_btc.astype(jnp.float32), axis=-1)
      per_example = {
        'locations': glitr_locs,
        'predictions': jnp.argmax(logits_btc, axis=-1).astype(jnp.int32),
        'confidence': jnp.max(probs_btc, axis=-1),
        'index': index_b,
      }

    teacher_out = None
    if plan.needs_teacher:
      teacher_out = model.teacher_forward(teacher_params, frames_bthwc)
      if strategies_lib.TEACHER_FULL_FRAMES in correct:
        counts = metrics.correct_per_t(teacher_out['logits'], labels_b, mask_b)
        add(strategies_lib.TEACHER_FULL_FRAMES, counts)
      if TEACHER_AT_GLITR in correct:
        logits = model.student_forward(teacher_params, frames_bthwc, locations=glitr_locs)['logits']
        add(TEACHER_AT_GLITR, metrics.correct_per_t(logits, labels_b, mask_b))

    if location_sets:
      locs = []
      for name, seed_index in location_sets:
        if name in strategies_lib.FIXED:
          locs.append(
            strategies_lib.fixed_locations(name, model.glimpse_patches, model.grid_size, b, t)
          )
        elif name == strategies_lib.TEACHER:
          locs.append(teacher_out['locations'].astype(jnp.float32))
        else:
          locs.append(strategies_lib.random_locations(name, plan.seed, seed_index, index_b, t))
      locs_kbt2 = jnp.stack(locs)

      def classify(locations_bt2):
        logits = model.student_forward(params, frames_bthwc, locations=locations_bt2)['logits']
        return metrics.correct_per_t(logits, labels_b, mask_b)

      chunk = plan.strategies_per_pass
      if chunk and chunk < len(location_sets):
        correct_kt = jax.lax.map(classify, locs_kbt2, batch_size=chunk)
      else:
        correct_kt = jax.vmap(classify)(locs_kbt2)
      for name in dict.fromkeys(n for n, _ in location_sets):
        rows = [k for k, (n, _) in enumerate(location_sets) if n == name]
        add(name, correct_kt[rows[0] : rows[-1] + 1])

    new['correct'] = correct
    return new, per_example

  return step


@dataclasses.dataclass
class Example:
  """One video as GliTr saw it, for pictures.

  Attributes:
    frames: (T, H, W, 3) normalised frames (as fed to the model).
    locations: (T, 2) where GliTr took each glimpse.
    predictions: (T,) predicted class after each glimpse.
    confidence: (T,) max softmax probability after each glimpse.
    label: the true class.
    index: global example index in the split.
    video_id: the dataset's id ('' when unknown).
  """

  frames: np.ndarray
  locations: np.ndarray
  predictions: np.ndarray
  confidence: np.ndarray
  label: int
  index: int
  video_id: str


@dataclasses.dataclass
class Results:
  """One evaluation's numbers (host NumPy; fractions in [0, 1]).

  Attributes:
    num_examples: real examples counted (each exactly once).
    accuracy_per_t: strategy -> (T,) accuracy after each t (mean over seeds for random ones).
    accuracy_std_per_t: random strategy -> (T,) std over seeds (population std, ddof 0).
    accuracy_per_seed: random strategy -> (num_seeds, T).
    teacher_at_glitr: (T,) the teacher's weights on GliTr's glimpses (Fig. 8b), or None.
    early_exit: [{gamma, accuracy, mean_glimpses}] on the learned policy.
    location_histogram: (T, bins, bins) counts of GliTr's glimpse centres (rows ly, cols lx), or
      None.
    outside_frame: (T,) fraction of glimpse centres off the frame, or None.
    location_mean, location_std: (T, 2) of GliTr's locations (lx, ly), or None.
    examples: videos kept for pictures (process 0's first real examples).
  """

  num_examples: int
  accuracy_per_t: dict[str, np.ndarray]
  accuracy_std_per_t: dict[str, np.ndarray]
  accuracy_per_seed: dict[str, np.ndarray]
  teacher_at_glitr: np.ndarray | None = None
  early_exit: list[dict[str, float]] = dataclasses.field(default_factory=list)
  location_histogram: np.ndarray | None = None
  outside_frame: np.ndarray | None = None
  location_mean: np.ndarray | None = None
  location_std: np.ndarray | None = None
  examples: list[Example] = dataclasses.field(default_factory=list)


def summarize(plan: EvalPlan, totals: Mapping[str, Any]) -> Results:
  """Host-side fractions from the accumulated sums."""
  totals = jax.device_get(totals)
  count = int(totals['count'])
  if count == 0:
    raise ValueError('the evaluation saw no real examples (every mask was False): check the split')
  mean, std, per_seed = {}, {}, {}
  for name in plan.strategies:
    acc_st = np.asarray(totals['correct'][name], np.float64) / count
    mean[name] = acc_st.mean(axis=0)
    if name in strategies_lib.RANDOM:
      std[name] = acc_st.std(axis=0)
      per_seed[name] = acc_st
  results = Results(
    num_examples=count, accuracy_per_t=mean, accuracy_std_per_t=std, accuracy_per_seed=per_seed
  )
  if TEACHER_AT_GLITR in totals['correct']:
    results.teacher_at_glitr = (
      np.asarray(totals['correct'][TEACHER_AT_GLITR][0], np.float64) / count
    )
  if 'exit_correct' in totals:
    results.early_exit = [
      {'gamma': g, 'accuracy': float(c) / count, 'mean_glimpses': float(n) / count}
      for g, c, n in zip(plan.gammas, totals['exit_correct'], totals['exit_glimpses'], strict=True)
    ]
  if 'histogram' in totals:
    results.location_histogram = np.asarray(totals['histogram'])
    results.outside_frame = np.asarray(totals['outside'], np.float64) / count
    loc_mean = np.asarray(totals['location_sum'], np.float64) / count
    loc_var = np.asarray(totals['location_sq_sum'], np.float64) / count - loc_mean**2
    results.location_mean = loc_mean
    results.location_std = np.sqrt(np.maximum(loc_var, 0.0))
  return results


def _host_batch(batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise KeyError(f'evaluation batch lacks {missing}: the eval-iterator format has {BATCH_KEYS}')
  return {
    'video': np.asarray(batch['video'], np.float32),
    'label': np.asarray(batch['label'], np.int32),
    'mask': np.asarray(batch['mask'], bool),
    'index': np.asarray(batch['index'], np.int32),
  }


def _collect_examples(host_batch, per_example, wanted: int) -> list[Example]:
  """This process's real examples of a batch, matched to the step's outputs by example index."""
  fetched = jax.device_get(per_example)
  row_of = {int(i): r for r, i in enumerate(fetched['index'])}
  out = []
  for j in np.flatnonzero(np.asarray(host_batch['mask'])):
    if len(out) >= wanted:
      break
    index = int(host_batch['index'][j])
    r = row_of[index]
    video_id = host_batch.get('video_id')
    out.append(
      Example(
        frames=np.asarray(host_batch['video'][j], np.float32),
        locations=np.asarray(fetched['locations'][r], np.float32),
        predictions=np.asarray(fetched['predictions'][r]),
        confidence=np.asarray(fetched['confidence'][r], np.float32),
        label=int(host_batch['label'][j]),
        index=index,
        video_id='' if video_id is None else str(video_id[j]),
      )
    )
  return out


class OnlineEvaluator:
  """Accuracy after every t on the validation split, data parallel over `mesh`.

  Usable by the training loop (periodic evaluation and best-checkpoint selection) and by
  `glitr_jax.eval.run.evaluate` (the full report). Compiled steps are cached per plan.

  Args:
    config: the experiment config (reads `eval`, `data`, `model`, `stage`).
    model: the GliTr (glitr_jax.models.glitr.GliTr) the parameters belong to.
    mesh: the device mesh (sharding.make_mesh); eval.batch_size must split over it.
  """

  def __init__(self, config: ml_collections.ConfigDict, model, mesh: jax.sharding.Mesh):
    self._config = config
    self._model = model
    self._mesh = mesh
    self._compiled: dict[EvalPlan, Callable] = {}
    self.last_num_examples = 0
    sharding.check_batch_size(config.eval.batch_size, mesh, field='eval.batch_size')

  def default_strategies(self) -> tuple[str, ...]:
    """('teacher_full_frames',) for the teacher stage, else ('glitr',)."""
    if self._config.stage == 'teacher':
      return (strategies_lib.TEACHER_FULL_FRAMES,)
    return (strategies_lib.GLITR,)

  def batches(self) -> Iterable[dict[str, np.ndarray]]:
    """This host's batches of `data.eval_split` (glitr_jax.data.create_eval_iterator)."""
    c = self._config
    return data_lib.create_eval_iterator(
      c.data,
      batch_size=c.eval.batch_size,
      num_frames=c.model.num_frames,
      image_size=c.model.image_size,
      max_examples=c.eval.max_examples,
    )

  def step_fn(self, plan: EvalPlan) -> Callable:
    """The jitted step for `plan`: replicated params and sums, batch split along 'data'."""
    if plan not in self._compiled:
      replicated = sharding.replicated(self._mesh)
      self._compiled[plan] = jax.jit(
        make_batch_fn(self._model, plan),
        in_shardings=(replicated, replicated, sharding.batch_sharding(self._mesh), replicated),
        out_shardings=(replicated, replicated),
      )
    return self._compiled[plan]

  def run(
    self,
    params: Params,
    teacher_params: Params | None = None,
    *,
    strategies: Iterable[str] | None = None,
    plan: EvalPlan | None = None,
    batches: Iterable[Mapping[str, np.ndarray]] | None = None,
    num_examples_kept: int = 0,
    progress: bool = False,
  ) -> Results:
    """Evaluates `params` over every batch once.

    Args:
      params: the evaluated GliTr's parameters.
      teacher_params: the teacher's, for 'teacher', 'teacher_full_frames' and Fig. 8b; None means
        `params` is itself the teacher (the teacher stage: its own locations and full frames).
      strategies: names from strategies.ALL (default: `default_strategies()`); the rest of the
        plan comes from the config's `eval` section.
      plan: a complete plan instead (overrides `strategies`).
      batches: host batches in the eval-iterator format (video, label, mask, index, optional
        video_id); default: `self.batches()`. Every process must yield the same number.
      num_examples_kept: keep this many of process 0's real examples for pictures.
      progress: show a tqdm bar (process 0) and log progress.

    Returns:
      Results.
    """
    if plan is None:
      names = self.default_strategies() if strategies is None else tuple(strategies)
      plan = plan_from_config(self._config, names)
    if plan.needs_teacher and teacher_params is None:
      teacher_params = params
    step = self.step_fn(plan)
    params = sharding.replicate(params, self._mesh)
    teacher_params = (
      None if not plan.needs_teacher else sharding.replicate(teacher_params, self._mesh)
    )
    totals = sharding.replicate(init_totals(plan, self._model.num_frames), self._mesh)
    batches = self.batches() if batches is None else batches
    total = len(batches) if hasattr(batches, '__len__') else None
    show = progress and jax.process_index() == 0
    bar = tqdm.tqdm(total=total, desc='evaluate', unit='batch', disable=not show)
    examples: list[Example] = []
    keep = num_examples_kept if jax.process_index() == 0 and plan.has_glitr else 0
    start = time.time()
    num_batches = 0
    for batch in batches:
      host = _host_batch(batch)
      totals, per_example = step(
        params, teacher_params, sharding.to_global(host, self._mesh), totals
      )
      if len(examples) < keep:
        host['video_id'] = batch.get('video_id')
        examples.extend(_collect_examples(host, per_example, keep - len(examples)))
      num_batches += 1
      bar.update(1)
      if show and total and (num_batches % max(1, total // 10) == 0 or num_batches == total):
        logging.info('Evaluated %d/%d batches (%.1f s)', num_batches, total, time.time() - start)
    bar.close()
    if num_batches == 0:
      raise ValueError('the evaluation data yielded no batches: check data.eval_split')
    results = summarize(plan, totals)
    results.examples = examples
    if show:
      logging.info(
        'Evaluated %d examples in %.1f s: %s',
        results.num_examples,
        time.time() - start,
        ', '.join(f'{k} acc@T={v[-1]:.4f}' for k, v in results.accuracy_per_t.items()),
      )
    return results

  def __call__(
    self,
    params: Params,
    teacher_params: Params | None = None,
    strategies: Iterable[str] | None = None,
    batches: Iterable[Mapping[str, np.ndarray]] | None = None,
  ) -> dict[str, np.ndarray]:
    """{strategy: (T,) accuracy after each t}: the lean evaluation a training loop needs.

    Only the named strategies are computed (no early exit, histograms or Fig. 8b pass); see `run`
    for the arguments. `last_num_examples` holds the number of examples counted.
    """
    names = self.default_strategies() if strategies is None else tuple(strategies)
    e = self._config.eval
    plan = EvalPlan(
      strategies=strategies_lib.validate(names, 'strategies'),
      num_seeds=int(e.num_seeds),
      seed=int(e.seed),
      strategies_per_pass=int(e.strategies_per_pass),
    )
    results = self.run(params, teacher_params, plan=plan, batches=batches)
    self.last_num_examples = results.num_examples
    return results.accuracy_per_t
