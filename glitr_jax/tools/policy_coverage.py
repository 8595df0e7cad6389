r"""Where the glimpse policies of a demo run look, against the true target (`glitr_synthetic` only).

  python -m glitr_jax.tools.policy_coverage --workdir=/tmp/glitr_demo [--num_videos=400] \
      [--out=/tmp/glitr_demo/coverage.json]

The synthetic benchmark knows where its target is in every frame (`target_xy`), so a policy can be
judged by what its glimpses cover, not only by the accuracy a classifier makes of them. For each
trained stage in the workdir (`teacher`, `student`, `baseline`; or the workdir itself if it is
one stage's), the tool renders the first `--num_videos` validation videos, runs the policies
below, and reports the share of the target's pixels that each glimpse reads (its bilinear
footprint, `glitr_jax.glimpse.footprint`; the target is its square with the outline):

  teacher                the teacher's Tl on its full-frame features (the 'teacher' strategy)
  teacher_from_glimpses  the teacher's weights run as a student (its Tl on its own glimpses: the
                         policy a student inherits before it has learned anything)
  student, baseline      each student's own policy (the 'glitr' strategy)

Per policy: `in_view_per_t` (share of videos with any target pixel in view), `quarter_per_t`
(at least a quarter of the target in view), `mean_per_t` (the mean share), for the policies that
run on glimpses `accuracy_per_t` (their own classifier on those glimpses: for
`teacher_from_glimpses`, what a student starts from), and per place (the
class's place, `data.synthetic.num_places` > 0; on a ring, `ring_radius` > 0, the sector of the
target's first colour pair with `ring_arc` > 0, else the quadrant of its path, `ring_quadrant`)
the same over t = 2..T (the first glimpse is at
the learned `init_loc`, before the policy has seen anything). README.md's demo section counts a
place as seen by `quarter` (a policy can read the target's colours from less: `in_view` bounds
what it can see at all).

`location_pull` (teacher stages) is what the teacher's consistency terms ask of its glimpse
locations: the teacher's Tl learns only through them (docs/design.md 2.3), as the negative
gradient of `loss.spatial * MSE + loss.temporal * KL` (frozen copies on glimpses at its locations
against its full-frame features and logits) with respect to each location. Per band of the
distance in pixels from a glimpse's centre to the target's (`PULL_BANDS_PX`): how many glimpses
(`count`), the share whose pull points within 90 degrees of the target (`towards`; 0.5 is no
signal), and the mean cosine between the pull and the direction to the target (`mean_cos`).

`position_r2` (teacher stages) is how much the teacher's full-frame features, the only input of
its Tl, say where the target is: the held-out R^2 of a linear read-out of the target's position
from them (`position_readout`): whether the policy's input could tell it where to look, apart
from whether its training signal (`location_pull`) teaches it to.
"""

import json
import os

import jax
import numpy as np
from absl import app, flags

from glitr_jax import glimpse, inference, losses, pixels, weights
from glitr_jax.data import synthetic
from glitr_jax.models import glitr

FLAGS = flags.FLAGS
STAGES = ('teacher', 'student', 'baseline')
QUARTER = 0.25
# Edges of the distance bands of `location_pull`, in pixels; the last band is open.
PULL_BANDS_PX = (0, 6, 12, 20, 40)


