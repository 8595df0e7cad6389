"""The input pipeline: a data config -> host-local batches, with grain over `tfds.data_source`.

Training (`create_train_iterator`): an infinite grain `DataLoader` over the ArrayRecord data
source; `IndexSampler` shuffles per epoch with `seed`, repeats, and gives each host a disjoint
shard (`ShardOptions(process_index, process_count)`); videos with fewer than 3 frames are dropped
(as the official training list drops them); each clip is sampled and augmented with a generator
derived from the seed and its position in the stream; `worker_count` processes decode, augment and
batch, each buffering `prefetch` batches (grain deals records to workers in turn, so which
examples share a batch depends on `worker_count`: keep it when resuming).

Checkpointing the training iterator: `get_state()` returns bytes holding JSON text (so
`json.loads(state)` works and the text can be stored anywhere), and `set_state(state)` takes them
back; the resumed iterator yields exactly the batches the uninterrupted one would have. With
orbax, save it beside the train state with grain's handler, one file per host:
`ocp.args.Composite(state=..., data=grain.checkpoint.CheckpointSave(iterator))` and
`data=grain.checkpoint.CheckpointRestore(iterator)` (the iterator is also an orbax v1
`StatefulCheckpointable`). The state checks that the dataset, sampler and worker count match.

Evaluation (`create_eval_iterator`): a finite, re-iterable sequence of padded batches; host p
reads the contiguous block [N p / P, N (p + 1) / P) of the split, and every host yields the same
number of batches (SPMD collectives need it), the tail padded with `mask=False`, `index=-1`.
"""

import dataclasses
import math
from collections.abc import Iterator

import grain as grain_lib
import grain.python as grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import flags, logging

from glitr_jax.data import clips, features, jester, rand_augment, ssv2, synthetic, video_folder
from glitr_jax.data import config as config_lib

_BUILDERS = {
  'something_something_v2': ssv2.SomethingSomethingV2,
  'jester': jester.Jester,
  'video_folder': video_folder.VideoFolder,
  'glitr_synthetic': synthetic.GlitrSynthetic,
}


class DatasetNotPreparedError(FileNotFoundError):
  """The dataset's TFDS files are not in data_dir: says how to prepare them."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the trainers and evaluation need to know about a prepared dataset.

  Attributes:
    name: the TFDS name (`data.name`).
    config_name: the TFDS builder config.
    num_classes: C.
    class_names: the C names in index order.
    num_examples: split -> number of examples stored.
    data_dir: the prepared dataset's directory.
    skipped_videos: split -> {video_id: problem} skipped while preparing.
  """

  name: str
  config_name: str
  num_classes: int
  class_names: tuple[str, ...]
  num_examples: dict[str, int]
  data_dir: str
  skipped_videos: dict[str, dict[str, str]]


def make_builder(
  data_config: ml_collections.ConfigDict, **builder_kwargs
) -> tfds.core.DatasetBuilder:
  """The TFDS builder (with its builder config) that `data_config` names.

  Args:
    data_config: the `data` section.
    **builder_kwargs: e.g. `skip_bad_videos`, `num_workers` (for preparing).

  Returns:
    An instance of the registered builder class; data_dir '' means TFDS's default.
  """
  config_lib.validate(data_config)
  name = data_config.name
  if name == 'something_something_v2':
    config = ssv2.ssv2_config(int(data_config.frame_height))
  elif name == 'video_folder':
    vf = data_config.video_folder
    config = video_folder.VideoFolderConfig(
      name=vf.config_name,
      frames_dir=vf.frames_dir,
      category_file=vf.category_file,
      train_list=vf.train_list,
      val_list=vf.val_list,
      frame_template=vf.frame_template,
    )
  elif name == 'glitr_synthetic':
    config = synthetic.synthetic_config(
      synthetic.SyntheticParams.from_config(data_config.synthetic)
    )
  else:
    config = None
  cls = _BUILDERS[name]
  if config is not None:
    config = _registered_or_custom(cls, config)
  return cls(data_dir=data_config.data_dir or None, config=config, **builder_kwargs)


def _own_fields(config: tfds.core.BuilderConfig) -> dict:
  base = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
  return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in base}


