import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax.evaluation import metrics

RNG = np.random.default_rng(0)


def test_match_latents_recovers_a_permutation_and_scale():
  W = np.asarray(w.random_matrix(jax.random.key(0), 6, 9))
  perm = RNG.permutation(12)[:9]  # 12 latents, 9 features: 3 extra latents
  dirs = RNG.standard_normal((12, 6)) * 0.01
  scale = RNG.uniform(0.5, 2.0, 9)
  dirs[perm] = (W * scale).T
  m = metrics.match_latents(dirs, W)
  assert np.array_equal(m.latent_of_feature, perm)
  assert_close(m.cos, np.ones(9), atol=1e-6)
  assert_close(m.scale, scale / np.linalg.norm(W, axis=0), rtol=1e-6)
  assert_close(metrics.mmcs(dirs, W), 1.0, atol=1e-6)
  # A direction pointing at −W_p[:, j] is not feature j (features and latents are >= 0).
  flipped = dirs.copy()
  flipped[perm[0]] *= -1
  assert metrics.match_latents(flipped, W).cos[0] < 0.5


def test_fewer_latents_than_features_leaves_some_unmatched():
  W = np.eye(4)
  m = metrics.match_latents(np.eye(4)[:2], W)
  assert sorted(m.latent_of_feature.tolist()) == [-1, -1, 0, 1]


def test_mcc_is_one_for_a_scaled_permutation_and_low_for_noise():
  x = RNG.random((500, 5))
  z = np.concatenate([x[:, ::-1] * 3.0 + 1.0, RNG.random((500, 2))], axis=1)
  assert_close(metrics.mcc(z, x), 1.0, atol=1e-9)
  assert metrics.mcc(RNG.random((500, 5)), x) < 0.2


def test_gt_loss_shrinkage_vanishing_on_example_1():
  # PAPER.md Example 1: x = (0.5, 1.0, 0.8), W_p = [[1,0,0],[0,1,-1]] -> x_m = (0.5, 0.2, 0).
  x = np.array([[0.5, 1.0, 0.8]])
  W = np.array([[1.0, 0, 0], [0, 1.0, -1.0]])
  x_m = np.maximum(x @ W.T @ W, 0)
  assert_close(x_m, [[0.5, 0.2, 0.0]], atol=1e-12)
  m = metrics.match_latents(W.T, W)  # the closed-form encoder: latent j is feature j
  assert np.array_equal(m.latent_of_feature, [0, 1, 2])
  assert_close(metrics.gt_loss(x, x_m, m), 0.8**2 + 0.8**2, rtol=1e-12)
  shrink, vanish = metrics.shrinkage_vanishing(x, x_m)
  assert_close(shrink, [1.0, 0.2, 0.0], atol=1e-12)
  assert_close(vanish, [0.0, 0.0, 1.0])


def test_features_per_latent_counts_features_shown_alone():
  # Tied SAE whose latents are the triangle directions: feature j activates latent j only
  # (the other two triangle directions have cos -1/2).
  W = w.polygon_matrix(1, 3)
  cfg = w.TiedSAEConfig(d_in=2, d_sae=3)
  assert metrics.features_per_latent(cfg, {"W_enc": jnp.asarray(W)}, W) == 1.0
  # Digon pair seen by a square's axes: every latent answers one feature... and a latent along
  # (1, 1)/√2 in a square answers two features (its neighbours at ±45°).
  sq = w.polygon_matrix(1, 4)
  diag = np.array([[1.0, 1.0]]).T / np.sqrt(2)
  assert (
    metrics.features_per_latent(
      w.TiedSAEConfig(d_in=2, d_sae=1), {"W_enc": jnp.asarray(diag, jnp.float32)}, sq
    )
    == 2.0
  )


def test_simple_metrics_match_numpy():
  z = np.array([[0, 1.0, 0], [2.0, 0, 0], [0, 3.0, 0]])
  assert metrics.l0(z) == 1.0
  assert_close(metrics.dead_fraction(z), 1 / 3)
  assert_close(metrics.latent_variance(z), np.var(z, axis=0))
  x = RNG.random((50, 4))
  x_hat = x + 0.1 * RNG.standard_normal((50, 4))
  assert_close(metrics.fvu(x, x_hat), np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(0)) ** 2))


def test_evaluate_on_the_closed_form_of_a_digon_problem():
  # Pure digons: the closed-form tied SAE reconstructs x_p exactly but loses features (L_GT > 0).
  W = w.polygon_matrix(4, 2)
  cfg = w.TiedSAEConfig(d_in=8, d_sae=8)
  x = np.asarray(w.sample_features(jax.random.key(1), 4000, 8, 0.5))
  m = metrics.evaluate(cfg, {"W_enc": jnp.asarray(W)}, x, W)
  assert m["l_sae"] < 1e-10 and m["l_gt"] > 0.01
  assert_close(m["mmcs"], 1.0, atol=1e-6)
  assert 0 < m["vanishing"] < 1


def test_metric_inputs_checked():
  with pytest.raises(w.WSAEInputError, match="observed space"):
    metrics.abs_cosine(np.ones((3, 4)), np.ones((5, 2)))