def target_share(
  locations_bt2: np.ndarray,
  target_xy_bt2: np.ndarray,
  glimpse_pixels: int,
  frame_size: int,
  target_size: float,
) -> np.ndarray:
  """The share of the target's pixels that each glimpse reads.

  Args:
    locations_bt2: (B, T, 2) glimpse locations (lx, ly), normalised (docs/design.md 1.3).
    target_xy_bt2: (B, T, 2) the target's centres in the same coordinates.
    glimpse_pixels: the glimpse's side in frame pixels.
    frame_size: the square frame's side in pixels.
    target_size: the target square's side in pixels, without its 1-px outline.

  Returns:
    (B, T) float64 in [0, 1]: pixels of the target (its square and outline, pixel centres within
    target_size / 2 + 1 of its centre on both axes) inside the glimpse's footprint, over all of
    the target's pixels.
  """
  b, t, _ = locations_bt2.shape
  if target_xy_bt2.shape != locations_bt2.shape:
    raise ValueError(f'target_xy {target_xy_bt2.shape} and locations {locations_bt2.shape} differ')
  seen_nhw = np.asarray(
    glimpse.footprint(
      np.asarray(locations_bt2, np.float32).reshape(b * t, 2),
      glimpse_pixels,
      (frame_size, frame_size),
    )
  )
  centre_n2 = (np.asarray(target_xy_bt2, np.float64).reshape(b * t, 2) + 1) * (frame_size - 1) / 2
  coords = np.arange(frame_size)
  reach = target_size / 2 + 1
  in_x_nw = np.abs(coords[None, :] - centre_n2[:, :1]) <= reach
  in_y_nh = np.abs(coords[None, :] - centre_n2[:, 1:]) <= reach
  target_nhw = in_y_nh[:, :, None] & in_x_nw[:, None, :]
  size_n = target_nhw.sum((1, 2))
  if np.any(size_n == 0):
    raise ValueError('a target centre lies outside the frame')
  return ((target_nhw & seen_nhw).sum((1, 2)) / size_n).reshape(b, t)


