"""Per-input-dimension weights γ for the weighted SAE: `γ_i = s_i^α`.

`s_i` is a per-dimension score: the variance of dimension i over training activations (the paper's
choice for synthetic data and language models), or the semantic consistency of the dimension for
labelled features. With `normalize=True` (default) γ is rescaled so `mean(γ²) = 1`, which keeps the
loss on the scale of the plain SAE and makes `α = 0` exactly the plain SAE.
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from wsae_jax import _validate as V


def weights_from_scores(scores_D, alpha: float, *, normalize: bool = True,
                        name: str = "scores") -> np.ndarray:
  """`γ = scores^α`, optionally normalised to `mean(γ²) = 1`. Scores must be finite and > 0."""
  V.check_range("alpha", alpha, low=0.0)
  s = np.asarray(scores_D, np.float64)
  if s.ndim != 1:
    raise V.WSAEInputError(f"{name} must be a vector (one score per dimension), got shape {s.shape}.")
  bad = ~np.isfinite(s) | (s <= 0)
  if bad.any():
    i = int(np.argmax(bad))
    raise V.WSAEInputError(
        f"{name} must be finite and > 0 for every dimension to define γ = s^α; dimension {i} has "
        f"{s[i]!r} ({int(bad.sum())} bad in all). Drop constant dimensions or add a small floor.")
  gamma = s ** float(alpha)
  if normalize:
    gamma = gamma / np.sqrt(np.mean(gamma ** 2))
  return gamma.astype(np.float32)


def variance_weights(x_sample_BxD, alpha: float, *, normalize: bool = True) -> np.ndarray:
  """`γ_i = Var(x_i)^α` from a sample of activations `(batch, d_in)`.

  >>> x = np.array([[0., 0.], [2., 1.]])
  >>> variance_weights(x, 1.0, normalize=False).tolist()
  [1.0, 0.25]
  """
  V.check_rank("x_sample", x_sample_BxD, 2, hint="Pass a (num_samples, d_in) matrix.")
  V.check_float("x_sample", x_sample_BxD)
  V.check_finite("x_sample", x_sample_BxD)
  if np.shape(x_sample_BxD)[0] < 2:
    raise V.WSAEInputError("x_sample needs at least 2 rows to estimate a variance.")
  var = np.var(np.asarray(x_sample_BxD, np.float64), axis=0)
  return weights_from_scores(var, alpha, normalize=normalize, name="variance")


def semantic_consistency(features_BxD, labels_B, *, threshold: float = 1e-5):
  """Per-dimension semantic consistency for labelled features.

  Each sample's feature vector is L2-normalised; among samples where dimension d is active
  (`|value| > threshold`), the consistency is the fraction that share the most frequent label.

  Returns:
    `(per_dim, mean)`: `per_dim` has NaN for dimensions never active; `mean` averages the active ones.
  """
  V.check_rank("features", features_BxD, 2)
  V.check_float("features", features_BxD)
  V.check_finite("features", features_BxD)
  labels = np.asarray(labels_B)
  if labels.shape != (np.shape(features_BxD)[0],):
    raise V.WSAEInputError(
        f"labels must have shape ({np.shape(features_BxD)[0]},) (one per sample), got {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise V.WSAEInputError(f"labels must be integers (class ids), got dtype {labels.dtype}.")
  f = np.asarray(features_BxD, np.float64)
  f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  active_BxD = (np.abs(f) > threshold).astype(np.float64)
  _, inverse = np.unique(labels, return_inverse=True)
  onehot_BxC = np.eye(inverse.max() + 1)[inverse]
  counts_DxC = active_BxD.T @ onehot_BxC
  total_D = counts_DxC.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    per_dim = np.where(total_D > 0, counts_DxC.max(axis=1) / total_D, np.nan)
  alive = total_D > 0
  mean = float(per_dim[alive].mean()) if alive.any() else float("nan")
  return per_dim, mean


def consistency_weights(features_BxD, labels_B, alpha: float, *, normalize: bool = True,
                        threshold: float = 1e-5) -> np.ndarray:
  """`γ_i = consistency_i^α`; dimensions never active get the mean consistency of the rest."""
  per_dim, mean = semantic_consistency(features_BxD, labels_B, threshold=threshold)
  if np.isnan(mean):
    raise V.WSAEInputError("no feature dimension is ever active; cannot define consistency weights.")
  return weights_from_scores(np.where(np.isnan(per_dim), mean, per_dim), alpha,
                             normalize=normalize, name="consistency")


def as_gamma(gamma, d_in: int):
  """Validates an explicit γ and returns it as a float32 device array (None stays None)."""
  if gamma is None:
    return None
  V.check_gamma(gamma, d_in)
  return jnp.asarray(gamma, jnp.float32)
