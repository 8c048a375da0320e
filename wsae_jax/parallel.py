"""Device meshes and shardings: data parallelism as `jax.jit` over a `Mesh` with `NamedSharding`.

Parameters and optimiser state are replicated (`P()`); batches are split along their leading axis
over the mesh's "data" axis (`P("data")`). The same code runs on one CPU, N forced CPU devices, a
GPU, or every device of a multi-host job.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wsae_jax import _validate as V

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise V.WSAEInputError("data_mesh needs at least one device.")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise V.WSAEInputError(
      f"batch_size {batch_size} must be divisible by the {n} devices of the data mesh; use a "
      f"multiple of {n} (e.g. {max(n, batch_size // n * n)})."
    )


def serialize_collectives(mesh: Mesh) -> bool:
  """Whether each collective step must finish before the next is dispatched.

  On XLA:CPU with several devices (jaxlib 0.10.2), dispatching a jitted program with an
  all-reduce while the previous one is still running can deadlock the collective rendezvous
  ("Expected 4 threads to join the rendezvous, but only 3 of them arrived"); a plain loop of
  sharded psum steps reproduces it within seconds. Blocking on each step avoids it, at the cost of
  the (small, on CPU) overlap between Python dispatch and execution. Accelerators are unaffected.
  """
  devices = mesh.devices.flat
  return mesh.size > 1 and any(d.platform == "cpu" for d in devices)
