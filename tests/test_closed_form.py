import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import parallel
from wsae_jax.theory import closed_form as cf


def test_example_1_exact():
  x = np.array([[0.5, 1.0, 0.8]])
  W = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
  assert_close(x @ W.T, [[0.5, 0.2]], rtol=0, atol=1e-15)
  with jax.enable_x64(True):
    assert_close(cf.recover(jnp.asarray(W), jnp.asarray(x)), [[0.5, 0.2, 0.0]], rtol=0, atol=1e-15)
    enc = cf.optimal_encoder(jnp.asarray(W), 5)
  assert enc.shape == (2, 5)
  assert_close(enc[:, :3], W, rtol=0, atol=0)
  assert_close(enc[:, 3:], np.zeros((2, 2)), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(5))
def test_thm_4_5_identities_in_float64(seed):
  rng = np.random.default_rng(seed)
  n_p, n = rng.integers(2, 8), rng.integers(8, 20)
  with jax.enable_x64(True):
    W = jnp.asarray(rng.standard_normal((n_p, n)))  # any W_p, not only unit columns
    x = jnp.asarray(
      np.asarray(w.sample_features(jax.random.key(seed), 2000, int(n), 0.6), np.float64)
    )
    gamma = jnp.asarray(rng.uniform(0.1, 3.0, n_p))
    for g in (None, gamma):
      out = cf.loss_terms(W, x, g)
      assert out["l_sae"].dtype == jnp.float64
      assert abs(float(out["gap"] - out["predicted_gap"])) <= 1e-10 * max(1.0, float(out["l_gt"]))


def test_identities_float32_within_documented_tolerance():
  rng = np.random.default_rng(0)
  W = rng.standard_normal((5, 12)).astype(np.float32)
  x = w.sample_features(jax.random.key(0), 4000, 12, 0.6)
  out = cf.loss_terms(W, x, rng.uniform(0.1, 3.0, 5).astype(np.float32))
  assert abs(float(out["gap"] - out["predicted_gap"])) <= 1e-5 * float(out["l_gt"])


def test_pure_digons_reconstruct_perfectly_but_lose_features():
  W = w.polygon_matrix(3, 2)
  with jax.enable_x64(True):
    x = w.sample_features(jax.random.key(0), 5000, 6, 0.3, dtype=jnp.float64)
    out = cf.loss_terms(jnp.asarray(W, jnp.float64), x)
  assert float(out["l_sae"]) < 1e-20 and float(out["l_gt"]) > 0.05


def _slow_grid(W_ps, sparsities, alphas, u):
  """A plain Python/numpy loop over the same grid with the same uniforms."""
  G, S, K = len(W_ps), len(sparsities), len(alphas)
  l_wsae, pred = np.zeros((G, S, K)), np.zeros((G, S, K))
  l_gt, shrink = np.zeros((G, S)), np.zeros((G, S, W_ps.shape[2]))
  for g, W in enumerate(W_ps.astype(np.float64)):
    for i, s in enumerate(sparsities):
      x = np.where(u >= s, (u - s) / (1 - s), 0.0)
      x_m = np.maximum(x @ W.T @ W, 0)
      e = x - x_m
      l_gt[g, i] = np.mean(np.sum(e**2, 1))
      act = x > 0
      shrink[g, i] = np.where(act, x_m / np.where(act, x, 1), 0).sum(0) / act.sum(0)
      for k, a in enumerate(alphas):
        gam = np.sum(W**2, 1) ** a
        gam = gam / np.sqrt(np.mean(gam**2))
        l_wsae[g, i, k] = np.mean(np.sum(gam**2 * (x @ W.T - x_m @ W.T) ** 2, 1))
        M = W.T @ np.diag(gam**2) @ W - np.eye(W.shape[1])
        pred[g, i, k] = np.mean(np.einsum("bi,ij,bj->b", e, M, e))
  return l_wsae, pred, l_gt, shrink


