"""Evaluation: metrics of trained SAEs, scores on held-out activations, k-sparse probing, scoring
of sweeps, paired statistics for studies."""
from wsae_jax.evaluation import activations, metrics, probing, scoring, stats  # noqa: F401
