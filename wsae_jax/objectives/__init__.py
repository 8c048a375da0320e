"""Objectives: the weighted reconstruction loss and the per-dimension weights γ."""

from typing import TYPE_CHECKING

from wsae_jax import _lazy

if TYPE_CHECKING:
  from wsae_jax.objectives import reconstruction, weights  # noqa: F401
  from wsae_jax.objectives.reconstruction import reconstruction_loss  # noqa: F401

# Imported on first use (`wsae train --help` lists `training.gamma.KINDS` without JAX).
__getattr__, __dir__ = _lazy.attach(
  __name__,
  globals(),
  ("reconstruction", "weights"),
  {"reconstruction_loss": "wsae_jax.objectives.reconstruction"},
)
