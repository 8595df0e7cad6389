"""Data parallelism over every device of every host, with jax.sharding.

One mesh axis, 'data', spans the devices; the batch is split along it and parameters and
optimiser state are replicated (`mesh.param_sharding='replicated'`; the field leaves room for
FSDP-style sharding). Each host feeds its own shard of the global batch, and
`jax.make_array_from_process_local_data` assembles the global array. The same code runs on one
CPU, 8 GPUs or a TPU pod slice.
"""

from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = 'data'


def make_mesh(
  mesh_config: ml_collections.ConfigDict | None = None, devices: Sequence[jax.Device] | None = None
) -> Mesh:
  """A 1-d ('data',) mesh over `devices` (default: every device of every host).

  `mesh_config.data` (-1 = all) sets the data axis size; `mesh_config.param_sharding` must be
  'replicated' (the only layout implemented).
  """
  devices = list(jax.devices() if devices is None else devices)
  size = len(devices)
  if mesh_config is not None:
    if mesh_config.param_sharding != 'replicated':
      raise ValueError(
        f"mesh.param_sharding={mesh_config.param_sharding!r}: only 'replicated' is implemented"
      )
    wanted = mesh_config.data
    if wanted not in (-1, size):
      if wanted <= 0 or wanted > size:
        raise ValueError(f'mesh.data={wanted}: must be -1 or in 1..{size} (the device count)')
      devices, size = devices[:wanted], wanted
  return Mesh(np.asarray(devices).reshape(size), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, PartitionSpec(DATA))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = 'batch_size') -> None:
  """A global batch must split evenly over devices and hosts."""
  devices = mesh.devices.size
  if batch_size % devices:
    raise ValueError(
      f'{field}={batch_size} is not divisible by the {devices} devices of the mesh; use a '
      f'multiple of {devices}'
    )
  if batch_size % jax.process_count():
    raise ValueError(f'{field}={batch_size} is not divisible by {jax.process_count()} hosts')


def numeric(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The entries of a host batch that can live on devices (drops strings such as video ids)."""
  return {k: v for k, v in batch.items() if np.asarray(v).dtype.kind in 'biuf'}


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local batch -> global arrays sharded along 'data' (strings are dropped)."""
  sharding = batch_sharding(mesh)
  out = {}
  for key, local in numeric(batch).items():
    local = np.asarray(local)
    global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sharding, local, global_shape)
  return out


def replicate(tree, mesh: Mesh):
  """Places a pytree on every device of the mesh (of every host).

  Arrays already replicated on the mesh are kept; host values and arrays on this process's
  devices go through host memory, since a device-to-device copy cannot cross hosts (every process
  holds the same values, e.g. weights it loaded or initialised from the same seed).
  """
  target = replicated(mesh)

  def put(x):
    if isinstance(x, jax.Array):
      if x.sharding.is_equivalent_to(target, x.ndim):
        return x
      if not x.is_fully_addressable:
        return jax.device_put(x, target)
    return jax.device_put(np.asarray(x), target)

  return jax.tree.map(put, tree)
