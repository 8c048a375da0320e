import jax
import jax.numpy as jnp
import numpy as np
import pytest

import wsae_jax as w
from wsae_jax import losses, sae
from helpers import assert_close
from test_sae import CONFIGS, D_IN, D_SAE, _random_params, np_forward

RNG = np.random.default_rng(0)
X = RNG.standard_normal((32, D_IN)).astype(np.float32)
GAMMA = RNG.uniform(0.2, 2.0, D_IN).astype(np.float32)


def test_reconstruction_loss_matches_numpy():
  x_hat = X + RNG.standard_normal(X.shape).astype(np.float32)
  loss, aux = losses.reconstruction_loss(X, x_hat, GAMMA)
  ref = np.mean(np.sum(GAMMA.astype(np.float64) ** 2 * (X - x_hat) ** 2, axis=1))
  assert_close(loss, ref, rtol=1e-5)
  assert_close(aux["mse"], np.mean(np.sum((X - x_hat) ** 2, axis=1)), rtol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.architecture)
def test_gamma_none_is_all_ones(cfg):
  p = _random_params(cfg)
  dead = jnp.arange(D_SAE) % 2 == 0
  plain, aux_plain = losses.sae_loss(cfg, p, X, dead_M=dead)
  ones, aux_ones = losses.sae_loss(cfg, p, X, gamma=jnp.ones(D_IN), dead_M=dead)
  assert float(plain) == float(ones)  # exactly, not approximately
  g_plain = jax.grad(lambda q: losses.sae_loss(cfg, q, X, dead_M=dead)[0])(p)
  g_ones = jax.grad(lambda q: losses.sae_loss(cfg, q, X, gamma=jnp.ones(D_IN), dead_M=dead)[0])(p)
  assert_close(g_plain, g_ones, rtol=0, atol=0)


def test_relu_loss_matches_numpy():
  cfg = w.ReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.3)
  p = _random_params(cfg)
  z, x_hat = np_forward(cfg, p, X)
  recon = np.mean(np.sum(GAMMA.astype(np.float64) ** 2 * (X - x_hat) ** 2, axis=1))
  l1 = np.mean(np.sum(z * np.linalg.norm(np.asarray(p["W_dec"], np.float64), axis=1), axis=1))
  loss, aux = losses.sae_loss(cfg, p, X, gamma=GAMMA)
  assert_close(loss, recon + 0.3 * l1, rtol=1e-5)
  assert_close(aux["l0"], np.mean(np.sum(z > 0, axis=1)), rtol=1e-6)


def test_topk_auxk_matches_slow_reference():
  cfg = w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, aux_k=2, aux_coefficient=0.5)
  p = _random_params(cfg)
  dead = np.zeros(D_SAE, bool)
  dead[[1, 4, 7]] = True
  z, x_hat = np_forward(cfg, p, X)
  pp = {k: np.asarray(v, np.float64) for k, v in p.items()}
  pre = (X - pp["b_dec"]) @ pp["W_enc"] + pp["b_enc"]
  residual = X - x_hat
  aux = 0.0
  for b in range(X.shape[0]):
    cand = [j for j in np.argsort(-pre[b]) if dead[j]][:2]
    e_hat = sum(max(pre[b, j], 0.0) * pp["W_dec"][j] for j in cand)
    aux += np.sum(GAMMA.astype(np.float64) ** 2 * (residual[b] - e_hat) ** 2)
  aux = aux / X.shape[0] * min(3 / 2, 1.0)
  recon = np.mean(np.sum(GAMMA.astype(np.float64) ** 2 * residual ** 2, axis=1))
  loss, out = losses.sae_loss(cfg, p, X, gamma=GAMMA, dead_M=jnp.asarray(dead))
  assert_close(out["aux_k"], aux, rtol=1e-5)
  assert_close(loss, recon + 0.5 * aux, rtol=1e-5)
  # No dead latents: no AuxK term, and the AuxK term never moves the main reconstruction.
  loss0, out0 = losses.sae_loss(cfg, p, X, gamma=GAMMA, dead_M=jnp.zeros(D_SAE, bool))
  assert float(out0["aux_k"]) == 0.0
  assert_close(loss0, recon, rtol=1e-5)


def test_weighted_loss_is_the_plain_loss_of_rescaled_data():
  # ‖Γ(x − x̂)‖² is the plain loss of Γx against Γx̂.
  x_hat = X[::-1]
  a = losses.reconstruction_loss(X, x_hat, GAMMA)[0]
  b = losses.reconstruction_loss(X * GAMMA, x_hat * GAMMA)[0]
  assert_close(a, b, rtol=1e-5)


@pytest.mark.parametrize("k_active", [None, 2])
def test_topk_sparse_path_equals_dense_path(k_active):
  dense = w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, sparse_path=False)
  sparse = w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, sparse_path=True)
  p = _random_params(dense)
  dead = jnp.arange(D_SAE) % 3 == 0
  f = lambda cfg: jax.value_and_grad(
      lambda q: losses.sae_loss(cfg, q, X, gamma=GAMMA, dead_M=dead, k=k_active), has_aux=True)(p)
  (l_d, aux_d), g_d = f(dense)
  (l_s, aux_s), g_s = f(sparse)
  assert_close(l_s, l_d, rtol=1e-6)
  assert_close(g_s, g_d, rtol=1e-5, atol=1e-6)
  for key in ("l0", "mse", "aux_k"):
    assert_close(aux_s[key], aux_d[key], rtol=1e-6)
  assert np.array_equal(np.asarray(aux_s["fired"]), np.asarray(aux_d["fired"]))


def test_sparse_path_is_chosen_by_width_over_k():
  assert w.TopKSAEConfig(d_in=8, d_sae=4608, k=32).use_sparse_path == (
      4608 >= w.TopKSAEConfig.SPARSE_MIN_RATIO * 32)
  assert not w.TopKSAEConfig(d_in=8, d_sae=64, k=32).use_sparse_path
  assert w.TopKSAEConfig(d_in=8, d_sae=64, k=32, sparse_path=True).use_sparse_path