def _registered_or_custom(cls, config: tfds.core.BuilderConfig) -> tfds.core.BuilderConfig | str:
  """A registered config by its name (TFDS refuses a copy of it, e.g. one unpickled in a grain
  worker); any other config as it is."""
  registered = cls.builder_configs.get(config.name)
  if registered is None:
    return config
  if _own_fields(registered) != _own_fields(config):
    raise ValueError(
      f'{cls.name}: the builder config name {config.name!r} belongs to {_own_fields(registered)}, '
      f'but the data config asks for {_own_fields(config)}; give this layout its own name '
      '(data.video_folder.config_name / --config_name)'
    )
  return registered.name


def prepared_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The builder of a prepared dataset; `glitr_synthetic` is built on first use (seconds).

  Raises:
    DatasetNotPreparedError: a real dataset that was not prepared in `data.data_dir`.
  """
  builder = make_builder(data_config)
  if builder.is_prepared():
    return builder
  if data_config.name == 'glitr_synthetic':
    # In this process: ~3 ms a video, and worker processes would take seconds to start.
    logging.info(
      'Building %s/%s in %s', builder.name, builder.builder_config.name, builder.data_dir
    )
    try:
      builder.download_and_prepare()
    except OSError:
      # Several hosts sharing data_dir build the same files; TFDS writes each build into its
      # own temporary folder and renames it, so one of them may find the target taken.
      builder = make_builder(data_config)
      if not builder.is_prepared():
        raise
    return builder
  manual = data_config.manual_dir or '<the raw release>'
  data_dir = data_config.data_dir or '~/tensorflow_datasets'
  raise DatasetNotPreparedError(
    f'{builder.name}/{builder.builder_config.name if builder.builder_config else ""} is not '
    f'prepared in {builder.data_dir}. Prepare it once with\n'
    f'  python -m glitr_jax.data.prepare --dataset={data_config.name} --manual_dir={manual} '
    f'--data_dir={data_dir}\n'
    f'How to get the raw files: MANUAL_DOWNLOAD_INSTRUCTIONS in {type(builder).__module__}.'
  )


def prepare_dataset(data_config: ml_collections.ConfigDict, *, num_workers: int = 1) -> DatasetInfo:
  """Builds the dataset `data_config` names, if not built yet (`python -m glitr_jax.data.prepare`).

  Args:
    data_config: the `data` section (name, manual_dir, data_dir, skip_bad_videos, and the
      dataset's own fields).
    num_workers: processes decoding videos.

  Returns:
    The prepared dataset's DatasetInfo.
  """
  builder = make_builder(
    data_config, skip_bad_videos=bool(data_config.skip_bad_videos), num_workers=num_workers
  )
  download_config = tfds.download.DownloadConfig(manual_dir=data_config.manual_dir or None)
  builder.download_and_prepare(download_config=download_config)
  return dataset_info(data_config)


def dataset_info(data_config: ml_collections.ConfigDict) -> DatasetInfo:
  """Classes and split sizes of the dataset `data_config` names (preparing glitr_synthetic)."""
  builder = prepared_builder(data_config)
  info = builder.info
  names = tuple(info.features['label'].names)
  return DatasetInfo(
    name=builder.name,
    config_name=builder.builder_config.name if builder.builder_config else '',
    num_classes=len(names),
    class_names=names,
    num_examples={split: int(s.num_examples) for split, s in info.splits.items()},
    data_dir=str(builder.data_dir),
    skipped_videos=dict(info.metadata.get('skipped_videos', {})) if info.metadata else {},
  )


def _data_source(data_config: ml_collections.ConfigDict, split: str):
  """Random-access source of a split; `video` stays JPEG bytes (decoded per sampled frame)."""
  builder = prepared_builder(data_config)
  if split not in builder.info.splits:
    raise ValueError(
      f'split {split!r} is not in {builder.name} (splits: {sorted(builder.info.splits)})'
    )
  return builder.as_data_source(split=split, decoders={'video': features.KeepEncoded()})


def _clip_spec(data_config, num_frames: int, image_size: int, train: bool) -> clips.ClipSpec:
  aug = data_config.augment
  if data_config.eval_short_side < image_size:
    raise ValueError(
      f'data.eval_short_side={data_config.eval_short_side} is smaller than image_size='
      f'{image_size}: the centre crop would not fit'
    )
  if not train:
    return clips.ClipSpec(num_frames, image_size, int(data_config.eval_short_side))
  return clips.ClipSpec(
    num_frames=num_frames,
    image_size=image_size,
    eval_short_side=int(data_config.eval_short_side),
    rand_augment=rand_augment.RandAugment.parse(aug.rand_augment) if aug.rand_augment else None,
    random_resized_crop=bool(aug.random_resized_crop),
    scale=tuple(float(s) for s in aug.scale),
    ratio=tuple(float(r) for r in aug.ratio),
    random_erasing=float(aug.random_erasing),
    device=bool(aug.device),
    canvas=(int(aug.device_canvas[0]), int(aug.device_canvas[1])),
  )


def _hosts(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else int(process_index)
  count = jax.process_count() if process_count is None else int(process_count)
  if not 0 <= index < count:
    raise ValueError(f'process_index={index} must be in [0, process_count={count})')
  return index, count


def _local_batch_size(batch_size: int, process_count: int) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(
      f'batch_size={batch_size} (global) must be a positive multiple of the process count '
      f'{process_count}'
    )
  return batch_size // process_count


def _sampler_seed(seed: int) -> int:
  """A 31-bit seed scrambled from `seed`.

  grain draws clip k's generator from Philox(key=seed + k): with raw seeds, runs with seeds s and
  s + 1 would share their augmentation draws shifted by one clip.
  """
  return int(np.random.SeedSequence(int(seed)).generate_state(1)[0] >> 1)


def _allow_worker_processes(worker_count: int) -> None:
  """grain's worker processes read absl flags: outside `absl.app.run` (tests, notebooks) the
  flags are marked parsed with their defaults, instead of failing on the first batch."""
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    logging.info('absl flags were not parsed; using their defaults for grain worker processes')
    flags.FLAGS.mark_as_parsed()


def _read_options(local_batch: int) -> grain.ReadOptions:
  # A record is a whole video of JPEG frames (~0.5 MB for SSv2): keep a few batches in flight.
  return grain.ReadOptions(num_threads=4, prefetch_buffer_size=max(16, 2 * local_batch))


def create_train_iterator(
  data_config: ml_collections.ConfigDict,
  *,
  batch_size: int,
  num_frames: int,
  image_size: int,
  seed: int,
  process_index: int | None = None,
  process_count: int | None = None,
) -> grain_lib.DataLoaderIterator:
  """An infinite iterator of this host's training batches.

  Args:
    data_config: the `data` section (`train_split`, `augment`, `worker_count`, `prefetch`,
      `offline_logits`, ...).
    batch_size: the GLOBAL batch size; each host yields batch_size // process_count examples.
    num_frames: T, frames per clip.
    image_size: side of the output frames.
    seed: shuffling (per epoch) and augmentation seed; the same on every host.
    process_index: this host (default jax.process_index()).
    process_count: number of hosts (default jax.process_count()).

  Returns:
    A grain DataLoaderIterator yielding dicts of NumPy arrays: `video` float32
    (b, T, image_size, image_size, 3) ImageNet-normalised, `label` int32 (b,), and
    `offline_logits` float32 (b, C') when `data.offline_logits` is set. With
    `data.augment.device` the batches hold, instead of `video`, the frames and draws that
    `glitr_jax.data.device_augment.augment_batch` turns into it in the train step
    (`clips.device_train_clip`). It has `get_state() -> bytes` (JSON text) and
    `set_state(bytes)`; see the module docstring.
  """
  index, count = _hosts(process_index, process_count)
  local_batch = _local_batch_size(batch_size, count)
  source = _data_source(data_config, data_config.train_split)
  if len(source) == 0:
    raise ValueError(f'{data_config.name}/{data_config.train_split} has no examples')
  offline = clips.OfflineLogits(data_config.offline_logits) if data_config.offline_logits else None
  shard = grain.ShardOptions(shard_index=index, shard_count=count, drop_remainder=False)
  sampler = grain.IndexSampler(
    num_records=len(source),
    shard_options=shard,
    shuffle=True,
    num_epochs=None,
    seed=_sampler_seed(seed),
  )
  operations = [
    clips.LongEnough(),
    clips.TrainClip(_clip_spec(data_config, num_frames, image_size, train=True), offline),
    grain.Batch(batch_size=local_batch, drop_remainder=True),
  ]
  _allow_worker_processes(int(data_config.worker_count))
  loader = grain.DataLoader(
    data_source=source,
    sampler=sampler,
    operations=operations,
    worker_count=int(data_config.worker_count),
    worker_buffer_size=int(data_config.prefetch),
    shard_options=shard,
    read_options=_read_options(local_batch),
  )
  logging.info(
    'Training data: %s/%s, %d examples, host %d/%d reads %d per batch, %d workers',
    data_config.name,
    data_config.train_split,
    len(source),
    index,
    count,
    local_batch,
    data_config.worker_count,
  )
  return iter(loader)


def eval_host_indices(
  num_examples: int, batch_size: int, process_index: int, process_count: int
) -> np.ndarray:
  """The global example indices host `process_index` evaluates, padded with -1.

  Host p takes the contiguous block [N p / P, N (p + 1) / P); every host gets
  ceil(ceil(N / P) / batch_size) batches, so the blocks are padded to that many examples.

  Returns:
    int64 (num_batches * batch_size,).
  """
  start = num_examples * process_index // process_count
  stop = num_examples * (process_index + 1) // process_count
  per_host = math.ceil(num_examples / process_count)
  num_batches = math.ceil(per_host / batch_size)
  out = np.full(num_batches * batch_size, -1, np.int64)
  out[: stop - start] = np.arange(start, stop)
  return out


class EvalIterable:
  """A host's evaluation batches; iterate it as often as needed (each pass starts afresh).

  `len()` is the number of batches, the same on every host.
  """

  def __init__(
    self, source, indices: np.ndarray, local_batch: int, spec: clips.ClipSpec, data_config
  ):
    self._source = source
    self._indices = indices
    self._local_batch = local_batch
    self._spec = spec
    self._worker_count = int(data_config.worker_count)
    self._prefetch = int(data_config.prefetch)

  def __len__(self) -> int:
    return len(self._indices) // self._local_batch

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    if len(self) == 0:
      return iter(())
    dataset = (
      grain.MapDataset.source(self._indices.tolist())
      .map(clips.EvalClip(self._source, self._spec))
      .batch(self._local_batch, drop_remainder=True)
      .to_iter_dataset(_read_options(self._local_batch))
    )
    if self._worker_count > 0:
      _allow_worker_processes(self._worker_count)
      dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(
          num_workers=self._worker_count, per_worker_buffer_size=self._prefetch
        )
      )
    return iter(dataset)


def create_eval_iterator(
  data_config: ml_collections.ConfigDict,
  *,
  batch_size: int,
  num_frames: int,
  image_size: int,
  split: str | None = None,
  process_index: int | None = None,
  process_count: int | None = None,
  max_examples: int = -1,
) -> EvalIterable:
  """This host's evaluation batches: every example of the split once over all hosts.

  Args:
    data_config: the `data` section.
    batch_size: the GLOBAL batch size (a multiple of the process count).
    num_frames: T.
    image_size: side of the output frames (centre crop after resizing the short side to
      `data.eval_short_side`).
    split: default `data.eval_split`.
    process_index: this host (default jax.process_index()).
    process_count: number of hosts (default jax.process_count()).
    max_examples: > 0: only the split's first `max_examples` examples.

  Returns:
    An `EvalIterable` of dicts: `video` float32 (b, T, S, S, 3), `label` int32 (b,), `mask` bool
    (b,) (False = padding), `index` int64 (b,) (global example index, -1 = padding), `video_id`
    NumPy str (b,) ('' = padding); b = batch_size // process_count. The last batches are padded,
    never dropped, and every host yields the same number of batches.
  """
  index, count = _hosts(process_index, process_count)
  local_batch = _local_batch_size(batch_size, count)
  split = split or data_config.eval_split
  source = _data_source(data_config, split)
  num_examples = len(source) if max_examples <= 0 else min(int(max_examples), len(source))
  indices = eval_host_indices(num_examples, local_batch, index, count)
  spec = _clip_spec(data_config, num_frames, image_size, train=False)
  return EvalIterable(source, indices, local_batch, spec, data_config)
