import numpy as np
import pytest

import wsae_jax as w
from wsae_jax import weights
from helpers import assert_close

RNG = np.random.default_rng(0)


def test_variance_weights_match_numpy():
  x = RNG.standard_normal((500, 7)) * np.arange(1, 8)
  for alpha in (0.0, 0.5, 1.0, 2.0):
    g = weights.variance_weights(x, alpha, normalize=False)
    assert_close(g, np.var(x, axis=0) ** alpha, rtol=1e-5)
    gn = weights.variance_weights(x, alpha)
    assert_close(np.mean(gn.astype(np.float64) ** 2), 1.0, rtol=1e-6)
    assert_close(gn / gn[0], g / g[0], rtol=1e-5)
  assert_close(weights.variance_weights(x, 0.0), np.ones(7))


def _slow_consistency(f, labels, thr=1e-5):
  f = f / np.linalg.norm(f, axis=1, keepdims=True)
  out = []
  for d in range(f.shape[1]):
    lab = [labels[i] for i in range(f.shape[0]) if abs(f[i, d]) > thr]
    out.append(np.nan if not lab else max(lab.count(c) for c in set(lab)) / len(lab))
  return np.asarray(out)


def test_semantic_consistency_matches_slow_loop():
  f = RNG.standard_normal((60, 5)) * (RNG.random((60, 5)) > 0.5)
  f[:, 4] = 0.0
  f[0, 4] = 1.0  # dimension 4 active once: consistency 1
  f[f.sum(1) == 0, 0] = 1.0
  labels = RNG.integers(0, 3, 60)
  per_dim, mean = weights.semantic_consistency(f, labels)
  ref = _slow_consistency(f, labels)
  assert_close(per_dim, ref, rtol=1e-12)
  assert_close(mean, np.nanmean(ref), rtol=1e-12)
  g = weights.consistency_weights(f, labels, 1.0, normalize=False)
  assert_close(g, ref, rtol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: weights.variance_weights(np.ones((10, 3)), 1.0), "variance must be finite and > 0"),
    (lambda: weights.variance_weights(RNG.random((10, 3)), -0.5), "alpha must lie in"),
    (lambda: weights.variance_weights(RNG.random(10), 1.0), "rank 2"),
    (lambda: weights.variance_weights(np.full((4, 2), np.nan), 1.0), "non-finite"),
    (lambda: weights.variance_weights(np.ones((4, 2), np.int32), 1.0), "floating-point"),
    (lambda: weights.semantic_consistency(RNG.random((4, 2)), np.zeros(3, int)), "labels must have shape"),
    (lambda: weights.as_gamma(np.array([1.0, 0.0, 2.0]), 3), "gamma must lie in"),
    (lambda: weights.as_gamma(np.ones(4), 3), r"gamma must have shape \(3,\)"),
])
def test_bad_weight_inputs_raise(call, match):
  with pytest.raises(w.WSAEInputError, match=match):
    call()
