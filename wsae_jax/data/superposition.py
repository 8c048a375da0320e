"""The paper's data model: sparse non-negative features `x` seen through a superposition matrix `W_p`.

Shapes: `x_BxN` ground-truth features, `W_p_PxN` the superposition matrix (columns are feature
directions in the observed space), `x_p_BxP = x_BxN @ W_p_PxN.T` the observed activations.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wsae_jax import _validate as V

Magnitude = Literal["uniform", "exponential", "constant"]
MAGNITUDES = ("uniform", "exponential", "constant")


def sample_features(
  key: jax.Array,
  batch_size: int,
  n: int,
  sparsity,
  *,
  magnitude: Magnitude = "uniform",
  rates=None,
  dtype=jnp.float32,
) -> jax.Array:
  """Draws `(batch_size, n)` ground-truth features.

  Each coordinate is 0 with probability `sparsity` and otherwise has magnitude drawn from
  `magnitude` ("uniform": U[0, 1]; "exponential": Exp(1); "constant": 1). One uniform draw per
  coordinate serves both the mask and the magnitude: given `u >= S`, `(u - S) / (1 - S)` is again
  U[0, 1), so the law is exact and random-number generation costs half as much.

  `rates` (length n, optional) makes the features unevenly sparse: feature `j` is active with
  probability `(1 − S)·rates[j]` (see `feature_sparsity`), so the mean density is `1 − S` when the
  rates average 1.

  `sparsity` may be a traced scalar (for `vmap` over sparsities); a concrete value is checked.

  >>> x = sample_features(jax.random.key(0), 4, 3, 0.5)
  >>> x.shape
  (4, 3)
  """
  V.check_int("batch_size", batch_size, low=1)
  V.check_int("n", n, low=1)
  V.check_range("sparsity", sparsity, low=0.0, high=1.0, high_open=True)
  if magnitude not in MAGNITUDES:
    raise V.WSAEInputError(f"magnitude must be one of {MAGNITUDES}, got {magnitude!r}.")
  u = jax.random.uniform(key, (batch_size, n), dtype=dtype)
  return features_from_uniform(u, feature_sparsity(sparsity, rates, n).astype(dtype), magnitude)


def feature_sparsity(sparsity, rates=None, n: int | None = None) -> jax.Array:
  """Per-feature sparsity `S_j = 1 − (1 − S)·rates[j]` (the scalar `S` when `rates` is None).

  Raises `WSAEInputError` (for concrete values) when a rate is not positive or makes a feature
  active with probability above 1, naming the feature and the largest sparsity that allows it.
  """
  if rates is None:
    return jnp.asarray(sparsity, jnp.float32)
  check_rates(rates, n, sparsity)
  return 1.0 - (1.0 - jnp.asarray(sparsity, jnp.float32)) * jnp.asarray(rates, jnp.float32)


def check_rates(rates, n: int | None, sparsity=None) -> None:
  """Relative firing rates: a positive finite vector of length n with `(1 − S)·rate ≤ 1`."""
  V.check_float("rates", rates)
  if n is not None and np.shape(rates) != (n,):
    raise V.WSAEInputError(
      f"rates must have shape ({n},) (one per true feature), got {tuple(np.shape(rates))}."
    )
  V.check_range("rates", rates, low=0.0, low_open=True)
  if sparsity is not None and V.is_concrete(sparsity) and V.is_concrete(rates):
    r = np.asarray(rates, np.float64)
    if (1.0 - float(sparsity)) * r.max() > 1.0 + 1e-9:
      j = int(r.argmax())
      raise V.WSAEInputError(
        f"feature {j} would be active with probability (1 − S)·rate = "
        f"{(1.0 - float(sparsity)) * r[j]:.3g} > 1 at S = {float(sparsity):g}; use S ≥ "
        f"{1.0 - 1.0 / r[j]:.4g} or smaller rates."
      )


def features_from_uniform(u, sparsity, magnitude: Magnitude = "uniform") -> jax.Array:
  """Features from uniforms `u` in [0, 1): 0 where `u < S`, else a magnitude from `(u − S)/(1 − S)`.

  The same uniforms give the features at every sparsity (common random numbers); `sparsity`
  broadcasts against `u`.
  """
  active = u >= sparsity
  v = (u - sparsity) / (1.0 - sparsity)
  if magnitude == "uniform":
    mag = v
  elif magnitude == "exponential":
    mag = -jnp.log1p(-jnp.minimum(v, 1.0 - 1e-7))
  else:
    mag = jnp.ones_like(v)
  return jnp.where(active, mag, 0.0)


def observe(x_BxN: jax.Array, W_p_PxN: jax.Array) -> jax.Array:
  """Polysemantic observations `x_p = x W_pᵀ`, shape `(batch, n_p)`."""
  return x_BxN @ W_p_PxN.T


def interference(W_p_PxN: jax.Array) -> jax.Array:
  """`W_pᵀ W_p − I`, shape `(n, n)`: off-diagonal entries are the pairwise interferences."""
  n = W_p_PxN.shape[1]
  return W_p_PxN.T @ W_p_PxN - jnp.eye(n, dtype=W_p_PxN.dtype)


def nonpositive_interference(W_p_PxN, atol: float = 1e-6) -> bool:
  """True if every pair of distinct feature directions has `W_p[:, i]·W_p[:, j] <= atol`."""
  g = np.asarray(W_p_PxN, np.float64)
  gram = g.T @ g
  off = gram[~np.eye(gram.shape[0], dtype=bool)]
  return bool(off.size == 0 or off.max() <= atol)


def participation_ratio(W_p_PxN) -> np.ndarray:
  """Effective number of features in each observed dimension, `(Σ_j W_ij²)² / Σ_j W_ij⁴`: 1 for a
  monosemantic dimension, m for m features sharing it equally (the oracle polysemanticity)."""
  W2 = np.asarray(W_p_PxN, np.float64) ** 2
  return W2.sum(1) ** 2 / np.maximum((W2**2).sum(1), 1e-300)


def polygon_matrix(n_planes: int, k: int, n_mono: int = 0, *, dtype=np.float32) -> np.ndarray:
  """Regular k-gons in orthogonal 2-D planes plus monosemantic dimensions.

  Returns `W_p` of shape `(2 * n_planes + n_mono, k * n_planes + n_mono)` with unit columns. Plane
  `p` spans observed dimensions `(2p, 2p + 1)` and holds features at angles `2π m / k`; k = 2 gives
  digons (antipodal pairs), 3 triangles, 4 squares, 5 pentagons. The last `n_mono` features each
  own one observed dimension.

  >>> polygon_matrix(1, 2).round(6).tolist()
  [[1.0, -1.0], [0.0, 0.0]]
  """
  V.check_int("n_planes", n_planes, low=0)
  V.check_int("k", k, low=2)
  V.check_int("n_mono", n_mono, low=0)
  if n_planes + n_mono == 0:
    raise V.WSAEInputError("polygon_matrix needs n_planes + n_mono >= 1, got 0 features.")
  n_p, n = 2 * n_planes + n_mono, k * n_planes + n_mono
  w = np.zeros((n_p, n), np.float64)
  angles = 2.0 * np.pi * np.arange(k) / k
  for p in range(n_planes):
    w[2 * p, p * k : (p + 1) * k] = np.cos(angles)
    w[2 * p + 1, p * k : (p + 1) * k] = np.sin(angles)
  for m in range(n_mono):
    w[2 * n_planes + m, k * n_planes + m] = 1.0
  w[np.abs(w) < 1e-12] = 0.0  # cos(π/2) etc. are exact zeros, not 6e-17.
  return w.astype(dtype)


def random_matrix(key: jax.Array, n_p: int, n: int, *, dtype=jnp.float32) -> jax.Array:
  """Unit-norm columns in general position (Gaussian directions), shape `(n_p, n)`."""
  V.check_int("n_p", n_p, low=1)
  V.check_int("n", n, low=1)
  w = jax.random.normal(key, (n_p, n), dtype)
  return w / jnp.linalg.norm(w, axis=0, keepdims=True)


@functools.partial(jax.jit, static_argnames=("n", "n_p", "steps", "batch_size"))
def _train_toy_model(
  key, importance_N, sparsity, rates_N, *, n, n_p, steps, batch_size, learning_rate
):
  k_init, k_data = jax.random.split(key)
  params = {
    "W": jax.random.normal(k_init, (n_p, n)) * math.sqrt(2.0 / (n + n_p)),
    "b": jnp.zeros((n,)),
  }
  opt = optax.adam(learning_rate)

  def loss_fn(p, x):
    x_hat = jax.nn.relu((x @ p["W"].T) @ p["W"] + p["b"])
    return jnp.mean(jnp.sum(importance_N * (x - x_hat) ** 2, axis=-1))

  def body(carry, step):
    p, s = carry
    x = sample_features(jax.random.fold_in(k_data, step), batch_size, n, sparsity, rates=rates_N)
    loss, g = jax.value_and_grad(loss_fn)(p, x)
    upd, s = opt.update(g, s, p)
    return (optax.apply_updates(p, upd), s), loss

  (params, _), losses = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(steps))
  return params["W"], params["b"], losses


def toy_model_matrix(
  key: jax.Array,
  n: int,
  n_p: int,
  sparsity: float,
  *,
  importance: np.ndarray | float | None = None,
  rates=None,
  steps: int = 3000,
  batch_size: int = 1024,
  learning_rate: float = 1e-3,
  normalize: bool = True,
  return_info: bool = False,
):
  """Trains the Elhage et al. toy model `ReLU(Wᵀ W x + b)` and returns its `W` as `W_p`.

  Args:
    key: PRNG key for the initialisation and the training data.
    n: number of ground-truth features.
    n_p: number of observed (hidden) dimensions, `n_p < n` for superposition.
    sparsity: feature sparsity S in [0, 1) of the training data.
    importance: per-feature importance, a length-n vector or a decay factor `r` giving `r**i`
      (None: all 1).
    rates: relative firing rate per feature of the training data (`sample_features`; None: all 1).
    steps, batch_size, learning_rate: Adam training schedule.
    normalize: rescale columns to unit norm, as the paper's data model assumes. Features the toy
      model did not represent (small column norm) then get arbitrary directions; `return_info`
      reports their norms so callers can drop or flag them.
    return_info: also return `{"column_norms", "final_loss", "bias"}`.

  Returns:
    `W_p` of shape `(n_p, n)` as a float32 numpy array (and the info dict if requested).
  """
  V.check_int("n", n, low=1)
  V.check_int("n_p", n_p, low=1)
  V.check_int("steps", steps, low=1)
  V.check_range("sparsity", sparsity, low=0.0, high=1.0, high_open=True)
  if importance is None:
    imp = np.ones(n, np.float32)
  elif np.ndim(importance) == 0:
    V.check_range("importance", importance, low=0.0, high=1.0, low_open=True)
    imp = float(importance) ** np.arange(n, dtype=np.float32)
  else:
    imp = np.asarray(importance, np.float32)
    if imp.shape != (n,):
      raise V.WSAEInputError(f"importance must be a scalar or shape ({n},), got {imp.shape}.")
    V.check_range("importance", imp, low=0.0, low_open=True)
  if rates is not None:
    check_rates(rates, n, sparsity)
  W, b, losses = _train_toy_model(
    key,
    jnp.asarray(imp),
    jnp.float32(sparsity),
    None if rates is None else jnp.asarray(rates, jnp.float32),
    n=n,
    n_p=n_p,
    steps=steps,
    batch_size=batch_size,
    learning_rate=jnp.float32(learning_rate),
  )
  W = np.asarray(W, np.float32)
  norms = np.linalg.norm(W, axis=0)
  if normalize:
    W = W / np.maximum(norms, 1e-12)
  if return_info:
    return W, {"column_norms": norms, "final_loss": float(losses[-1]), "bias": np.asarray(b)}
  return W
