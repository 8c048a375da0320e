"""Evaluation: metrics of trained SAEs, scores on held-out activations, k-sparse probing and
first-letter absorption (labelled: both from token strings), per-latent examples and neighbours
(features: what `wsae report` shows), scoring of sweeps, paired statistics for studies, SynthSAEBench's metrics."""

from wsae_jax.evaluation import (  # noqa: F401
  absorption,
  activations,
  features,
  labelled,
  metrics,
  probing,
  scoring,
  stats,
  synthbench,
)
