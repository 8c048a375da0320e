"""Device meshes and shardings: `jax.jit` over a `Mesh` with named axes and `NamedSharding`.

Batches are split along their leading axis over the mesh's "data" axis (`P("data")`). On a
`data_mesh` parameters and optimiser state are replicated (`P()`); on a `training_mesh` with a
"latent" axis, every array with a latent dimension (`W_enc` columns, `W_dec` rows, the encoder
biases, per-latent thresholds, their Adam moments, the dead-latent counters) is split over it
(`state_shardings`), so a dictionary N times one device's memory trains on N devices. The
per-shard maths the compiler cannot find by itself (exact Top-k across shards) is in
`models.latent_shards`. The same code runs on one CPU, N forced CPU devices, a GPU, or every
device of a multi-host job.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wsae_jax import _validate as V

DATA_AXIS = "data"
LATENT_AXIS = "latent"

LATENT_DIM = {
  "W_enc": 1,
  "W_dec": 0,
  "b_enc": 0,
  "b_gate": 0,
  "b_mag": 0,
  "r_mag": 0,
  "threshold": 0,
}
"""The latent dimension of each parameter that has one, by its (SAELens) name; a parameter not
named here (`b_dec`) or of too few dimensions (BatchTopK's scalar `threshold`) is replicated."""


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named "data" over `devices` (default: every device of every process)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise V.WSAEInputError("data_mesh needs at least one device.")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def training_mesh(latent_shards: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 2-D mesh `("data", "latent")` over `devices` (default: every device of every process):
  `latent_shards` devices split each SAE's latents, and the batch is split over the
  `len(devices) // latent_shards` groups. Devices of one latent group are adjacent in `devices`
  (on one host where possible: the per-step reduction of the reconstruction runs among them)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise V.WSAEInputError("training_mesh needs at least one device.")
  V.check_int("latent_shards", latent_shards, low=1)
  if latent_shards > len(devices) or len(devices) % latent_shards:
    fits = [n for n in range(1, len(devices) + 1) if len(devices) % n == 0]
    raise V.WSAEInputError(
      f"latent_shards = {latent_shards} does not divide the {len(devices)} device(s); use one "
      f"of {fits}."
    )
  grid = np.asarray(devices).reshape(len(devices) // latent_shards, latent_shards)
  return Mesh(grid, (DATA_AXIS, LATENT_AXIS))


def latent_shard_count(mesh: Mesh) -> int:
  """How many devices split the latents on `mesh` (1 on a `data_mesh`)."""
  return int(dict(mesh.shape).get(LATENT_AXIS, 1))


def describe(mesh: Mesh) -> dict:
  """The mesh's axis sizes and platform, for run records: `{"data": 2, "latent": 4, ...}`."""
  return {
    **{str(k): int(v) for k, v in mesh.shape.items()},
    "platform": mesh.devices.flat[0].platform,
  }


def check_latent_shards(d_sae: int, mesh: Mesh) -> None:
  """Refuses a dictionary the mesh's latent axis cannot split evenly, naming the shard counts
  that divide both the devices and `d_sae`, and the nearest dictionary sizes for this count."""
  n = latent_shard_count(mesh)
  if d_sae % n == 0:
    return
  devices = mesh.devices.size
  ok = [m for m in range(1, devices + 1) if devices % m == 0 and d_sae % m == 0]
  below, above = d_sae // n * n, -(-d_sae // n) * n
  sizes = f"d_sae = {above}" if below == 0 else f"d_sae = {below} or {above}"
  raise V.WSAEInputError(
    f"d_sae = {d_sae} cannot be split over {n} latent shards (it is not a multiple of {n}); "
    f"use {sizes}, or latent shards {ok} (those that divide both d_sae and the {devices} "
    f"device(s))."
  )


def _latent_spec(name: str, ndim: int, mesh: Mesh) -> P:
  dim = LATENT_DIM.get(name)
  if dim is None or latent_shard_count(mesh) == 1 or ndim <= dim:
    return P()
  return P(*([None] * dim + [LATENT_AXIS]))


def state_shardings(
  mesh: Mesh,
  tree: Any,
  *,
  counters: tuple[str, ...] = ("tokens_since_fired",),
  lead: str | None = None,
):
  """`NamedSharding`s for a training state (or its shapes) on `mesh`: a leaf reached through a
  `LATENT_DIM` name (a parameter, or its Adam moment under the same key) is split over "latent"
  on that dimension, the per-latent `counters` on their only one; the rest is replicated.
  `lead`: the arrays have a leading axis that `tree`'s leaves do not show (a sweep's members),
  split over that mesh axis."""

  def one(path, leaf):
    keys = [getattr(p, "key", getattr(p, "name", None)) for p in path]
    if keys and keys[-1] in counters and latent_shard_count(mesh) > 1:
      spec = P(LATENT_AXIS)
    else:
      name = next((p for p in reversed(keys) if isinstance(p, str) and p in LATENT_DIM), "")
      spec = _latent_spec(name, len(np.shape(leaf)), mesh)
    return NamedSharding(mesh, P(*((lead,) if lead else ()), *spec))

  return jax.tree_util.tree_map_with_path(one, tree)


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
