"""Evaluation: metrics of trained SAEs, scoring of sweeps, paired statistics for studies."""
from wsae_jax.evaluation import metrics, scoring, stats  # noqa: F401
