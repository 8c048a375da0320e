"""Initialisation from data: the decoder bias at the geometric median or the mean of a sample.

Gao et al. (2024) and EleutherAI's sparsify start `b_dec` at a robust centre of the activations, so
that the SAE reconstructs the offset from the first step instead of spending latents (and the
first thousands of steps) on it. The encoder already starts as the decoder's transpose
(`models.base.untied_init`).
"""

from __future__ import annotations

import numpy as np

from wsae_jax import _validate as V

B_DEC_INITS = ("zeros", "mean", "median")


def geometric_median(x_BxD, *, max_iter: int = 200, tol: float = 1e-7) -> np.ndarray:
  """The point minimising the summed Euclidean distance to the rows of `x` (Weiszfeld's
  algorithm, in float64; a row that coincides with the estimate is skipped rather than dividing
  by zero). Unlike the mean, a few rows of huge norm barely move it."""
  x = np.asarray(x_BxD, np.float64)
  V.check_rank("x", x, 2)
  V.check_finite("x", x)
  m = np.median(x, axis=0)  # a robust start: fewer iterations than starting at the mean
  for _ in range(max_iter):
    d = np.linalg.norm(x - m, axis=1)
    keep = d > 1e-12
    w = 1.0 / d[keep]
    new = (w[:, None] * x[keep]).sum(0) / w.sum()
    if np.linalg.norm(new - m) <= tol * max(1.0, float(np.linalg.norm(m))):
      return new
    m = new
  return m


def b_dec_init(x_sample_BxD, how: str) -> np.ndarray | None:
  """The initial decoder bias from a sample: "median" (geometric), "mean", or None for "zeros"."""
  if how not in B_DEC_INITS:
    raise V.WSAEInputError(f"b_dec_init must be one of {B_DEC_INITS}, got {how!r}.")
  if how == "zeros":
    return None
  x = np.asarray(x_sample_BxD, np.float64)
  V.check_rank("x_sample", x, 2)
  V.check_finite("x_sample", x)
  return (geometric_median(x) if how == "median" else x.mean(0)).astype(np.float32)


def with_b_dec(params: dict, b_dec) -> dict:
  """`params` with `b_dec` replaced (architectures without a decoder bias are returned as is)."""
  if b_dec is None or "b_dec" not in params:
    return params
  b = np.asarray(b_dec, np.float32)
  if b.shape != np.shape(params["b_dec"]):
    raise V.WSAEInputError(f"b_dec has shape {b.shape}, the SAE's is {np.shape(params['b_dec'])}.")
  return {**params, "b_dec": b.astype(np.asarray(params["b_dec"]).dtype)}
