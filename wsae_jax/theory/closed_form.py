"""The paper's analytic SAE (Thm 1), its loss identities (Thm 4/5), and diagnostics over whole grids.

For a superposition matrix `W_p (n_p, n)` the closed-form tied SAE has encoder `W_enc = (W_p, 0)`
(shape `(n_p, d_sae)`, padded with `d_sae − n` zero columns), recovers `x_m = σ(x W_pᵀ W_p)` and
reconstructs `x̂_p = x_m W_pᵀ`. With `e = x − x_m`,

    L_WSAE − L_GT = E[eᵀ (W_pᵀ Γ² W_p − I) e]          (Thm 4 for Γ = I, Thm 5 in general)

which `loss_terms` checks by computing both sides independently. `solve_grid` evaluates the closed
form for a whole grid of geometries × sparsities × weightings in one compiled call, the Monte-Carlo
samples sharded over devices with `jax.shard_map` and reduced with `psum`.

Everything here runs in float64 under `jax.enable_x64(True)`; in float32 the identities hold to
about 1e-6 relative (see tests/test_closed_form.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wsae_jax import _validate as V
from wsae_jax import models, parallel
from wsae_jax.data import superposition as sp
from wsae_jax.evaluation import metrics


def _check_W_p(W_p):
  V.check_matrix("W_p", W_p, shape=(None, None))
  if np.shape(W_p)[0] < 1 or np.shape(W_p)[1] < 1:
    raise V.WSAEInputError(f"W_p must be non-empty, got shape {np.shape(W_p)}.")


def _check_x(x, n):
  V.check_matrix("x", x, shape=(None, n))
  if V.is_concrete(x) and np.any(np.asarray(x) < 0):
    raise V.WSAEInputError("x must be non-negative (ground-truth features are >= 0 in this model).")


def optimal_encoder(W_p, d_sae: int) -> jax.Array:
  """Thm 1's tied encoder `W_enc = (W_p, 0)` of shape `(n_p, d_sae)`; needs `d_sae >= n`."""
  _check_W_p(W_p)
  n_p, n = np.shape(W_p)
  V.check_int("d_sae", d_sae, low=1)
  if d_sae < n:
    raise V.WSAEInputError(
      f"d_sae={d_sae} is smaller than the number of true features n={n}; the closed form needs "
      f"d_sae >= n (use d_sae >= {n})."
    )
  W_p = jnp.asarray(W_p)
  return jnp.concatenate([W_p, jnp.zeros((n_p, d_sae - n), W_p.dtype)], axis=1)


def recover(W_p, x_BxN) -> jax.Array:
  """Features the closed form recovers, `σ(x W_pᵀ W_p)`, shape `(batch, n)`."""
  W_p = jnp.asarray(W_p)
  return jax.nn.relu(x_BxN @ (W_p.T @ W_p))


def interference_summary(W_p, gamma=None) -> dict:
  """`M = W_pᵀ Γ² W_p − I` and summaries of the geometry.

  Returns a dict with `matrix` (n, n), `frobenius` and `operator` norms of M, the `mutual_coherence`
  `max_{i≠j} |cos(w_i, w_j)|`, `max_interference` `max_{i≠j} w_i·w_j` and `nonpositive` (whether
  every pair has `w_i·w_j <= 1e-6`, the hypothesis of Thm 2/3).
  """
  _check_W_p(W_p)
  W = np.asarray(W_p, np.float64)
  if gamma is not None:
    V.check_gamma(gamma, W.shape[0])
  g2 = np.ones(W.shape[0]) if gamma is None else np.asarray(gamma, np.float64) ** 2
  M = W.T @ (g2[:, None] * W) - np.eye(W.shape[1])
  gram = W.T @ W
  off = ~np.eye(W.shape[1], dtype=bool)
  norms = np.linalg.norm(W, axis=0)
  cos = gram / np.maximum(np.outer(norms, norms), 1e-300)
  max_int = float(gram[off].max()) if off.any() else 0.0
  return {
    "matrix": M,
    "frobenius": float(np.linalg.norm(M)),
    "operator": float(np.abs(np.linalg.eigvalsh(M)).max()),
    "mutual_coherence": float(np.abs(cos[off]).max()) if off.any() else 0.0,
    "max_interference": max_int,
    "nonpositive": max_int <= 1e-6,
  }


