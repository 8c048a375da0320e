"""`TrainState`: everything a training step reads and writes, and how a fresh one is made."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from wsae_jax import models, parallel
from wsae_jax.training import optim
from wsae_jax.training.config import TrainConfig


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. A pytree; replicated over the data mesh, its per-latent
  arrays split over a "latent" mesh axis (`parallel.state_shardings`)."""

  step: jax.Array
  params: dict
  opt_state: Any
  tokens_since_fired: jax.Array
  """`(d_sae,)` tokens since each latent last fired (drives AuxK and dead-latent metrics)."""
  diverged_at: jax.Array
  """First step whose loss or gradient was not finite, or -1."""


def new_state(sae_cfg, train_cfg: TrainConfig, params: dict | None = None, seed=None) -> TrainState:
  """An unsharded fresh state (parameters from `seed`, default `train_cfg.seed`)."""
  if params is None:
    params = models.init(sae_cfg, jax.random.key(train_cfg.seed if seed is None else seed))
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optim.make_optimizer(sae_cfg, train_cfg).init(params),
    tokens_since_fired=jnp.zeros((sae_cfg.d_sae,), jnp.int32),
    diverged_at=jnp.full((), -1, jnp.int32),
  )


def init_state(
  sae_cfg, train_cfg: TrainConfig, *, mesh: Mesh | None = None, params: dict | None = None
) -> TrainState:
  """A fresh `TrainState`, created directly with its shardings on `mesh` (replicated, or split
  over a "latent" axis: `parallel.state_shardings`)."""
  mesh = mesh or parallel.data_mesh()
  shapes = jax.eval_shape(lambda: new_state(sae_cfg, train_cfg, params))
  if params is not None:
    # Given parameters (host arrays, the same in every process) go to each device as its own
    # share, never whole to one device.
    params = jax.tree.map(
      lambda a, sharding: jax.make_array_from_callback(
        np.shape(a), sharding, lambda index: np.asarray(a)[index]
      ),
      params,
      parallel.state_shardings(mesh, params),
    )
  return jax.jit(
    lambda p: new_state(sae_cfg, train_cfg, p),
    out_shardings=parallel.state_shardings(mesh, shapes),
  )(params)