def ring_quadrant(target_xy_bt2: np.ndarray) -> np.ndarray:
  """The quadrant (0..3) of each video's mean target position round the frame's centre, for a
  ring benchmark (`data.synthetic.ring_radius` > 0): 0 bottom right, 1 bottom left, 2 top left,
  3 top right (ly points down; the angle grows clockwise on screen from the right).

  Args:
    target_xy_bt2: (B, T, 2) target centres in normalised coordinates.

  Returns:
    int (B,).
  """
  mean = np.asarray(target_xy_bt2).mean(axis=1)
  angle = np.mod(np.arctan2(mean[:, 1], mean[:, 0]), 2 * np.pi)
  return np.minimum((angle // (np.pi / 2)).astype(int), 3)


def summarise(share_bt: np.ndarray, places_b: np.ndarray | None) -> dict:
  """Per-t and per-place figures of one policy (see the module docstring)."""
  out = {
    'in_view_per_t': (share_bt > 0).mean(0).tolist(),
    'quarter_per_t': (share_bt >= QUARTER).mean(0).tolist(),
    'mean_per_t': share_bt.mean(0).tolist(),
  }
  if places_b is not None:
    out['per_place'] = {}
    for place in np.unique(places_b):
      later = share_bt[places_b == place, 1:]
      out['per_place'][str(int(place))] = {
        'videos': len(later),
        'in_view': float((later > 0).mean()),
        'quarter': float((later >= QUARTER).mean()),
      }
  return out


def consistency_pull(
  model: glitr.GliTr, params, frames_bthwc, locations_bt2, spatial: float, temporal: float
) -> jax.Array:
  """-d/dl of the teacher's consistency terms at glimpse locations l (B, T, 2), deterministic.

  The terms are the teacher objective's (glitr_jax.losses.teacher_objective): the frozen copies'
  features and logits on glimpses at `locations_bt2` against the teacher's on full frames,
  weighted `spatial` and `temporal`.
  """
  teacher = model.teacher_forward(params, frames_bthwc)

  def terms(locations):
    glimpsed = model.student_forward(params, frames_bthwc, locations=locations)
    return spatial * losses.mse(glimpsed['features'], teacher['features']) + temporal * losses.kl(
      glimpsed['logits'], teacher['logits']
    )

  return -jax.grad(terms)(locations_bt2)


def pull_towards_target(
  pull_bt2: np.ndarray, locations_bt2: np.ndarray, target_xy_bt2: np.ndarray, frame_size: int
) -> list[dict]:
  """Per distance band (PULL_BANDS_PX): count, share pulled towards the target, mean cosine.

  Distances are between the glimpse's and the target's centres, in pixels of a square frame of
  `frame_size`; glimpses exactly on the target's centre or with no pull have no direction and
  count in no band.
  """
  to_target = np.asarray(target_xy_bt2, np.float64) - np.asarray(locations_bt2, np.float64)
  pull = np.asarray(pull_bt2, np.float64)
  distance = np.linalg.norm(to_target, axis=-1)
  norms = distance * np.linalg.norm(pull, axis=-1)
  directed = norms > 0
  cos = np.sum(pull * to_target, axis=-1) / np.where(directed, norms, 1.0)
  px = distance * (frame_size - 1) / 2
  edges = PULL_BANDS_PX + (np.inf,)
  bands = []
  for lo, hi in zip(edges[:-1], edges[1:]):
    inside = directed & (px >= lo) & (px < hi)
    band = {'from_px': lo, 'to_px': hi if np.isfinite(hi) else None, 'count': int(inside.sum())}
    if inside.any():
      band['towards'] = float((cos[inside] > 0).mean())
      band['mean_cos'] = float(cos[inside].mean())
    bands.append(band)
  return bands


def position_readout(features_btd: np.ndarray, target_xy_bt2: np.ndarray) -> float:
  """Held-out R^2 of a linear read-out of the target's position from per-frame features.

  A least-squares fit (with a bias) from features (B, T, D) to positions (B, T, 2) on the first
  half of the videos, scored on the second half: 1 - squared error / the positions' variance
  about their held-out mean, over both coordinates. Near 1: the features say where the target
  is; near 0 or below: a linear map of them does not.
  """
  features = np.asarray(features_btd, np.float64)
  xy = np.asarray(target_xy_bt2, np.float64)
  b = features.shape[0]
  if b < 2:
    raise ValueError(f'position_readout needs >= 2 videos (fit and held-out halves), got {b}')
  half = b // 2
  design = np.concatenate([features, np.ones(features.shape[:2] + (1,))], axis=-1)
  fit = design[:half].reshape(-1, design.shape[-1])
  weights_d2, *_ = np.linalg.lstsq(fit, xy[:half].reshape(-1, 2), rcond=None)
  held = xy[half:].reshape(-1, 2)
  error = held - design[half:].reshape(-1, design.shape[-1]) @ weights_d2
  return float(1 - np.sum(error**2) / np.sum((held - held.mean(0)) ** 2))


def _stage_dirs(workdir: str) -> dict[str, str]:
  """{stage: directory} of the trained stages in a pipeline workdir, or the workdir itself."""
  found = {s: os.path.join(workdir, s) for s in STAGES}
  found = {s: d for s, d in found.items() if os.path.exists(os.path.join(d, 'config.json'))}
  if found:
    return found
  if os.path.exists(os.path.join(workdir, 'config.json')):
    stage = weights.read_workdir_config(workdir).stage
    return {'teacher' if stage == 'teacher' else 'student': workdir}
  raise FileNotFoundError(
    f'{workdir}: no config.json in it or in its {"/, ".join(STAGES)}/ (not a glitr-jax workdir)'
  )


def policy_coverage(workdir: str, num_videos: int = 400) -> dict:
  """The report (module docstring) for every trained stage in `workdir`."""
  dirs = _stage_dirs(workdir)
  config = weights.read_workdir_config(next(iter(dirs.values())))
  if config.data.name != 'glitr_synthetic':
    raise ValueError(
      f'{workdir}: data.name is {config.data.name!r}; only glitr_synthetic knows its targets'
    )
  params = synthetic.SyntheticParams.from_config(config.data.synthetic)
  mc = config.model
  if (params.frame_size, params.num_frames) != (mc.image_size, mc.num_frames):
    # The videos go to the model as rendered; the evaluation would resample other sizes.
    raise ValueError(
      f'{workdir}: data.synthetic renders {params.num_frames} frames of {params.frame_size} px, '
      f'the model takes {mc.num_frames} of {mc.image_size}: the tool needs them equal'
    )
  if num_videos < 1:
    raise ValueError(f'--num_videos must be >= 1, not {num_videos}')
  labels = synthetic.labels_for_split(params, 'validation')[:num_videos]
  videos, target_xy = zip(
    *(synthetic.render_video(params, int(label), 'validation', i) for i, label in enumerate(labels))
  )
  frames = pixels.normalize(np.stack(videos).astype(np.float32), 255.0)
  target_xy = np.stack(target_xy)
  if params.ring_arc > 0:  # the ring's sector, which the first colour pair picks
    places = np.array([params.phase_identities(params.split_label(int(y))[1])[0] for y in labels])
  elif params.ring_radius > 0:
    places = ring_quadrant(target_xy)
  elif params.num_places:
    places = np.array([params.split_label(int(y))[0] for y in labels])
  else:
    places = None

  def judge(locations, glimpse_logits=None):
    share = target_share(
      np.asarray(locations),
      target_xy,
      mc.glimpse_patches * mc.patch_size,
      mc.image_size,
      params.target_size,
    )
    out = summarise(share, places)
    if glimpse_logits is not None:  # the classifier that read these glimpses
      right = np.asarray(glimpse_logits).argmax(-1) == labels[:, None]
      out['accuracy_per_t'] = right.mean(0).tolist()
    return out

  report = {'workdir': workdir, 'num_videos': len(labels), 'policies': {}}
  for stage, directory in dirs.items():
    stage_config = weights.read_workdir_config(directory)
    variables = {'params': weights.load_params(directory, stage_config.model)[0]}
    student = inference.student_forward(variables, stage_config.model, frames)
    if stage == 'teacher':
      teacher = inference.teacher_forward(variables, stage_config.model, frames)
      report['policies']['teacher'] = judge(teacher['locations'])
      report['policies']['teacher_from_glimpses'] = judge(student['locations'], student['logits'])
      pull = jax.jit(consistency_pull, static_argnums=0, static_argnames=('spatial', 'temporal'))(
        inference.model_for(stage_config.model),
        variables['params'],
        frames,
        teacher['locations'],
        spatial=float(stage_config.loss.spatial),
        temporal=float(stage_config.loss.temporal),
      )
      report['location_pull'] = pull_towards_target(
        pull, teacher['locations'], target_xy, mc.image_size
      )
      report['position_r2'] = position_readout(teacher['features'], target_xy)
    else:
      report['policies'][stage] = judge(student['locations'], student['logits'])
  return report


def format_report(report: dict) -> str:
  """A plain-text table: per policy, the shares per t and per place."""
  lines = [f'{report["workdir"]}: {report["num_videos"]} validation videos']
  for name, p in report['policies'].items():
    lines.append(f'{name}')
    for key in ('in_view_per_t', 'quarter_per_t', 'accuracy_per_t'):
      if key in p:
        lines.append(f'  {key:15s} ' + ' '.join(f'{v:5.2f}' for v in p[key]))
    for place, q in p.get('per_place', {}).items():
      lines.append(
        f'  place {place} (t >= 2, {q["videos"]} videos): in view {q["in_view"]:.2f}, '
        f'a quarter {q["quarter"]:.2f}'
      )
  if 'position_r2' in report:
    lines.append(
      "position_r2 (the target's position, read linearly from the teacher's full-frame "
      f'features; held-out R^2): {report["position_r2"]:.2f}'
    )
  if 'location_pull' in report:
    lines.append("location_pull (the teacher's consistency terms on its locations), by distance")
    for band in report['location_pull']:
      to = band['to_px'] if band['to_px'] is not None else 'inf'
      row = f'  {band["from_px"]:>3}-{to:<3} px: {band["count"]:6d} glimpses'
      if band['count']:
        row += f', towards it {band["towards"]:.2f}, mean cosine {band["mean_cos"]:+.2f}'
      lines.append(row)
  return '\n'.join(lines)


def main(argv):
  del argv
  report = policy_coverage(FLAGS.workdir, FLAGS.num_videos)
  print(format_report(report))
  if FLAGS.out:
    with open(FLAGS.out, 'w') as f:
      json.dump(report, f, indent=1)


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'a demo workdir (or one stage of it)', required=True)
  flags.DEFINE_integer('num_videos', 400, 'how many validation videos (the first ones)')
  flags.DEFINE_string('out', '', 'also write the report here (JSON)')
  app.run(main)