def loss_terms(W_p, x_BxN, gamma=None) -> dict:
  """`L_SAE` (or `L_WSAE`), `L_GT`, their gap and the gap Thm 4/5 predicts, at the closed form.

  `l_sae = E‖Γ(x_p − x_m W_pᵀ)‖²` is computed from the reconstruction; `predicted_gap =
  E[eᵀ(W_pᵀΓ²W_p − I)e]` from `e = x − x_m` alone, so their agreement is a real check.
  """
  _check_W_p(W_p)
  _check_x(x_BxN, np.shape(W_p)[1])
  if gamma is not None:
    V.check_gamma(gamma, np.shape(W_p)[0])
  W = jnp.asarray(W_p)
  x = jnp.asarray(x_BxN, W.dtype)
  g2 = jnp.ones(W.shape[0], W.dtype) if gamma is None else jnp.square(jnp.asarray(gamma, W.dtype))
  x_m = recover(W, x)
  x_p = x @ W.T
  l_sae = jnp.mean(jnp.sum(g2 * (x_p - x_m @ W.T) ** 2, axis=1))
  l_gt = jnp.mean(jnp.sum((x - x_m) ** 2, axis=1))
  e = x - x_m
  M = W.T @ (g2[:, None] * W) - jnp.eye(W.shape[1], dtype=W.dtype)
  predicted = jnp.mean(jnp.einsum("bi,ij,bj->b", e, M, e))
  return {"l_sae": l_sae, "l_gt": l_gt, "gap": l_sae - l_gt, "predicted_gap": predicted}


def model_variance_weights(W_p, alpha, *, normalize: bool = True) -> jax.Array:
  """The variance weights the data model implies: `Var(x_p,i) ∝ Σ_j W_p[i, j]²`, so `γ_i ∝ (that)^α`.

  Features are i.i.d., so `Var(x_p,i) = Var(x_1) Σ_j W_p[i, j]²`; the common factor cancels under
  normalisation (`mean(γ²) = 1`). Traceable in `alpha`, for grids over α.
  """
  s = jnp.sum(jnp.square(jnp.asarray(W_p)), axis=1)
  g = jnp.power(s, alpha)
  return g / jnp.sqrt(jnp.mean(g * g)) if normalize else g


# ----------------------------------------------------------------------------------------------
# Grids: one compiled call, samples sharded over devices.
# ----------------------------------------------------------------------------------------------


def _sample_stats(u_CxN, W_PxN, s):
  """Sums over one chunk of samples for one (geometry, sparsity)."""
  x = sp.features_from_uniform(u_CxN, s)
  x_m = jax.nn.relu(x @ (W_PxN.T @ W_PxN))
  e = x - x_m
  r = e @ W_PxN.T  # x_p − x̂_p, since x_p = x W_pᵀ exactly
  active = x > 0
  return {
    "r2_P": jnp.sum(r * r, axis=0),  # → L_WSAE(γ) = Σ γ² r2 / N
    "ee_NxN": e.T @ e,  # → E[e eᵀ], for the predicted gap
    "gt": jnp.sum(e * e),
    "ratio_N": jnp.sum(jnp.where(active, x_m / jnp.where(active, x, 1.0), 0.0), axis=0),
    "vanish_N": jnp.sum(active & (x_m == 0), axis=0).astype(x.dtype),
    "active_N": jnp.sum(active, axis=0).astype(x.dtype),
  }


