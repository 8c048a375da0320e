import jax
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax.data import superposition as sp


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.95])
def test_sample_features_law(sparsity):
  x = np.asarray(sp.sample_features(jax.random.key(0), 20000, 10, sparsity))
  assert x.shape == (20000, 10) and x.min() >= 0 and x.max() <= 1
  zero = np.mean(x == 0)
  assert abs(zero - sparsity) < 0.01
  active = x[x > 0]
  # Uniform[0, 1] given active: mean 1/2, variance 1/12.
  assert abs(active.mean() - 0.5) < 0.01
  assert abs(active.var() - 1 / 12) < 0.005


def test_sample_features_other_laws():
  x = np.asarray(sp.sample_features(jax.random.key(1), 20000, 8, 0.5, magnitude="constant"))
  assert set(np.unique(x)) <= {0.0, 1.0}
  e = np.asarray(sp.sample_features(jax.random.key(1), 40000, 8, 0.5, magnitude="exponential"))
  assert abs(e[e > 0].mean() - 1.0) < 0.03


def test_polygon_matrix_geometry():
  for k in (2, 3, 4, 5):
    W = sp.polygon_matrix(3, k, n_mono=2)
    assert W.shape == (8, 3 * k + 2)
    assert_close(np.linalg.norm(W, axis=0), np.ones(W.shape[1]), atol=1e-6)
    # Adjacent features in a plane sit 2π/k apart.
    assert_close(W[:, 0] @ W[:, 1], np.cos(2 * np.pi / k), atol=1e-6)
    # Planes are orthogonal to one another and to monosemantic dims.
    assert_close(W[:, 0] @ W[:, k], 0.0, atol=1e-7)
    assert sp.nonpositive_interference(W) == (k <= 4)


def test_observe_and_interference_match_numpy():
  W = np.asarray(sp.random_matrix(jax.random.key(2), 5, 9))
  assert_close(np.linalg.norm(W, axis=0), np.ones(9), atol=1e-6)
  x = np.random.default_rng(0).random((7, 9)).astype(np.float32)
  assert_close(sp.observe(x, W), x @ W.T, rtol=1e-5, atol=1e-6)
  assert_close(sp.interference(W), W.T @ W - np.eye(9), rtol=1e-5, atol=1e-6)


def test_toy_model_matrix_learns_superposition():
  W, info = sp.toy_model_matrix(
    jax.random.key(0), 10, 4, 0.9, steps=600, importance=0.9, return_info=True
  )
  assert W.shape == (4, 10)
  assert_close(np.linalg.norm(W, axis=0), np.ones(10), atol=1e-5)
  # At S = 0.9 the toy model represents more features than it has dimensions.
  assert np.sum(info["column_norms"] > 0.5) > 4
  assert np.isfinite(info["final_loss"])


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(sparsity=1.0), "sparsity must lie in"),
    (dict(sparsity=-0.1), "sparsity must lie in"),
    (dict(sparsity=float("nan")), "sparsity"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(magnitude="gaussian"), "magnitude must be one of"),
  ],
)
def test_sample_features_bad_input(kwargs, match):
  args = dict(key=jax.random.key(0), batch_size=4, n=3, sparsity=0.5) | kwargs
  with pytest.raises(w.WSAEInputError, match=match):
    sp.sample_features(**args)


def test_polygon_bad_input():
  with pytest.raises(ValueError, match="k must be >= 2"):
    sp.polygon_matrix(2, 1)


def test_toy_model_trains_on_uneven_rates():
  """rates = 1 is the plain toy model exactly; other rates change its training data; a rate the
  sparsity cannot allow is refused before training."""
  key = jax.random.key(0)
  plain = w.toy_model_matrix(key, 8, 4, 0.8, steps=50)
  np.testing.assert_array_equal(
    w.toy_model_matrix(key, 8, 4, 0.8, steps=50, rates=np.ones(8)), plain
  )
  uneven = w.toy_model_matrix(key, 8, 4, 0.8, steps=50, rates=np.linspace(0.5, 1.5, 8))
  assert np.abs(uneven - plain).max() > 1e-3
  with pytest.raises(w.WSAEInputError, match="feature 7 would be active"):
    w.toy_model_matrix(key, 8, 4, 0.5, steps=50, rates=np.linspace(0.5, 2.5, 8))
