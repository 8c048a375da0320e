"""Per-input-dimension weights γ for the weighted SAE: `γ_i = s_i^α`.

`s_i` is a per-dimension score: the variance of dimension i over training activations (the paper's
choice for synthetic data and language models), or the semantic consistency of the dimension for
labelled features. With `normalize=True` (default) γ is rescaled so `mean(γ²) = 1`, which keeps the
loss on the scale of the plain SAE and makes `α = 0` exactly the plain SAE.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Protocol

import numpy as np

from wsae_jax import _validate as V

# When γ concentrates on few dimensions the WSAE stops reconstructing the rest. Measured: on every
# synthetic geometry of experiments/reproduce.py, γ = Var^α (α <= 1) gives the top dimension at
# most 8% of Σγ² and >= 17 of 20 effective dimensions; on SmolLM2 layer 15 (REAL.md) one massive
# dimension held 71% (α = 0.5) and 99.5% (α = 1) and the LM loss recovered fell from 0.987 to
# 0.928 and 0.692. The defaults sit between the benign and the harmful cases.
MAX_SHARE = 0.25
"""A warning is raised when one dimension holds more than this share of Σγ²."""
MIN_EFFECTIVE_FRACTION = 0.1
"""…or when the effective number of dimensions (Σγ²)²/Σγ⁴ falls below this fraction of d_in."""
NEGLECT_RATIO = 4.0
"""…or (α < 0's danger) when a dimension holding more than `MAX_SHARE` of the activations'
variance gets less than 1/NEGLECT_RATIO of that share in the weighted loss γ²·Var: the WSAE
then barely reconstructs the dimension that carries most of the signal."""


@dataclasses.dataclass(frozen=True)
class GammaReport:
  """How the weight of a WSAE's loss is spread over the input dimensions."""

  share_D: np.ndarray
  """`γ_i² / Σγ²`: each dimension's share of the loss weight."""
  top_dim: int
  """The dimension with the largest share."""
  top_share: float
  top_1pct_share: float
  """Share held by the top 1% of dimensions (at least one)."""
  effective_dims: float
  """`(Σγ²)² / Σγ⁴`: d_in for a uniform γ, 1 when one dimension holds everything."""
  variance_share_D: np.ndarray | None = None
  """`Var_i / ΣVar` of the activations γ weights (None when no sample was given)."""
  loss_share_D: np.ndarray | None = None
  """`γ_i² Var_i / Σ γ² Var`: each dimension's share of the weighted loss of reconstructing
  nothing (None when no sample was given)."""

  @property
  def d_in(self) -> int:
    return int(self.share_D.shape[0])

  def summary(self) -> str:
    return (
      f"γ: top dimension {self.top_dim} holds {self.top_share:.1%} of Σγ², the top 1% "
      f"{self.top_1pct_share:.1%}; effective dimensions {self.effective_dims:.1f} of "
      f"{self.d_in}"
    )

  def problems(
    self, max_share: float = MAX_SHARE, min_effective_fraction: float = MIN_EFFECTIVE_FRACTION
  ) -> list[str]:
    """What makes this γ dangerous (empty when nothing does)."""
    out = []
    if self.top_share > max_share:
      out.append(
        f"dimension {self.top_dim} holds {self.top_share:.1%} of the loss weight Σγ² "
        f"(more than {max_share:.0%}): the WSAE will mostly reconstruct that one "
        f"dimension"
      )
    if self.effective_dims < min_effective_fraction * self.d_in:
      out.append(
        f"only {self.effective_dims:.1f} effective dimensions of {self.d_in} carry the "
        f"loss weight (fewer than {min_effective_fraction:.0%})"
      )
    neglected = self.neglected(max_share)
    if neglected is not None:
      i, v, w = neglected
      out.append(
        f"dimension {i} holds {v:.1%} of the activations' variance but only {w:.1%} of the "
        f"weighted loss γ²·Var: the WSAE will barely reconstruct the dimension that carries "
        f"most of the signal, and its unweighted FVU can rise sharply"
      )
    return out

  def neglected(self, max_share: float = MAX_SHARE) -> tuple[int, float, float] | None:
    """`(dimension, variance share, weighted-loss share)` of the highest-variance dimension
    when it holds more than `max_share` of the variance and γ gives it less than
    1/`NEGLECT_RATIO` of that share of the loss; None otherwise (or without a sample)."""
    if self.variance_share_D is None or self.loss_share_D is None:
      return None
    i = int(np.argmax(self.variance_share_D))
    v, w = float(self.variance_share_D[i]), float(self.loss_share_D[i])
    return (i, v, w) if v > max_share and w < v / NEGLECT_RATIO else None


def gamma_report(gamma_D, variance_D=None) -> GammaReport:
  """The `GammaReport` of a weight vector γ (any scale); with the per-dimension variance of the
  activations it weights, also how the weighted loss spreads over the signal (see
  `GammaReport.neglected`)."""
  g2 = np.asarray(gamma_D, np.float64) ** 2
  V.check_rank("gamma", g2, 1)
  total = g2.sum()
  if not total > 0:
    raise V.WSAEInputError("gamma is zero everywhere; no dimension would be reconstructed.")
  share = g2 / total
  top_n = max(1, math.ceil(0.01 * share.shape[0]))
  var_share = loss_share = None
  if variance_D is not None:
    var = np.asarray(variance_D, np.float64)
    if var.shape != g2.shape:
      raise V.WSAEInputError(f"variance has shape {var.shape}; gamma has {g2.shape}.")
    if var.sum() > 0 and (g2 * var).sum() > 0:
      var_share, loss_share = var / var.sum(), g2 * var / (g2 * var).sum()
  return GammaReport(
    share_D=share,
    top_dim=int(np.argmax(share)),
    top_share=float(share.max()),
    top_1pct_share=float(np.sort(share)[::-1][:top_n].sum()),
    effective_dims=float(total**2 / np.sum(g2**2)),
    variance_share_D=var_share,
    loss_share_D=loss_share,
  )


def warn_if_concentrated(
  gamma_D, *, what: str = "γ", stacklevel: int = 3, variance_D=None
) -> GammaReport:
  """Builds γ's report and raises a `RuntimeWarning` naming each problem it finds."""
  report = gamma_report(gamma_D, variance_D)
  for problem in report.problems():
    warnings.warn(
      f"{what}: {problem}. Consider an α nearer 0, weights from typical rows, or "
      f"dropping massive-activation rows.",
      RuntimeWarning,
      stacklevel=stacklevel,
    )
  return report


def weights_from_scores(
  scores_D, alpha: float, *, normalize: bool = True, name: str = "scores", signed: bool = False
) -> np.ndarray:
  """`γ = scores^α`, optionally normalised to `mean(γ²) = 1`. Scores must be finite and > 0; α
  >= 0, or any finite α with `signed` (where weighting low scores up is meaningful)."""
  V.check_range("alpha", alpha, low=None if signed else 0.0)
  s = np.asarray(scores_D, np.float64)
  if s.ndim != 1:
    raise V.WSAEInputError(
      f"{name} must be a vector (one score per dimension), got shape {s.shape}."
    )
  bad = ~np.isfinite(s) | (s <= 0)
  if bad.any():
    i = int(np.argmax(bad))
    raise V.WSAEInputError(
      f"{name} must be finite and > 0 for every dimension to define γ = s^α; dimension {i} has "
      f"{s[i]!r} ({int(bad.sum())} bad in all). Drop constant dimensions or add a small floor."
    )
  gamma = s ** float(alpha)
  if normalize:
    gamma = gamma / np.sqrt(np.mean(gamma**2))
  return gamma.astype(np.float32)


def variance_weights(x_sample_BxD, alpha: float, *, normalize: bool = True) -> np.ndarray:
  """`γ_i = Var(x_i)^α` from a sample of activations `(batch, d_in)`.

  α > 0 is the paper's WSAE (high-variance dimensions weighted up); α < 0 weights low-variance
  dimensions up, towards whitening (α = −0.5 equalises the dimensions' scales). On the paper's
  triangles geometry at S = 0.7, α = −0.5 lowered L_GT by 16% (tied SAE) and 25% (ReLU + L1) at
  equal reconstruction in a pre-registered test (experiments/RESULTS.md, "A confirmatory test
  of Var^−0.5"); α > 0 raised it there.

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
  gamma = weights_from_scores(var, alpha, normalize=normalize, name="variance", signed=True)
  if alpha != 0:  # paper-exact γ; but say so when it puts the loss on a few dimensions
    warn_if_concentrated(gamma, what=f"variance weights (α = {alpha:g})", variance_D=var)
  return gamma


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
      f"labels must have shape ({np.shape(features_BxD)[0]},) (one per sample), got {labels.shape}."
    )
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


def consistency_weights(
  features_BxD, labels_B, alpha: float, *, normalize: bool = True, threshold: float = 1e-5
) -> np.ndarray:
  """`γ_i = consistency_i^α`; dimensions never active get the mean consistency of the rest."""
  per_dim, mean = semantic_consistency(features_BxD, labels_B, threshold=threshold)
  if np.isnan(mean):
    raise V.WSAEInputError(
      "no feature dimension is ever active; cannot define consistency weights."
    )
  return weights_from_scores(
    np.where(np.isnan(per_dim), mean, per_dim), alpha, normalize=normalize, name="consistency"
  )


def as_gamma(gamma, d_in: int):
  """Validates an explicit γ and returns it as a float32 device array (None stays None)."""
  import jax.numpy as jnp  # here, not at the top: `wsae train --help` reads the γ kinds without JAX

  if gamma is None:
    return None
  V.check_gamma(gamma, d_in)
  return jnp.asarray(gamma, jnp.float32)


# -- unsupervised polysemanticity estimators ------------------------------------------------------
# Each maps a sample of activations `(B, d_in)` to an estimate, per input dimension, of how many
# features share it (>= 1; larger = more polysemantic). `weights_from_polysemanticity` turns it into
# γ with the paper's principle: monosemantic dimensions weighted up.

MAX_POLYSEMANTICITY = 1e3
"""Estimates are clipped to [1, this]: a dimension that is never zero, or Gaussian, reads as very
polysemantic rather than infinitely so (γ's range is then at most this^α)."""


def _sample(x_BxD, name="x_sample"):
  V.check_rank(name, x_BxD, 2, hint="Pass a (num_samples, d_in) matrix.")
  V.check_float(name, x_BxD)
  V.check_finite(name, x_BxD)
  if np.shape(x_BxD)[0] < 2:
    raise V.WSAEInputError(f"{name} needs at least 2 rows.")
  return np.asarray(x_BxD, np.float64)


def zero_fraction_polysemanticity(x_sample_BxD, *, rel_tol: float = 0.0) -> np.ndarray:
  """Features per dimension from how often each dimension is zero.

  Under the paper's data model each feature is 0 with probability S, so dimension i (a sum of
  `m_i` features) is 0 with probability `S^{m_i}`: `m̂_i = log P̂0_i / log Ŝ`, with Ŝ the largest
  zero fraction (the sparsest dimension read as monosemantic). `rel_tol` counts `|x_i| <=
  rel_tol · std_i` as zero (real activations are never exactly 0; a band makes the estimate
  usable there, though it then measures near-zero mass rather than the data model's zeros).
  Dimensions that are always zero (dead ReLU units) are left out of Ŝ and read as 1.
  """
  x = _sample(x_sample_BxD)
  V.check_range("rel_tol", rel_tol, low=0.0)
  p0 = np.mean(np.abs(x) <= rel_tol * x.std(axis=0), axis=0)
  # A dimension that is always zero (a dead ReLU unit) carries no feature: it does not set Ŝ,
  # and reads as 1 (there is nothing in it to reconstruct, whatever its weight).
  varying = p0 < 1
  s_hat = p0[varying].max() if varying.any() else 1.0
  if not 0 < s_hat < 1:
    raise V.WSAEInputError(
      f"no dimension has a zero fraction strictly between 0 and 1 (largest {s_hat:.3g}); the "
      f"zero-fraction estimate needs sparse non-negative data, or rel_tol > 0 for real "
      f"activations."
    )
  with np.errstate(divide="ignore"):
    m = np.where(varying, np.log(p0) / np.log(s_hat), 1.0)
  return np.clip(np.nan_to_num(m, nan=1.0, posinf=MAX_POLYSEMANTICITY), 1.0, MAX_POLYSEMANTICITY)


def kurtosis_polysemanticity(x_sample_BxD) -> np.ndarray:
  """Features per dimension from excess kurtosis.

  A sum of m independent copies of a sparse feature has excess kurtosis κ_1/m: mixing many
  features makes a dimension more Gaussian. `m̂_i = κ_max / κ_i`, the most kurtotic dimension
  read as monosemantic; dimensions with κ <= 0 are clipped to `MAX_POLYSEMANTICITY`.
  """
  x = _sample(x_sample_BxD)
  c = x - x.mean(axis=0)
  var = np.mean(c**2, axis=0)
  kurt = np.mean(c**4, axis=0) / np.maximum(var, 1e-300) ** 2 - 3.0
  k_max = kurt.max()
  if not k_max > 0:
    raise V.WSAEInputError(
      "no dimension has positive excess kurtosis; the data are not sparse "
      "enough for the kurtosis estimate."
    )
  with np.errstate(divide="ignore", invalid="ignore"):
    m = np.where(kurt > 0, k_max / kurt, MAX_POLYSEMANTICITY)
  return np.clip(m, 1.0, MAX_POLYSEMANTICITY)


def typical_rows(x_BxD, *, max_norm_ratio: float = 5.0) -> np.ndarray:
  """Boolean mask of the rows whose norm is at most `max_norm_ratio` × the median row norm
  (drops the few massive-norm tokens of a language model's residual stream)."""
  norms = np.linalg.norm(np.asarray(x_BxD, np.float64), axis=1)
  return norms <= max_norm_ratio * np.median(norms)


def robust_variance_weights(
  x_sample_BxD, alpha: float, *, max_norm_ratio: float = 5.0, normalize: bool = True
) -> np.ndarray:
  """The paper's `γ_i = Var(x_i)^α`, with the variance taken over typical rows only.

  REAL.md: on SmolLM2 layer 15, 45 of 326,400 rows held 54% of the squared norm and made one
  dimension take almost all of Var^α; without them that γ hurt far less.
  """
  x = _sample(x_sample_BxD)
  keep = typical_rows(x, max_norm_ratio=max_norm_ratio)
  if keep.sum() < 2:
    raise V.WSAEInputError("fewer than 2 typical rows; raise max_norm_ratio.")
  var = np.var(x[keep], axis=0)
  gamma = weights_from_scores(
    var, alpha, normalize=normalize, name="typical-row variance", signed=True
  )
  if alpha != 0:
    warn_if_concentrated(gamma, what=f"robust variance weights (α = {alpha:g})", variance_D=var)
  return gamma


def weights_from_polysemanticity(
  m_D, alpha: float, *, normalize: bool = True, max_m: float = MAX_POLYSEMANTICITY
) -> np.ndarray:
  """`γ_i = m_i^(−α)` (monosemantic dimensions weighted up, as the paper's principle asks),
  normalised to mean(γ²) = 1; m is clipped to [1, `max_m`], so γ's range is at most `max_m^α`
  (`max_m`: the estimator's own ceiling, e.g. the number of live latents for the decoder one)."""
  V.check_range("max_m", max_m, low=1.0)
  m = np.clip(np.asarray(m_D, np.float64), 1.0, max_m)
  return weights_from_scores(1.0 / m, alpha, normalize=normalize, name="1 / polysemanticity")


# -- decoder-based, iterative γ --------------------------------------------------------------------


def decoder_polysemanticity(w_dec_MxD, live_M=None) -> np.ndarray:
  """Per input dimension, how many live latents write to it: the participation ratio
  `(Σ_j w_ji²)² / Σ_j w_ji⁴` of column i of the decoder over the live latents (1 when a single
  latent owns the dimension, the number of live latents when they share it equally). Its range
  is [1, live latents], not `MAX_POLYSEMANTICITY`'s: a wide SAE's columns are spread over
  thousands of latents (REAL.md: 1,031 to 1,619 of 4,608), and a shared clip at 1,000 made every
  dimension equal. A dimension no live latent writes to reads as the ceiling (nothing to weight
  up)."""
  w = np.asarray(w_dec_MxD, np.float64)
  if live_M is not None:
    w = w[np.asarray(live_M, bool)]
  ceiling = max(float(len(w)), 1.0)
  w2 = w * w
  s2, s4 = w2.sum(0), (w2 * w2).sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    m = np.where(s4 > 0, s2 * s2 / s4, ceiling)
  return np.clip(m, 1.0, ceiling)


class GammaSchedule(Protocol):
  """γ that changes during training (`DecoderGamma` is the one the library ships): the trainer
  starts from `initial`, calls `update` every `every` steps with the decoder and the latents'
  tokens since they last fired, and records `describe()` in the run's record."""

  every: int

  def describe(self) -> dict: ...

  def initial(self, d_in: int) -> np.ndarray: ...

  def update(self, w_dec_MxD, tokens_since_fired_M, window_tokens: int) -> np.ndarray: ...


def schedule_of(gamma) -> GammaSchedule | None:
  """The schedule a `train(gamma=...)` argument is, or None for a fixed γ (an array or None).
  Any object with `initial`, `update` and `describe` is a schedule: the trainer asks this function
  rather than testing for one class."""
  is_schedule = all(callable(getattr(gamma, m, None)) for m in ("initial", "update", "describe"))
  return gamma if is_schedule else None


@dataclasses.dataclass(frozen=True)
class DecoderGamma:
  """γ re-estimated during training from the SAE's own decoder (pass it as `train(gamma=...)`).

  Starts at γ = 1 (the plain SAE); after every `every` steps, `γ = m̂^−α` with m̂ the
  `decoder_polysemanticity` of the decoder over the latents that fired within the last
  `every · batch_size` tokens. The jitted step is not recompiled: γ stays one of its arguments.
  Checkpoints carry the current γ, so a resumed run continues with it exactly.
  """

  alpha: float
  every: int = 100

  def __post_init__(self):
    V.check_range("alpha", self.alpha, low=0.0)
    V.check_int("every", self.every, low=1)

  def describe(self) -> dict:
    return {"kind": "decoder", "alpha": float(self.alpha), "every": int(self.every)}

  def initial(self, d_in: int) -> np.ndarray:
    return np.ones(d_in, np.float32)

  def update(self, w_dec_MxD, tokens_since_fired_M, window_tokens: int) -> np.ndarray:
    live = np.asarray(tokens_since_fired_M) < window_tokens
    m = decoder_polysemanticity(w_dec_MxD, live)
    return weights_from_polysemanticity(m, self.alpha, max_m=max(float(live.sum()), 1.0))