def test_solve_grid_equals_a_python_loop_and_devices_agree(four_devices):
  geoms = np.stack(
    [w.polygon_matrix(2, 3, n_mono=2), np.asarray(w.random_matrix(jax.random.key(1), 6, 8))]
  )
  sparsities, alphas = [0.5, 0.9, 0.99], [0.0, 0.5, 1.0, 2.0]
  key = jax.random.key(7)
  with jax.enable_x64(True):
    res4 = cf.solve_grid(
      geoms,
      sparsities,
      alphas=alphas,
      key=key,
      num_samples=4096,
      chunk=256,
      mesh=parallel.data_mesh(four_devices),
    )
    res1 = cf.solve_grid(
      geoms,
      sparsities,
      alphas=alphas,
      key=key,
      num_samples=4096,
      chunk=256,
      mesh=parallel.data_mesh(four_devices[:1]),
    )
    u = np.asarray(jax.random.uniform(key, (4096, 8), jnp.float64))
  l_wsae, pred, l_gt, shrink = _slow_grid(geoms, sparsities, alphas, u)
  for res in (res4, res1):
    assert_close(res.l_wsae, l_wsae, rtol=1e-10, atol=1e-14)
    assert_close(res.predicted_gap, pred, rtol=1e-10, atol=1e-14)
    assert_close(res.l_gt, l_gt, rtol=1e-10, atol=1e-14)
    assert_close(res.shrinkage, shrink, rtol=1e-10, atol=1e-14)
    assert_close(res.gap, res.predicted_gap, rtol=1e-9, atol=1e-12)
  assert_close(res4.l_wsae, res1.l_wsae, rtol=1e-12, atol=1e-15)


def test_diagnose_reports_conditions_and_matches_example_geometry():
  W = w.polygon_matrix(4, 3, n_mono=2)  # triangles: non-positive interference
  d = cf.diagnose(W, 0.99, d_sae=14, num_samples=8192)
  c = d["conditions"]
  assert c["nonpositive_interference"] and c["enough_latents"]
  assert_close(c["p_two_or_more_active"], 1 - 0.99**14 - 14 * 0.01 * 0.99**13, rtol=1e-9)
  # Monosemantic features are recovered exactly; triangle features shrink and sometimes vanish.
  assert_close(d["shrinkage"][-2:], [1.0, 1.0], atol=1e-6)
  assert_close(d["vanishing"][-2:], [0.0, 0.0], atol=0)
  assert np.all(d["shrinkage"][:12] <= 1.0 + 1e-6)
  pent = cf.diagnose(w.polygon_matrix(2, 5), 0.5, d_sae=5, num_samples=4096)["conditions"]
  assert not pent["nonpositive_interference"] and not pent["enough_latents"]


def test_interference_summaries():
  W = w.polygon_matrix(1, 3)
  info = cf.interference_summary(W)
  assert_close(info["max_interference"], -0.5, atol=1e-6)
  assert_close(info["mutual_coherence"], 0.5, atol=1e-6)
  assert info["nonpositive"]
  assert_close(
    info["operator"], np.abs(np.linalg.eigvalsh(W.T.astype(np.float64) @ W - np.eye(3))).max()
  )


def test_compare_verdicts():
  W = w.polygon_matrix(3, 3, n_mono=2)
  x = np.asarray(w.sample_features(jax.random.key(0), 4096, 11, 0.9))
  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  perm = np.random.default_rng(0).permutation(11)
  at_cf = cf.compare(cfg, {"W_enc": jnp.asarray(W[:, perm])}, W, x)
  assert at_cf["verdict"].startswith("closed form optimal; training found it")
  assert_close(at_cf["encoder_cos"], np.ones(11), atol=1e-6)
  assert np.array_equal(perm[at_cf["latent_of_feature"]], np.arange(11))
  worse = cf.compare(cfg, {"W_enc": jnp.asarray(0.3 * W)}, W, x)
  assert worse["verdict"].startswith("closed form better")
  assert cf.gradient_at_closed_form(W, x) >= 0


@pytest.mark.parametrize(
  "call, match",
  [
    (lambda: cf.optimal_encoder(np.ones((2, 5), np.float32), 4), "d_sae=4 is smaller than"),
    (lambda: cf.interference_summary(np.ones(3, np.float32)), "rank 2"),
    (
      lambda: cf.loss_terms(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32)),
      "axis 1 must be 3",
    ),
    (lambda: cf.loss_terms(np.full((2, 3), np.nan, np.float32), np.ones((4, 3))), "non-finite"),
    (
      lambda: cf.loss_terms(
        np.ones((2, 3), np.float32), np.ones((4, 3)), gamma=np.array([1.0, 0.0])
      ),
      "gamma must lie in",
    ),
    (lambda: cf.solve_grid(np.ones((2, 3), np.float32), [1.0]), "sparsities must lie in"),
    (lambda: cf.solve_grid(np.ones((2, 3), np.float32), [0.5], alphas=[-1.0]), "alphas"),
  ],
)
def test_closed_form_bad_input(call, match):
  with pytest.raises(w.WSAEInputError, match=match):
    call()
