"""Optax transformations that keep an architecture's parameters on their constraint set.

* `remove_parallel_decoder_grad`: drop the gradient component parallel to each decoder row, so a
  unit-norm constraint is not fought by Adam (Bricken et al. 2023; Gao et al. 2024).
* `renormalize_decoder_rows`: a projection step; the update is rewritten so that `params + update`
  has unit-norm decoder rows.
* `clip_below(name, 0)`: a projection keeping a parameter (JumpReLU's threshold) >= a bound.

Architectures list the ones they need in `Architecture.optimizer_parts`; `training.optim` chains
them around clipping and Adam.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import optax

DECODER = "W_dec"


class _Empty(NamedTuple):
  pass


def _rows_unit(w):
  return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-12)


def _needs_params(name, params):
  if params is None:
    raise ValueError(f"{name} needs params (call update(g, s, params)).")


def remove_parallel_decoder_grad() -> optax.GradientTransformation:
  """Projects the `W_dec` gradient onto the tangent space of the unit-norm rows."""

  def update_fn(updates, state, params=None):
    _needs_params("remove_parallel_decoder_grad", params)
    if DECODER not in updates:
      return updates, state
    u = _rows_unit(params[DECODER])
    g = updates[DECODER]
    updates = {**updates, DECODER: g - jnp.sum(g * u, axis=-1, keepdims=True) * u}
    return updates, state

  return optax.GradientTransformation(lambda _: _Empty(), update_fn)


def renormalize_decoder_rows() -> optax.GradientTransformation:
  """Rewrites the `W_dec` update so the new decoder rows have unit norm. Place it last."""

  def update_fn(updates, state, params=None):
    _needs_params("renormalize_decoder_rows", params)
    if DECODER not in updates:
      return updates, state
    w = params[DECODER]
    updates = {**updates, DECODER: _rows_unit(w + updates[DECODER]) - w}
    return updates, state

  return optax.GradientTransformation(lambda _: _Empty(), update_fn)


def clip_below(name: str, low: float = 0.0) -> optax.GradientTransformation:
  """Rewrites the update of parameter `name` so that `params + update >= low`. Place it last."""

  def update_fn(updates, state, params=None):
    _needs_params("clip_below", params)
    if name not in updates:
      return updates, state
    p = params[name]
    updates = {**updates, name: jnp.maximum(p + updates[name], low) - p}
    return updates, state

  return optax.GradientTransformation(lambda _: _Empty(), update_fn)


def unit_norm_decoder(cfg) -> tuple[list, list]:
  """`Architecture.optimizer_parts` of the architectures with unit-norm decoder rows."""
  return [remove_parallel_decoder_grad()], [renormalize_decoder_rows()]
