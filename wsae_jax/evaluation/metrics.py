"""How well an SAE recovers ground truth, and how it behaves: matching, MMCS, MCC, L_GT and more.

Every ground-truth metric here is checked on constructed SAEs whose answer is known exactly
(tests/test_metrics.py: perfect SAEs of every architecture on antipodal, rescaled, permuted and
half-recovered dictionaries score the true permutation's L_GT).

Conventions: `directions_MxP` are learned directions in the observed space (decoder rows or encoder
columns), `W_p_PxN` the ground-truth superposition matrix (its columns are the true directions),
`x_BxN` true features, `z_BxM` SAE latents.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from wsae_jax import _validate as V
from wsae_jax import models
from wsae_jax.objectives.reconstruction import reconstruction_loss


def _unit(v, axis, eps: float = 1e-12):
  v = np.asarray(v, np.float64)
  return v / np.maximum(np.linalg.norm(v, axis=axis, keepdims=True), eps)


def _check_observed_space(directions_MxP, W_p_PxN) -> None:
  V.check_rank("directions", directions_MxP, 2)
  V.check_rank("W_p", W_p_PxN, 2)
  if np.shape(directions_MxP)[1] != np.shape(W_p_PxN)[0]:
    raise V.WSAEInputError(
      f"directions have width {np.shape(directions_MxP)[1]} but W_p has "
      f"{np.shape(W_p_PxN)[0]} rows; both must live in the observed space (n_p)."
    )


def cosine(directions_MxP, W_p_PxN, *, eps: float = 1e-12) -> np.ndarray:
  """Signed cosine between each learned direction and each true direction, shape `(M, N)`.

  True features are non-negative and so are ReLU-family latents, so a latent recovers feature j
  only if its direction points along `+W_p[:, j]`; a direction along `−W_p[:, j]` (the antipode
  of a digon) is a different feature. Norms are clamped at `eps` (a zero direction has cosine 0
  with everything).
  """
  _check_observed_space(directions_MxP, W_p_PxN)
  return _unit(directions_MxP, 1, eps) @ _unit(W_p_PxN, 0, eps)


def abs_cosine(directions_MxP, W_p_PxN, *, eps: float = 1e-12) -> np.ndarray:
  """`|cos|` between each learned direction and each true direction, shape `(M, N)`: for
  sign-free comparisons (a direction's nearest line); matching uses the signed `cosine`."""
  return np.abs(cosine(directions_MxP, W_p_PxN, eps=eps))


MATCH_BY = ("decoder", "encoder")


@dataclasses.dataclass(frozen=True)
class Matching:
  """A one-to-one assignment of true features to latents (Hungarian on signed cosine)."""

  latent_of_feature: np.ndarray
  """`(n,)` latent index matched to each true feature, -1 where none (when d_sae < n)."""
  cos: np.ndarray
  """`(n,)` signed cosine of each matched pair (0 where unmatched)."""
  scale: np.ndarray
  """`(n,)` the matched latent's unit in feature units: `‖W_dec[m]‖ / ‖W_p[:, j]‖` (1 where
  unmatched). A latent `z_m` writes `z_m‖W_dec[m]‖` along its unit direction; feature `x_j` writes
  `x_j‖W_p[:, j]‖` along its own, so `z_m · scale_j` is the latent in the feature's units and does
  not change when a free-norm decoder (ReLU, JumpReLU) rescales a latent and its row inversely."""
  by: str = "decoder"
  """Which directions were matched: the decoder rows ("decoder") or the encoder columns."""

  @property
  def mean_cos(self) -> float:
    return float(self.cos.mean())


def match_latents(
  directions_MxP, W_p_PxN, *, decoder_norms_M=None, by: str = "decoder"
) -> Matching:
  """Hungarian matching of learned directions to true directions maximising total signed cosine.

  `decoder_norms_M`: each latent's decoder-row norm, for `Matching.scale` (default: the norms of
  `directions_MxP`, right when they are the decoder rows). `by` labels the directions.
  """
  if by not in MATCH_BY:
    raise V.WSAEInputError(f"by must be one of {MATCH_BY}, got {by!r}.")
  c = cosine(directions_MxP, W_p_PxN)
  norms_M = (
    np.linalg.norm(np.asarray(directions_MxP, np.float64), axis=1)
    if decoder_norms_M is None
    else np.asarray(decoder_norms_M, np.float64)
  )
  if norms_M.shape != (c.shape[0],):
    raise V.WSAEInputError(
      f"decoder_norms_M has shape {norms_M.shape}; expected ({c.shape[0]},), one norm per latent."
    )
  true_norms_N = np.linalg.norm(np.asarray(W_p_PxN, np.float64), axis=0)
  rows, cols = linear_sum_assignment(c, maximize=True)
  n = c.shape[1]
  latent = np.full(n, -1, np.int64)
  cos, scale = np.zeros(n), np.ones(n)
  latent[cols] = rows
  cos[cols] = c[rows, cols]
  scale[cols] = norms_M[rows] / np.maximum(true_norms_N[cols], 1e-12)
  return Matching(latent, cos, scale, by)


def match_sae(sae_cfg, params, W_p_PxN, *, by: str = "decoder") -> Matching:
  """Matches an SAE's latents to the true features by its decoder rows (default) or encoder
  columns; the scale always comes from the decoder rows (what a latent writes)."""
  dec = np.asarray(models.decoder_matrix(sae_cfg, params), np.float64)
  if by == "encoder":
    dirs = np.asarray(params["W_enc"], np.float64).T
  elif by == "decoder":
    dirs = dec
  else:
    raise V.WSAEInputError(f"by must be one of {MATCH_BY}, got {by!r}.")
  return match_latents(dirs, W_p_PxN, decoder_norms_M=np.linalg.norm(dec, axis=1), by=by)


def mmcs(directions_MxP, W_p_PxN) -> float:
  """Mean over true features of the largest signed cosine with any learned direction."""
  return float(cosine(directions_MxP, W_p_PxN).max(axis=0).mean())


def mcc(z_BxM, x_BxN) -> float:
  """Mean correlation coefficient: Hungarian matching on signed Pearson r between latents and
  features (both are non-negative, so a latent that anti-correlates with a feature does not
  recover it). Constant columns have correlation 0 with everything.
  """
  z = np.asarray(z_BxM, np.float64)
  x = np.asarray(x_BxN, np.float64)
  zc, xc = z - z.mean(0), x - x.mean(0)
  zn, xn = np.linalg.norm(zc, axis=0), np.linalg.norm(xc, axis=0)
  with np.errstate(invalid="ignore", divide="ignore"):
    r = (zc.T @ xc) / np.outer(zn, xn)
  r = np.nan_to_num(r)
  rows, cols = linear_sum_assignment(r, maximize=True)
  return float(r[rows, cols].sum() / x.shape[1])


def matched_latents(z_BxM, matching: Matching, *, raw: bool = False) -> np.ndarray:
  """Latents reordered to the true features and put in the features' units (`z_m · scale_j`,
  see `Matching.scale`), `(batch, n)`; unmatched features read 0. `raw=True` leaves the latents
  unscaled (the paper's literal `σ(W_m W_p x)`, which equals the scaled reading when decoder rows
  and true directions have unit norm)."""
  z = np.asarray(z_BxM, np.float64)
  out = np.zeros((z.shape[0], matching.latent_of_feature.shape[0]))
  ok = matching.latent_of_feature >= 0
  out[:, ok] = z[:, matching.latent_of_feature[ok]] * (1.0 if raw else matching.scale[ok])
  return out


def gt_loss(x_BxN, z_BxM, matching: Matching, *, raw: bool = False) -> float:
  """`L_GT = E‖x − P z‖²` with `P` the matching (unmatched latents are the zero padding), on
  latents in feature units (`matched_latents`)."""
  x = np.asarray(x_BxN, np.float64)
  return float(np.mean(np.sum((x - matched_latents(z_BxM, matching, raw=raw)) ** 2, axis=1)))


def features_per_latent(
  sae_cfg, params, W_p_PxN, *, magnitude: float = 1.0, threshold: float = 0.0
) -> float:
  """The paper's Fig. 2 quantity: how many true features activate a latent when shown alone.

  Each true feature `j` is presented alone at `magnitude` (`x_p = magnitude · W_p[:, j]`); a latent
  counts feature j if its activation exceeds `threshold`. Averaged over latents that at least one
  feature activates (a latent nothing activates explains no feature).
  """
  W_p = jnp.asarray(W_p_PxN, jnp.float32)
  z_NxM = np.asarray(models.encode(sae_cfg, params, magnitude * W_p.T))
  counts_M = (z_NxM > threshold).sum(axis=0)
  alive = counts_M > 0
  return float(counts_M[alive].mean()) if alive.any() else 0.0


def features_per_latent_relative(
  sae_cfg, params, W_p_PxN, *, tau: float = 0.5, magnitude: float = 1.0
) -> float:
  """Fig. 2, reading (b): single-feature probes above a fraction `tau` of the latent's largest.

  As `features_per_latent`, but latent m counts feature j only if its probe response exceeds
  `tau · max_j' z_m(j')`: features that barely touch a latent are not counted as explaining it.
  Averaged over latents that at least one probe activates.
  """
  V.check_range("tau", tau, low=0.0, high=1.0, high_open=True)
  W_p = jnp.asarray(W_p_PxN, jnp.float32)
  z_NxM = np.asarray(models.encode(sae_cfg, params, magnitude * W_p.T), np.float64)
  top_M = z_NxM.max(axis=0)
  alive = top_M > 0
  counts_M = (z_NxM > tau * top_M[None, :]).sum(axis=0)
  return float(counts_M[alive].mean()) if alive.any() else 0.0


def features_per_latent_data(
  sae_cfg, params, x_BxN, W_p_PxN, *, tau: float = 0.1, chunk: int = 256
) -> float:
  """Fig. 2, reading (c): how many true features drive a latent when it fires on real data.

  For every held-out sample b and latent m with `z_bm > 0`, the pre-activation's feature part is
  `Σ_j x_bj (W_p[:, j] · W_enc[:, m])`; feature j counts when its term exceeds `tau` times the
  latent's pre-activation. Returns the mean count over all (sample, firing latent) pairs (0 if
  no latent fires).
  """
  V.check_range("tau", tau, low=0.0, high=1.0, high_open=True)
  x = np.asarray(x_BxN, np.float32)
  W_p = np.asarray(W_p_PxN, np.float32)
  G_NxM = W_p.T @ np.asarray(params["W_enc"], np.float32)
  total, pairs = 0.0, 0
  for s in range(0, x.shape[0], chunk):
    xb = x[s : s + chunk]
    x_p = jnp.asarray(xb @ W_p.T)
    pre = np.asarray(models.pre_activations(sae_cfg, params, x_p), np.float32)
    z = np.asarray(models.encode(sae_cfg, params, x_p))
    fires = z > 0
    contrib_BxNxM = xb[:, :, None] * G_NxM[None]
    counts = (contrib_BxNxM > tau * pre[:, None, :]).sum(axis=1)
    total += float(counts[fires].sum())
    pairs += int(fires.sum())
  return total / pairs if pairs else 0.0


def gt_loss_active(x_BxN, z_BxM, matching: Matching) -> float:
  """`L_GT` on the non-sparse coordinates only, reading (i): `E Σ_{j: x_j > 0} (x_j − x_m,j)²`.

  The paper says the WSAE's advantage is "more pronounced when evaluated on non-sparse
  dimensions"; this reading scores only the coordinates that are active in the sample.
  """
  x = np.asarray(x_BxN, np.float64)
  err = (x - matched_latents(z_BxM, matching)) ** 2
  return float(np.mean(np.sum(np.where(x > 0, err, 0.0), axis=1)))


def gt_loss_alive(x_BxN, z_BxM, matching: Matching) -> float:
  """`L_GT` over the features whose matched latent is alive, reading (ii).

  A feature counts when its matched latent fires on at least one sample of `z`; features matched
  to dead latents (or unmatched) are left out. Returns 0 when no matched latent is alive.
  """
  x = np.asarray(x_BxN, np.float64)
  xm = matched_latents(z_BxM, matching)
  alive_N = np.zeros(x.shape[1], bool)
  ok = matching.latent_of_feature >= 0
  alive_N[ok] = np.any(np.asarray(z_BxM)[:, matching.latent_of_feature[ok]] > 0, axis=0)
  return float(np.mean(np.sum((x - xm)[:, alive_N] ** 2, axis=1))) if alive_N.any() else 0.0


def fvu(x_BxD, x_hat_BxD) -> float:
  """Fraction of variance unexplained: `Σ(x − x̂)² / Σ(x − mean x)²`."""
  x = np.asarray(x_BxD, np.float64)
  x_hat = np.asarray(x_hat_BxD, np.float64)
  return float(np.sum((x - x_hat) ** 2) / max(np.sum((x - x.mean(0)) ** 2), 1e-300))


def l0(z_BxM) -> float:
  """Mean number of non-zero latents per example."""
  return float(np.mean(np.sum(np.asarray(z_BxM) != 0, axis=1)))


def dead_fraction(z_BxM) -> float:
  """Fraction of latents that are zero on every example of the sample."""
  return float(np.mean(~np.any(np.asarray(z_BxM) != 0, axis=0)))


def latent_variance(z_BxM) -> np.ndarray:
  """Per-latent variance over the sample, `(d_sae,)`."""
  return np.var(np.asarray(z_BxM, np.float64), axis=0)


def shrinkage_vanishing(x_BxN, x_m_BxN) -> tuple[np.ndarray, np.ndarray]:
  """Per true feature: mean `x_m,j / x_j` and fraction `x_m,j == 0`, both over samples with `x_j > 0`.

  `x_m` must already be aligned with the true features (e.g. `matched_latents`). Features never
  active in the sample give NaN.
  """
  x = np.asarray(x_BxN, np.float64)
  xm = np.asarray(x_m_BxN, np.float64)
  active = x > 0
  count = active.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    ratio = np.where(active, xm / np.where(active, x, 1.0), 0.0).sum(0) / count
    vanish = (active & (xm == 0)).sum(0) / count
  return ratio, vanish


def evaluate(sae_cfg, params, x_BxN, W_p_PxN, *, gamma=None, bias_P=None) -> dict:
  """Every metric of a trained SAE on a held-out sample from a known superposition problem.

  Latents are matched to true features by signed cosine of the decoder rows (`match_sae`) and
  compared in the features' units (`Matching.scale`), so a perfect SAE scores the L_GT of the
  true permutation whatever its latents' scale. Keys: `l_gt` (decoder matching, the one to
  quote), `l_gt_encoder` (the same with encoder-column matching), `l_gt_raw` (decoder matching,
  unscaled latents: the paper's literal formula for the tied SAE), `match_cos` (mean signed
  cosine of the decoder matching), `mcc` (signed correlation matching), shrinkage / vanishing /
  latent variance of the scaled matched latents, and the reconstruction metrics.

  `bias_P`: an offset the observations carry, `x_p = x W_pᵀ + bias` (SynthSAEBench's models
  have one); the ground-truth readings are unchanged by it, the reconstruction ones include it.
  """

  W_p = np.asarray(W_p_PxN, np.float32)
  x_p = jnp.asarray(np.asarray(x_BxN, np.float32) @ W_p.T)
  if bias_P is not None:
    if np.shape(bias_P) != (W_p.shape[0],):
      raise V.WSAEInputError(f"bias_P must have shape ({W_p.shape[0]},), got {np.shape(bias_P)}.")
    x_p = x_p + jnp.asarray(bias_P, jnp.float32)
  z, x_hat = jax.device_get(models.forward(sae_cfg, params, x_p))
  dirs = np.asarray(models.decoder_matrix(sae_cfg, params))
  m = match_sae(sae_cfg, params, W_p, by="decoder")
  m_enc = match_sae(sae_cfg, params, W_p, by="encoder")
  x_m = matched_latents(z, m)
  shrink, vanish = shrinkage_vanishing(x_BxN, x_m)
  with np.errstate(invalid="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # a feature never active in the sample
    shrink_mean, vanish_mean = float(np.nanmean(shrink)), float(np.nanmean(vanish))
  return {
    "l_sae": float(reconstruction_loss(x_p, x_hat, gamma)[0]),
    "mse": float(reconstruction_loss(x_p, x_hat)[0]),
    "l_gt": gt_loss(x_BxN, z, m),
    "l_gt_encoder": gt_loss(x_BxN, z, m_enc),
    "l_gt_raw": gt_loss(x_BxN, z, m, raw=True),
    "mmcs": mmcs(dirs, W_p),
    "match_cos": m.mean_cos,
    "mcc": mcc(z, x_BxN),
    "features_per_latent": features_per_latent(sae_cfg, params, W_p),
    "fvu": fvu(x_p, x_hat),
    "l0": l0(z),
    "dead_frac": dead_fraction(z),
    "latent_var": float(np.mean(latent_variance(x_m))),
    "shrinkage": shrink_mean,
    "vanishing": vanish_mean,
  }


# -- real activations: latent statistics from sparse codes --------------------------------------
def sparse_codes(z_BxM, *, max_active: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`(latent ids, values)` of each row's active latents, padded with `-1` / 0: `(B, K)`.

  `max_active` (e.g. an SAE's k) keeps the largest `max_active` per row; default: the most any
  row has. Dense `(B, d_sae)` codes of a wide SAE rarely fit in memory for a whole evaluation
  set; these do.
  """
  z = np.asarray(z_BxM)
  k = max_active or max(int((z != 0).sum(1).max()), 1)
  idx = np.argpartition(-np.abs(z), min(k, z.shape[1]) - 1, axis=1)[:, :k]
  vals = np.take_along_axis(z, idx, axis=1)
  return np.where(vals != 0, idx, -1), np.where(vals != 0, vals, 0)


def latent_token_stats(latents_BxK, values_BxK, tokens_B, d_sae: int, *, top_n: int = 20) -> dict:
  """Token-level monosemanticity of each latent from sparse codes (see `sparse_codes`).

  Per latent, over the rows where it is active (value != 0):
    * `count`: how many rows;
    * `consistency`: the fraction of those rows whose current token is the latent's most frequent
      token: the semantic consistency of the latent with the token id as the label (1 = it only
      fires on one token);
    * `top_entropy`: the entropy (bits) of the token ids of its `top_n` most strongly activating
      rows (0 = its top examples are all one token);
    * `mean`, `variance`: of the latent over all `B` rows (zeros included).
  Latents never active get count 0 and NaN for the ratios.
  """
  lat = np.asarray(latents_BxK)
  val = np.asarray(values_BxK, np.float64)
  tok = np.asarray(tokens_B)
  if lat.shape != val.shape or lat.ndim != 2 or tok.shape != (lat.shape[0],):
    raise ValueError(
      f"expected latents and values (B, K) and tokens (B,), got {lat.shape}, "
      f"{val.shape}, {tok.shape}."
    )
  B = lat.shape[0]
  active = lat >= 0
  L = lat[active].astype(np.int64)
  V = val[active]
  T = np.broadcast_to(tok[:, None], lat.shape)[active].astype(np.int64)
  count = np.bincount(L, minlength=d_sae)
  s1 = np.bincount(L, weights=V, minlength=d_sae)
  s2 = np.bincount(L, weights=V * V, minlength=d_sae)
  vocab = int(T.max()) + 1 if T.size else 1
  keys, kc = np.unique(L * vocab + T, return_counts=True)
  mode = np.zeros(d_sae)
  np.maximum.at(mode, keys // vocab, kc)
  # Top-n rows per latent: sort by latent, then by decreasing value; rank within the latent.
  order = np.lexsort((-V, L))
  Ls, Ts = L[order], T[order]
  starts = np.searchsorted(Ls, np.arange(d_sae))
  rank = np.arange(len(Ls)) - starts[Ls]
  top = rank < top_n
  tkeys, tc = np.unique(Ls[top] * vocab + Ts[top], return_counts=True)
  n_top = np.minimum(count, top_n)
  p = tc / n_top[tkeys // vocab]
  entropy = np.zeros(d_sae)
  np.add.at(entropy, tkeys // vocab, -p * np.log2(p))
  with np.errstate(invalid="ignore", divide="ignore"):
    return {
      "count": count,
      "consistency": np.where(count > 0, mode / count, np.nan),
      "top_entropy": np.where(count > 0, entropy, np.nan),
      "mean": s1 / B,
      "variance": s2 / B - (s1 / B) ** 2,
    }
