"""`TrainConfig`: how to train one SAE (a frozen, checked dataclass)."""

from __future__ import annotations

import dataclasses

from wsae_jax import _validate as V


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
  """How to train one SAE."""

  steps: int = 2000
  """Number of optimiser steps."""
  batch_size: int = 1024
  """Examples per step (global, over all devices)."""
  learning_rate: float = 1e-3
  """Peak Adam learning rate."""
  warmup_steps: int = 100
  """Linear warm-up from 0 to the peak learning rate."""
  decay_fraction: float = 0.0
  """Fraction of the final steps over which the learning rate decays linearly to 0."""
  b1: float = 0.9
  """Adam β1."""
  b2: float = 0.999
  """Adam β2."""
  grad_clip: float | None = 1.0
  """Global gradient-norm clip (None: off)."""
  seed: int = 0
  """Seed of the parameter initialisation (data sources carry their own seeds)."""
  log_every: int = 100
  """Steps between metric records (and NaN checks)."""
  b_dec_init: str = "zeros"
  """Initial decoder bias, from the first rows of the training data: "zeros", "mean" or "median"
  (geometric median; see `data_init`). Ignored by architectures without `b_dec`."""

  def __post_init__(self):
    V.check_int("steps", self.steps, low=1)
    V.check_int("batch_size", self.batch_size, low=1)
    V.check_range("learning_rate", self.learning_rate, low=0.0, low_open=True)
    V.check_int("warmup_steps", self.warmup_steps, low=0)
    V.check_range("decay_fraction", self.decay_fraction, low=0.0, high=1.0)
    V.check_range("b1", self.b1, low=0.0, high=1.0, high_open=True)
    V.check_range("b2", self.b2, low=0.0, high=1.0, high_open=True)
    if self.grad_clip is not None:
      V.check_range("grad_clip", self.grad_clip, low=0.0, low_open=True)
    V.check_int("log_every", self.log_every, low=1)
    if self.b_dec_init not in ("zeros", "mean", "median"):
      raise V.WSAEInputError(
          f"b_dec_init must be 'zeros', 'mean' or 'median', got {self.b_dec_init!r}.")
