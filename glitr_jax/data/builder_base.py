"""What the video dataset builders share: features, manual-dir checks, bad videos, parallelism.

A builder lists its videos as `Job`s and names a module-level `load` function that turns one job's
payload into the example's frames; this base runs the loads (in a process pool when
`num_workers > 1`, keeping the order), raises or skips bad videos, and records the skipped ones
in the dataset's metadata (`metadata['skipped_videos']`: split -> {video_id: problem}).
"""

import dataclasses
import functools
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from glitr_jax.data import features as features_lib
from glitr_jax.data import label_files, video_io

SKIP_HINT = 'pass --skip_bad_videos (data.skip_bad_videos=True) to skip such videos and report them'


class DatasetFilesMissingError(FileNotFoundError):
  """A raw release lacks files: says which, where, and how to get them."""


@dataclasses.dataclass(frozen=True)
class Job:
  """One video to put into the dataset.

  Attributes:
    video_id: the example's `video_id` (and TFDS key).
    label: class index; -1 marks a bad label whose reason is `problem`.
    payload: what the builder's load function needs (e.g. the file path).
    problem: why the entry is bad before any file is read ('' = fine).
    source: the file that `problem` is about (a split or list file).
  """

  video_id: str
  label: int
  payload: Any
  problem: str = ''
  source: str = ''


def split_jobs(
  entries: Sequence[label_files.Entry], payload: Callable[[label_files.Entry], Any], source: str
) -> list[Job]:
  """The jobs of one split: its parsed entries, each with `payload(entry)` for the load function.

  `source` is the split or list file the entries came from (what a bad entry's error names).
  """
  return [
    Job(e.video_id, e.label, payload=payload(e), problem=e.problem, source=source) for e in entries
  ]


def _call(load: Callable[[Any], dict], job: Job) -> dict | Exception:
  """Runs `load(job.payload)`; returns the bad-input error instead of raising it."""
  if job.problem:
    return label_files.LabelFileError(job.source, job.problem)
  try:
    return load(job.payload)
  except video_io.BadVideoError as e:
    return e


class VideoBuilder(tfds.core.GeneratorBasedBuilder):
  """Base of the video builders (abstract: TFDS registers only the subclasses)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Subclasses: a sentence for the dataset description.
  DESCRIPTION = ''

  def __init__(self, *, skip_bad_videos: bool = False, num_workers: int = 1, **kwargs):
    """Args:

    skip_bad_videos: skip videos that cannot be read (and report them) instead of raising.
    num_workers: processes that decode videos while preparing (1 = in this process).
    **kwargs: `tfds.core.DatasetBuilder` arguments (data_dir, config, ...); the file format
      defaults to ArrayRecord (random access with `tfds.data_source`).
    """
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)
    self._skip_bad_videos = skip_bad_videos
    self._num_workers = max(1, int(num_workers))

  def _extra_features(self) -> dict[str, Any]:
    """Features beyond video/label/video_id/num_frames (subclasses may add some)."""
    return {}

  def _class_names(self) -> tuple[str, ...] | None:
    """Class names when known without reading raw files (else set in `_split_generators`)."""
    return None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=features_lib.video_features(self._class_names(), **self._extra_features()),
      metadata=tfds.core.MetadataDict(),
    )

  def _manual_root(self, dl_manager: tfds.download.DownloadManager) -> str:
    """The manual dir, or DatasetFilesMissingError saying where it should be and what goes in."""
    try:
      return os.fspath(dl_manager.manual_dir)
    except AssertionError as e:
      raise DatasetFilesMissingError(f'{self.name}: {e}') from e

  def _require(self, root: str, names: Sequence[str]) -> None:
    """Raises DatasetFilesMissingError listing the `names` missing under `root`."""
    missing = label_files.missing_files(root, tuple(names))
    if missing:
      raise DatasetFilesMissingError(
        f'{self.name}: the raw release in {root} lacks {", ".join(missing)}.\n'
        f'How to get the files (MANUAL_DOWNLOAD_INSTRUCTIONS in {type(self).__module__}):\n'
        f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}'
      )

  def _set_class_names(self, names: Sequence[str]) -> None:
    self.info.features['label'].names = list(names)

  def _splits(self, jobs: dict[str, list[Job]], load: Callable[[Any], dict]) -> dict[str, Iterator]:
    """The split generators for `_split_generators`; splits that list no video are left out."""
    out = {}
    for split, split_jobs in jobs.items():
      if split_jobs:
        out[split] = self._generate_examples(split, split_jobs, load)
      else:
        logging.warning('%s: the %s split lists no videos; it is left out', self.name, split)
    return out

  def _generate_examples(
    self, split: str, jobs: Sequence[Job], load: Callable[[Any], dict]
  ) -> Iterator[tuple[str, dict]]:
    """Yields (key, example) for every job whose video reads; raises or skips the others.

    Args:
      split: split name (for messages and the report).
      jobs: the videos, in order.
      load: module-level function payload -> {'video': JPEG frames, **other features}; raises
        `video_io.BadVideoError` for a bad video. Runs in worker processes when num_workers > 1.

    Yields:
      (video_id, example) in the order of `jobs`.
    """
    skipped = {}
    for job, result in zip(jobs, self._map(load, jobs)):
      if isinstance(result, Exception):
        if not self._skip_bad_videos:
          raise type(result)(result.path, f'{result.problem} ({SKIP_HINT})') from None
        skipped[job.video_id] = str(result)
        continue
      example = dict(result, label=job.label, video_id=job.video_id)
      example['num_frames'] = len(example['video'])
      yield job.video_id, example
    self._report_skipped(split, skipped)

  def _map(self, load: Callable[[Any], dict], jobs: Sequence[Job]) -> Iterator[dict | Exception]:
    """`_call(load, job)` for each job, in order, with a progress bar; in processes if asked."""
    fn = functools.partial(_call, load)
    bar = tfds.core.utils.tqdm(total=len(jobs), desc=f'Reading {self.name} videos', unit=' videos')
    with bar:
      if self._num_workers == 1 or len(jobs) < 2:
        results = map(fn, jobs)
        for result in results:
          bar.update(1)
          yield result
        return
      # 'spawn': the parent may hold TensorFlow's threads, which do not survive a fork.
      context = multiprocessing.get_context('spawn')
      with context.Pool(self._num_workers) as pool:
        for result in pool.imap(fn, jobs, chunksize=4):
          bar.update(1)
          yield result

  def _report_skipped(self, split: str, skipped: dict[str, str]) -> None:
    report = dict(self.info.metadata.get('skipped_videos', {}))
    report[split] = skipped
    self.info.metadata['skipped_videos'] = report
    if skipped:
      listing = '\n  '.join(f'{k}: {v}' for k, v in skipped.items())
      logging.warning(
        '%s/%s: skipped %d bad video(s):\n  %s', self.name, split, len(skipped), listing
      )
