"""Named superposition problems: the W_p geometries every command and study builds, in one place.

  polygon  k-gons in `planes` orthogonal 2-D planes, plus `mono` monosemantic dimensions
           (n_p = 2·planes + mono, n = k·planes + mono); the paper's Fig. 1 geometry.
  random   n unit Gaussian directions in n_p dimensions.
  toy      the W of a trained Elhage et al. toy model (n features into n_p dimensions at `sparsity`).

`SyntheticProblem` is a W_p with its sampling law, from which each sweep member draws its own
stream. `HELD_OUT_STEP` is the data step used for γ estimation and evaluation: a `SyntheticSource` batch is
a function of `(seed, step)`, and no training run reaches this step.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from wsae_jax import _validate as V

if TYPE_CHECKING:
  from wsae_jax.data import sources

# JAX, the sources and the samplers are imported where they are used: `wsae train --help` reads
# this module's names and defaults and should not load JAX for them (issue #28).

HELD_OUT_STEP = 2**30
GEOMETRIES = ("polygon", "random", "toy")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
  """A named W_p geometry and its parameters (each geometry reads only its own fields)."""

  geometry: str = "polygon"
  planes: int = 8
  """polygon: number of 2-D planes."""
  polygon_k: int = 3
  """polygon: features per plane (2 digon, 3 triangle, ...)."""
  mono: int = 4
  """polygon: monosemantic dimensions."""
  n: int = 40
  """random/toy: number of true features."""
  n_p: int = 20
  """random/toy: observed dimensions."""
  sparsity: float = 0.9
  """toy: the sparsity the toy model is trained at."""
  seed: int = 0
  """random/toy: PRNG seed of the directions / the toy model."""
  toy_steps: int = 3000
  """toy: training steps of the toy model."""

  def __post_init__(self):
    if self.geometry not in GEOMETRIES:
      raise V.WSAEInputError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}.")

  def matrix(self) -> np.ndarray:
    """W_p, shape `(n_p, n)`, float32."""
    import jax

    from wsae_jax.data import superposition as sp

    if self.geometry == "polygon":
      return sp.polygon_matrix(self.planes, self.polygon_k, n_mono=self.mono)
    key = jax.random.key(self.seed)
    if self.geometry == "random":
      return np.asarray(sp.random_matrix(key, self.n_p, self.n), np.float32)
    return sp.toy_model_matrix(key, self.n, self.n_p, self.sparsity, steps=self.toy_steps)

  def feature_labels(self) -> list[str]:
    """A readable name per true feature (polygon: its plane and index, else its number)."""
    if self.geometry == "polygon":
      k = self.polygon_k
      return [f"plane {j // k} #{j % k}" for j in range(self.planes * k)] + [
        f"mono {m}" for m in range(self.mono)
      ]
    return [f"feature {j}" for j in range(self.n)]


def build(geometry: str = "polygon", **fields) -> np.ndarray:
  """W_p of a named geometry, e.g. `build("polygon", planes=8, polygon_k=3, mono=4)`."""
  return Problem(geometry=geometry, **fields).matrix()


@dataclasses.dataclass(frozen=True)
class SyntheticProblem:
  """Synthetic data for a sweep: every member draws from `W_p` at its own sparsity and data seed."""

  W_p: Any
  """Superposition matrix (n_p, n)."""
  magnitude: str = "uniform"
  """Law of active magnitudes (see `superposition.sample_features`)."""
  prng_impl: str = "threefry2x32"
  """PRNG of the data streams (see `sources.SyntheticSource`)."""
  rates: Any = None
  """Relative firing rate per true feature (None: all 1): feature `j` is active with probability
  `(1 − S)·rates[j]` at each member's sparsity S (`superposition.sample_features`)."""

  def __post_init__(self):
    from wsae_jax.data import sources
    from wsae_jax.data import superposition as sp

    V.check_matrix("W_p", self.W_p, shape=(None, None))
    if self.rates is not None:
      sp.check_rates(self.rates, np.shape(self.W_p)[1])
    if self.magnitude not in sp.MAGNITUDES:
      raise V.WSAEInputError(f"magnitude must be one of {sp.MAGNITUDES}, got {self.magnitude!r}.")
    if self.prng_impl not in sources.PRNG_IMPLS:
      raise V.WSAEInputError(
        f"prng_impl must be one of {sources.PRNG_IMPLS}, got {self.prng_impl!r}."
      )

  def source(self, sparsity: float, seed: int, batch_size: int = 1) -> sources.SyntheticSource:
    """The stream of one member: the batches `train` would draw at this sparsity and seed."""
    from wsae_jax.data import sources

    return sources.SyntheticSource(
      self.W_p,
      sparsity,
      batch_size,
      seed=seed,
      magnitude=self.magnitude,  # type: ignore[arg-type]  # checked
      rates=self.rates,
      prng_impl=self.prng_impl,
    )

  def describe(self) -> dict:
    """The identity of the problem (compared when a sweep resumes)."""
    W = np.asarray(self.W_p, np.float32)
    return {
      "kind": "synthetic",
      "W_p_shape": list(W.shape),
      "magnitude": self.magnitude,
      "prng_impl": self.prng_impl,
      "W_p_sha1": hashlib.sha1(W.tobytes()).hexdigest(),
      **({} if self.rates is None else {"rates": np.asarray(self.rates, np.float32).tolist()}),
    }
