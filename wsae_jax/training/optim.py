"""The optimiser: Adam with warm-up and decay, global-norm clipping, and the constraint steps an
architecture asks for (`Architecture.optimizer_parts`, e.g. unit-norm decoder rows), as one
`optax.chain`."""

from __future__ import annotations

import optax

from wsae_jax import models
from wsae_jax.training.config import TrainConfig


def learning_rate_schedule(
  learning_rate: float, steps: int, warmup_steps: int, decay_fraction: float
) -> optax.Schedule:
  """Linear warm-up, constant, then a linear decay to 0 over the last `decay_fraction` of steps."""
  decay_steps = int(round(steps * decay_fraction))
  flat_steps = max(steps - warmup_steps - decay_steps, 0)
  pieces = [
    optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1)),
    optax.constant_schedule(learning_rate),
  ]
  bounds = [max(warmup_steps, 1)]
  if decay_steps:
    pieces.append(optax.linear_schedule(learning_rate, 0.0, decay_steps))
    bounds.append(max(warmup_steps, 1) + flat_steps)
  return optax.join_schedules(pieces, bounds)


def make_optimizer(
  sae_cfg: models.SAEConfig, train_cfg: TrainConfig, *, learning_rate=None
) -> optax.GradientTransformation:
  """The optimiser chain of `train_cfg` for `sae_cfg`'s architecture.

  `[architecture's pre-steps] → clip_by_global_norm → adam(schedule) → [architecture's
  projections]`. `learning_rate` (may be traced, one per sweep member) overrides the peak rate.
  """
  lr = train_cfg.learning_rate if learning_rate is None else learning_rate
  schedule = learning_rate_schedule(
    lr, train_cfg.steps, train_cfg.warmup_steps, train_cfg.decay_fraction
  )
  before, after = models.get(sae_cfg).optimizer_parts(sae_cfg)
  clip = [] if train_cfg.grad_clip is None else [optax.clip_by_global_norm(train_cfg.grad_clip)]
  return optax.chain(*before, *clip, optax.adam(schedule, b1=train_cfg.b1, b2=train_cfg.b2), *after)