def _grid_sums(u_SxN, W_GxPxN, s_S, chunk):
  """Per-device sums for every (geometry, sparsity) over this device's samples."""
  n_local, n = u_SxN.shape
  chunks = u_SxN.reshape(n_local // chunk, chunk, n)
  per_config = jax.vmap(jax.vmap(_sample_stats, (None, None, 0)), (None, 0, None))

  def body(acc, u_chunk):
    return jax.tree.map(jnp.add, acc, per_config(u_chunk, W_GxPxN, s_S)), None

  # The first chunk seeds the carry, so it has the per-device (varying) type shard_map expects.
  sums, _ = jax.lax.scan(body, per_config(chunks[0], W_GxPxN, s_S), chunks[1:])
  return sums


@dataclasses.dataclass(frozen=True)
class GridResult:
  """Closed-form quantities over a grid of geometries (G) × sparsities (S) × weightings (A)."""

  l_wsae: np.ndarray
  """(G, S, A) `L_WSAE` at the closed form (A = the γ axis; γ = 1 gives `L_SAE`)."""
  predicted_gap: np.ndarray
  """(G, S, A) `E[eᵀ(W_pᵀΓ²W_p − I)e]`."""
  l_gt: np.ndarray
  """(G, S) `L_GT` (independent of γ: the closed form does not depend on Γ)."""
  shrinkage: np.ndarray
  """(G, S, n) `E[x_m,j / x_j | x_j > 0]`."""
  vanishing: np.ndarray
  """(G, S, n) `P(x_m,j = 0 | x_j > 0)`."""
  gammas: np.ndarray
  """(G, A, n_p) the weights used."""
  num_samples: int

  @property
  def gap(self) -> np.ndarray:
    return self.l_wsae - self.l_gt[..., None]


def _grid_impl(key, W_GxPxN, s_S, gammas_GxAxP, *, num_samples, chunk, mesh):
  n = W_GxPxN.shape[2]
  u = jax.random.uniform(key, (num_samples, n), W_GxPxN.dtype)
  u = jax.lax.with_sharding_constraint(u, NamedSharding(mesh, P(parallel.DATA_AXIS)))

  def per_device(u_local, W, s):
    sums = _grid_sums(u_local, W, s, chunk)
    return jax.lax.psum(sums, parallel.DATA_AXIS)

  sums = jax.shard_map(
    per_device, mesh=mesh, in_specs=(P(parallel.DATA_AXIS), P(), P()), out_specs=P()
  )(u, W_GxPxN, s_S)
  N = jnp.asarray(num_samples, W_GxPxN.dtype)
  g2 = jnp.square(gammas_GxAxP)  # (G, A, P)
  l_wsae = jnp.einsum("gkp,gsp->gsk", g2, sums["r2_P"]) / N
  M = jnp.einsum("gpi,gkp,gpj->gkij", W_GxPxN, g2, W_GxPxN) - jnp.eye(n, dtype=W_GxPxN.dtype)
  predicted = jnp.einsum("gkij,gsij->gsk", M, sums["ee_NxN"]) / N
  active = sums["active_N"]
  with_nan = lambda a: jnp.where(active > 0, a / jnp.maximum(active, 1), jnp.nan)
  return {
    "l_wsae": l_wsae,
    "predicted_gap": predicted,
    "l_gt": sums["gt"] / N,
    "shrinkage": with_nan(sums["ratio_N"]),
    "vanishing": with_nan(sums["vanish_N"]),
  }


@functools.lru_cache(maxsize=16)
def _compiled_grid(num_samples, chunk, mesh):
  return jax.jit(functools.partial(_grid_impl, num_samples=num_samples, chunk=chunk, mesh=mesh))


def solve_grid(
  W_ps,
  sparsities,
  *,
  gammas=None,
  alphas=None,
  key=None,
  num_samples: int = 100_000,
  chunk: int = 4096,
  mesh: Mesh | None = None,
) -> GridResult:
  """Closed-form losses, gap, shrinkage and vanishing over a whole grid, in one compiled call.

  Args:
    W_ps: one `(n_p, n)` matrix or a stack `(G, n_p, n)` of equally shaped geometries.
    sparsities: `(S,)` sparsities in [0, 1).
    gammas: explicit weightings `(A, n_p)`, > 0; or
    alphas: `(A,)` exponents for the model's variance weights (`model_variance_weights`).
      Neither: the plain SAE (A = 1, γ = 1).
    key: PRNG key (default `key(0)`). The same uniforms serve every configuration (common random
      numbers), so differences between configurations are measured without sampling noise.
    num_samples: Monte-Carlo samples, split over the devices of `mesh` (rounded up to a multiple of
      `chunk × devices`).
    chunk: samples processed at once per device (bounds memory: about `G·S·chunk·n` floats).
    mesh: a mesh with a "data" axis (default: all devices).
  """
  W = np.asarray(W_ps)
  if W.ndim == 2:
    W = W[None]
  if W.ndim != 3:
    raise V.WSAEInputError(f"W_ps must be (n_p, n) or (G, n_p, n), got shape {W.shape}.")
  for g in range(W.shape[0]):
    _check_W_p(W[g])
  s = np.atleast_1d(np.asarray(sparsities, np.float64))
  V.check_range("sparsities", s, low=0.0, high=1.0, high_open=True)
  if gammas is not None and alphas is not None:
    raise V.WSAEInputError("pass gammas or alphas, not both.")
  dtype = jnp.asarray(0.0).dtype  # float64 when jax_enable_x64 is on, else float32
  W_j = jnp.asarray(W, dtype)
  if gammas is not None:
    gm = np.asarray(gammas, np.float64)
    if gm.ndim == 1:
      gm = gm[None]
    for gamma in gm:
      V.check_gamma(gamma, W.shape[1], name="gammas")
    gam = jnp.broadcast_to(jnp.asarray(gm, dtype), (W.shape[0],) + gm.shape)
  elif alphas is not None:
    a = np.atleast_1d(np.asarray(alphas, np.float64))
    V.check_range("alphas", a, low=0.0)
    gam = jax.vmap(
      lambda w: jax.vmap(lambda al: model_variance_weights(w, al))(jnp.asarray(a, dtype))
    )(W_j)
  else:
    gam = jnp.ones((W.shape[0], 1, W.shape[1]), dtype)
  mesh = mesh or parallel.data_mesh()
  V.check_int("num_samples", num_samples, low=1)
  V.check_int("chunk", chunk, low=1)
  per = chunk * mesh.shape[parallel.DATA_AXIS]
  num_samples = int(math.ceil(num_samples / per) * per)
  key = jax.random.key(0) if key is None else key
  out = _compiled_grid(num_samples, chunk, mesh)(key, W_j, jnp.asarray(s, dtype), gam)
  out = jax.device_get(out)
  return GridResult(
    l_wsae=out["l_wsae"],
    predicted_gap=out["predicted_gap"],
    l_gt=out["l_gt"],
    shrinkage=out["shrinkage"],
    vanishing=out["vanishing"],
    gammas=np.asarray(gam),
    num_samples=num_samples,
  )


def extreme_sparsity_probability(n: int, sparsity: float) -> float:
  """`P(at least two features active)`: how far the data is from the 1-sparse limit of Thm 2/3."""
  return float(1.0 - sparsity**n - n * (1.0 - sparsity) * sparsity ** (n - 1))


def diagnose(
  W_p,
  sparsity: float,
  d_sae: int,
  key=None,
  num_samples: int = 100_000,
  gamma=None,
  *,
  multi_active_tolerance: float = 0.05,
) -> dict:
  """Per-feature shrinkage and vanishing at the closed form, and which hypotheses hold.

  Returns a dict with `shrinkage` and `vanishing` (per true feature), the closed-form losses, and
  `conditions`: `extreme_sparsity` (P(≥ 2 features active) <= `multi_active_tolerance`),
  `enough_latents` (d_sae >= n), `nonpositive_interference`, with the numbers behind each.
  """
  _check_W_p(W_p)
  n = np.shape(W_p)[1]
  V.check_int("d_sae", d_sae, low=1)
  V.check_range("sparsity", sparsity, low=0.0, high=1.0, high_open=True)
  res = solve_grid(
    W_p, [sparsity], gammas=None if gamma is None else [gamma], key=key, num_samples=num_samples
  )
  geo = interference_summary(W_p, gamma)
  p_multi = extreme_sparsity_probability(n, sparsity)
  return {
    "shrinkage": res.shrinkage[0, 0],
    "vanishing": res.vanishing[0, 0],
    "l_sae": float(res.l_wsae[0, 0, 0]),
    "l_gt": float(res.l_gt[0, 0]),
    "gap": float(res.gap[0, 0, 0]),
    "predicted_gap": float(res.predicted_gap[0, 0, 0]),
    "conditions": {
      "extreme_sparsity": p_multi <= multi_active_tolerance,
      "p_two_or_more_active": p_multi,
      "enough_latents": d_sae >= n,
      "d_sae": d_sae,
      "n": n,
      "nonpositive_interference": geo["nonpositive"],
      "max_interference": geo["max_interference"],
      "mutual_coherence": geo["mutual_coherence"],
    },
    "num_samples": res.num_samples,
  }


# ----------------------------------------------------------------------------------------------
# A trained SAE against the closed form.
# ----------------------------------------------------------------------------------------------


def _tied_l_sae(W_enc, x_p, g2):
  x_hat = jax.nn.relu(x_p @ W_enc) @ W_enc.T
  return jnp.mean(jnp.sum(g2 * (x_p - x_hat) ** 2, axis=1))


def gradient_at_closed_form(W_p, x_BxN, gamma=None, d_sae: int | None = None) -> float:
  """Frobenius norm of `∇_{W_enc} L_(W)SAE` at the closed form on the sample (0 at a stationary point)."""
  _check_W_p(W_p)
  W = jnp.asarray(W_p)
  enc = optimal_encoder(W, d_sae or W.shape[1])
  x_p = jnp.asarray(x_BxN, W.dtype) @ W.T
  g2 = jnp.ones(W.shape[0], W.dtype) if gamma is None else jnp.square(jnp.asarray(gamma, W.dtype))
  return float(jnp.linalg.norm(jax.grad(_tied_l_sae)(enc, x_p, g2)))


def compare(
  sae_cfg,
  params,
  W_p,
  x_BxN,
  gamma=None,
  *,
  rel_tol: float = 0.05,
  abs_tol: float = 1e-5,
  match_tol: float = 0.99,
) -> dict:
  """How a trained SAE relates to the closed form on the same held-out sample.

  Matches latents to the closed-form directions (the columns of W_p) by Hungarian matching on the
  signed cosine of encoder columns and of decoder rows, reports per-feature cosine and scale (norm
  of the matched encoder column; 1 for the closed form), both models' `L_SAE` and `L_GT`, and a
  verdict. The trained `l_gt` uses the **encoder** matching and raw latents, the paper's formula
  `E‖x − P σ(W_m W_p x)‖²`, as the closed form's does (`l_gt_scaled`: latents in feature units,
  as `evaluate`'s `l_gt_encoder`). The comparison is meant for the tied theory SAE, the model
  class of the closed form:
    * "training beats the closed form" if the trained `L_SAE` is lower by more than the tolerance;
    * "closed form optimal; training found it" if equal within tolerance and matched (|cos| >=
      `match_tol` on average);
    * "closed form optimal but not unique" if equal loss but a different solution;
    * "closed form better; training did not reach it" otherwise.
  """
  _check_W_p(W_p)
  n_p, n = np.shape(W_p)
  _check_x(x_BxN, n)
  if sae_cfg.d_in != n_p:
    raise V.WSAEInputError(f"the SAE has d_in={sae_cfg.d_in} but W_p has n_p={n_p} rows.")
  W = np.asarray(W_p, np.float32)
  x = np.asarray(x_BxN, np.float32)
  x_p = jnp.asarray(x @ W.T)
  g2 = np.ones(n_p) if gamma is None else np.asarray(gamma, np.float64) ** 2
  cf = jax.device_get(loss_terms(jnp.asarray(W), jnp.asarray(x), gamma))
  z, x_hat = jax.device_get(models.forward(sae_cfg, params, x_p))
  trained_l_sae = float(np.mean(np.sum(g2 * (np.asarray(x_p) - x_hat) ** 2, axis=1)))
  enc_cols = np.asarray(params["W_enc"]).T
  m_enc = metrics.match_sae(sae_cfg, params, W, by="encoder")
  m_dec = metrics.match_sae(sae_cfg, params, W, by="decoder")
  ok = m_enc.latent_of_feature >= 0
  scale = np.zeros(n)
  scale[ok] = np.linalg.norm(enc_cols[m_enc.latent_of_feature[ok]], axis=1)
  trained_l_gt = metrics.gt_loss(x, z, m_enc, raw=True)
  cf_l_sae = float(cf["l_sae"])
  tol = max(abs_tol, rel_tol * max(cf_l_sae, trained_l_sae))
  if trained_l_sae < cf_l_sae - tol:
    verdict = "training beats the closed form: it is not optimal here"
  elif abs(trained_l_sae - cf_l_sae) <= tol:
    verdict = (
      "closed form optimal; training found it"
      if m_enc.mean_cos >= match_tol
      else "closed form optimal but not unique: training found another solution of equal loss"
    )
  else:
    verdict = "closed form better; training did not reach it"
  return {
    "closed_form": {"l_sae": cf_l_sae, "l_gt": float(cf["l_gt"])},
    "trained": {
      "l_sae": trained_l_sae,
      "l_gt": trained_l_gt,
      "l_gt_scaled": metrics.gt_loss(x, z, m_enc),
    },
    "matched_by": "encoder",
    "encoder_cos": m_enc.cos,
    "decoder_cos": m_dec.cos,
    "scale": scale,
    "latent_of_feature": m_enc.latent_of_feature,
    "mean_encoder_cos": m_enc.mean_cos,
    "mean_decoder_cos": m_dec.mean_cos,
    "verdict": verdict,
  }
