"""Optimiser pieces for SAEs as optax `GradientTransformation`s, composed with `optax.chain`.

* `remove_parallel_decoder_grad`: drop the gradient component parallel to each decoder row, so a
  unit-norm constraint is not fought by Adam (Bricken et al. 2023; Gao et al. 2024).
* `renormalize_decoder_rows`: a projection step; the update is rewritten so that `params + update`
  has unit-norm decoder rows.
* `make_optimizer`: the chain each architecture trains with.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from wsae_jax import sae as sae_lib

DECODER = "W_dec"


class _Empty(NamedTuple):
  pass


def _rows_unit(w):
  return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-12)


def remove_parallel_decoder_grad() -> optax.GradientTransformation:
  """Projects the `W_dec` gradient onto the tangent space of the unit-norm rows."""

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("remove_parallel_decoder_grad needs params (call update(g, s, params)).")
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
    if params is None:
      raise ValueError("renormalize_decoder_rows needs params (call update(g, s, params)).")
    if DECODER not in updates:
      return updates, state
    w = params[DECODER]
    updates = {**updates, DECODER: _rows_unit(w + updates[DECODER]) - w}
    return updates, state

  return optax.GradientTransformation(lambda _: _Empty(), update_fn)


def learning_rate_schedule(learning_rate: float, steps: int, warmup_steps: int,
                           decay_fraction: float) -> optax.Schedule:
  """Linear warm-up, constant, then a linear decay to 0 over the last `decay_fraction` of steps."""
  decay_steps = int(round(steps * decay_fraction))
  flat_steps = max(steps - warmup_steps - decay_steps, 0)
  pieces = [optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1)),
            optax.constant_schedule(learning_rate)]
  bounds = [max(warmup_steps, 1)]
  if decay_steps:
    pieces.append(optax.linear_schedule(learning_rate, 0.0, decay_steps))
    bounds.append(max(warmup_steps, 1) + flat_steps)
  return optax.join_schedules(pieces, bounds)


def make_optimizer(sae_cfg: sae_lib.SAEConfig, *, learning_rate: float, steps: int,
                   warmup_steps: int = 0, decay_fraction: float = 0.0, b1: float = 0.9,
                   b2: float = 0.999, grad_clip: float | None = None
                   ) -> optax.GradientTransformation:
  """Adam with warm-up, plus the decoder handling `sae_cfg`'s architecture needs.

  Top-k SAEs keep unit-norm decoder rows (parallel gradient removed, rows renormalised after each
  step). The ReLU SAE's L1 term is weighted by decoder norms, so its decoder is left free. The tied
  SAE has no decoder of its own.
  """
  schedule = learning_rate_schedule(learning_rate, steps, warmup_steps, decay_fraction)
  parts = []
  if isinstance(sae_cfg, sae_lib.TopKSAEConfig):
    parts.append(remove_parallel_decoder_grad())
  if grad_clip is not None:
    parts.append(optax.clip_by_global_norm(grad_clip))
  parts.append(optax.adam(schedule, b1=b1, b2=b2))
  if isinstance(sae_cfg, sae_lib.TopKSAEConfig):
    parts.append(renormalize_decoder_rows())
  return optax.chain(*parts)