def test_latent_token_stats_match_a_slow_loop():
  from wsae_jax.evaluation.metrics import latent_token_stats, sparse_codes

  rng = np.random.default_rng(0)
  B, M, top_n = 300, 24, 5
  z = np.where(rng.random((B, M)) < 0.15, rng.random((B, M)) + 0.01, 0.0)
  z[:, 3] = 0.0  # a dead latent
  tokens = rng.integers(0, 7, B)
  lat, val = sparse_codes(z)
  assert lat.shape[1] == (z != 0).sum(1).max()
  got = latent_token_stats(lat, val, tokens, M, top_n=top_n)
  for m in range(M):
    rows = np.flatnonzero(z[:, m])
    assert got["count"][m] == len(rows)
    np.testing.assert_allclose(
      [got["mean"][m], got["variance"][m]], [z[:, m].mean(), z[:, m].var()], atol=1e-12
    )
    if not len(rows):
      assert np.isnan(got["consistency"][m]) and np.isnan(got["top_entropy"][m])
      continue
    _, c = np.unique(tokens[rows], return_counts=True)
    assert got["consistency"][m] == pytest.approx(c.max() / len(rows))
    top = rows[np.argsort(-z[rows, m], kind="stable")[:top_n]]
    _, c = np.unique(tokens[top], return_counts=True)
    p = c / c.sum()
    assert got["top_entropy"][m] == pytest.approx(-(p * np.log2(p)).sum())
  # Keeping only the largest k per row equals Top-k of the dense codes.
  lat2, val2 = sparse_codes(z, max_active=2)
  for b in range(B):
    want = np.sort(z[b])[::-1][:2]
    np.testing.assert_allclose(
      np.sort(val2[b])[::-1], want[want > 0].tolist() + [0] * (2 - (want > 0).sum())
    )


# -- the Fig. 2 counting rules and the Fig. 3 readings of L_GT, on a hand-built SAE -------------
# W_p has columns e1, e2 and (e1 + e2)/√2; the tied SAE's latents are e1 and e2 themselves.
_W3 = np.array([[1.0, 0.0, np.sqrt(0.5)], [0.0, 1.0, np.sqrt(0.5)]], np.float32)
_TIED = w.TiedSAEConfig(d_in=2, d_sae=2)
_P = {"W_enc": jnp.eye(2, dtype=jnp.float32)}


def test_counting_rules_on_a_hand_built_sae():
  # Probes: feature 0 -> (1, 0), feature 1 -> (0, 1), feature 2 -> (0.71, 0.71).
  assert metrics.features_per_latent(_TIED, _P, _W3) == 2.0  # (a): any response
  assert metrics.features_per_latent_relative(_TIED, _P, _W3, tau=0.5) == 2.0
  assert metrics.features_per_latent_relative(_TIED, _P, _W3, tau=0.8) == 1.0  # (b): 0.71 < 0.8
  # (c): sample 1 = (1, 0, 0.1): latent 0's pre-activation 1.07 has terms 1 and 0.07 (< 10%): 1
  # feature; latent 1's 0.07 comes all from feature 2: 1. Sample 2 = (1, 0, 1): latent 0 gets
  # 1 and 0.71 (both > 10% of 1.71): 2; latent 1: 1. Mean over the 4 firing pairs: 5/4.
  x = np.array([[1.0, 0.0, 0.1], [1.0, 0.0, 1.0]], np.float32)
  assert metrics.features_per_latent_data(_TIED, _P, x, _W3, tau=0.1) == pytest.approx(1.25)
  assert metrics.features_per_latent_data(_TIED, _P, x, _W3, tau=0.5) == pytest.approx(1.0)
  assert metrics.features_per_latent_data(_TIED, _P, np.zeros((3, 3), np.float32), _W3) == 0.0


def test_gt_loss_readings_on_known_errors():
  x = np.array([[1.0, 0.0, 0.5]])
  m = metrics.Matching(
    latent_of_feature=np.array([0, 1, -1]), cos=np.array([1.0, 1.0, 0.0]), scale=np.ones(3)
  )
  z = np.array([[0.8, 0.3]])
  # Matched latents (0.8, 0.3, 0): squared errors 0.04, 0.09, 0.25.
  assert metrics.gt_loss(x, z, m) == pytest.approx(0.38)
  assert metrics.gt_loss_active(x, z, m) == pytest.approx(0.29)  # (i): x_j > 0 only
  assert metrics.gt_loss_alive(x, z, m) == pytest.approx(0.13)  # (ii): matched and alive
  z_dead = np.array([[0.8, 0.0]])
  assert metrics.gt_loss_alive(x, z_dead, m) == pytest.approx(0.04)
  # A slow, obvious reference for (i) on random data.
  rng = np.random.default_rng(0)
  xr = np.where(rng.random((50, 3)) < 0.5, rng.random((50, 3)), 0.0)
  zr = rng.random((50, 2))
  ref = np.mean(
    [
      sum((xr[b, j] - (zr[b, j] if j < 2 else 0.0)) ** 2 for j in range(3) if xr[b, j] > 0)
      for b in range(50)
    ]
  )
  assert metrics.gt_loss_active(xr, zr, m) == pytest.approx(ref)
  # Scaled latents: a latent of unit 2 reads twice its value in feature units.
  m2 = dataclasses.replace(m, scale=np.array([2.0, 1.0, 1.0]))
  assert metrics.gt_loss(x, z, m2) == pytest.approx(0.6**2 + 0.09 + 0.25)
  assert metrics.gt_loss(x, z, m2, raw=True) == pytest.approx(0.38)
