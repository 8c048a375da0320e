"""`TrainConfig`: how to train one SAE (a frozen, checked dataclass)."""

from __future__ import annotations

import dataclasses

from wsae_jax import _validate as V
from wsae_jax.training import data_init

B_DEC_INITS = ("auto", *data_init.B_DEC_INITS)  # "auto" resolves to one of data_init's
COMPUTE_DTYPES = ("float32", "bfloat16")


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
  b_dec_init: str = "auto"
  """Initial decoder bias, from the first rows of the training data: "zeros", "mean", "median"
  (geometric median; see `data_init`), or "auto": "median" when the source can be read again from
  its start (an array, a `SyntheticSource`, an `ActivationStore`), "zeros" for an iterable of
  batches. Ignored by architectures without `b_dec`. "auto" is the recipe measured on real
  activations (experiments/REAL.md) and what `wsae train` uses."""
  compute_dtype: str = "float32"
  """dtype of the products in the loss and its gradient: "float32", or "bfloat16" (mixed
  precision: parameters, optimiser state, γ and every loss sum stay float32; the inputs and the
  parameters are cast for the encoder, selection and decoder products). bfloat16 pays on
  accelerators; on CPUs it is usually slower."""

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
    if self.compute_dtype not in COMPUTE_DTYPES:
      raise V.WSAEInputError(
        f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}."
      )
    if self.b_dec_init not in B_DEC_INITS:
      raise V.WSAEInputError(f"b_dec_init must be one of {B_DEC_INITS}, got {self.b_dec_init!r}.")


DEAD_AFTER_RUN_FRACTION = 0.05
DEAD_AFTER_MAX_TOKENS = 10_000_000
"""The dead-latent window as a fraction of the run's tokens when a config leaves it unset (the
recipe measured in experiments/REAL.md: dead latents 36% → 0.4% at 8×, 61% → 2.7% at 32×)."""


def resolve_run_defaults(sae_cfg, train_cfg: TrainConfig):
  """`sae_cfg` with the defaults that depend on the run filled in: an unset `dead_after_tokens`
  becomes `DEAD_AFTER_RUN_FRACTION` of `steps × batch_size`, at least one batch and at most
  `DEAD_AFTER_MAX_TOKENS` (a latent silent for 10M tokens is dead in any run). `train`,
  `train_sweep` and the CLI call this, so a notebook and the command line train alike."""
  if getattr(sae_cfg, "dead_after_tokens", 0) is not None:
    return sae_cfg
  run_tokens = train_cfg.steps * train_cfg.batch_size
  return dataclasses.replace(
    sae_cfg,
    dead_after_tokens=max(
      train_cfg.batch_size, min(DEAD_AFTER_MAX_TOKENS, int(DEAD_AFTER_RUN_FRACTION * run_tokens))
    ),
  )
