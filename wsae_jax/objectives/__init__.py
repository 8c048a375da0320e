"""Objectives: the weighted reconstruction loss and the per-dimension weights γ."""

from wsae_jax.objectives import reconstruction, weights  # noqa: F401
from wsae_jax.objectives.reconstruction import reconstruction_loss  # noqa: F401
