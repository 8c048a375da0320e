import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax import models

D_IN, D_SAE = 6, 10


def _relu(v):
  return np.maximum(v, 0.0)


def np_forward(cfg, p, x):
  """Slow, obvious numpy reference for every architecture."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  x = np.asarray(x, np.float64)
  if cfg.architecture == "tied":
    z = _relu(x @ p["W_enc"])
    return z, z @ p["W_enc"].T
  if cfg.architecture == "relu":
    z = _relu(x @ p["W_enc"] + p["b_enc"])
    return z, z @ p["W_dec"] + p["b_dec"]
  if cfg.architecture == "jumprelu":
    pre = x @ p["W_enc"] + p["b_enc"]
    z = np.where(pre > p["threshold"], _relu(pre), 0.0)
    return z, z @ p["W_dec"] + p["b_dec"]
  if cfg.architecture == "gated":
    gate = (x - p["b_dec"]) @ p["W_enc"] + p["b_gate"] > 0
    mag = (x - p["b_dec"]) @ (p["W_enc"] * np.exp(p["r_mag"])) + p["b_mag"]
    z = np.where(gate, _relu(mag), 0.0)
    return z, z @ p["W_dec"] + p["b_dec"]
  pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
  if cfg.architecture in ("batchtopk", "matryoshka_batchtopk"):  # inference: one global threshold
    z = np.where(pre > p["threshold"], _relu(pre), 0.0)
    return z, z @ p["W_dec"] + p["b_dec"]
  z = np.zeros_like(pre)
  for b in range(pre.shape[0]):
    top = np.argsort(-pre[b])[: cfg.k]
    z[b, top] = _relu(pre[b, top])
  return z, z @ p["W_dec"] + p["b_dec"]


def _random_params(cfg, seed=0):
  p = models.init(cfg, jax.random.key(seed))
  rng = np.random.default_rng(seed)
  # Non-trivial biases so that the reference checks them too.
  return {k: jnp.asarray(v + 0.1 * rng.standard_normal(v.shape), jnp.float32) for k, v in p.items()}


CONFIGS = [
  w.TiedSAEConfig(d_in=D_IN, d_sae=D_SAE),
  w.ReLUSAEConfig(d_in=D_IN, d_sae=D_SAE),
  w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3),
  w.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, l0_coefficient=0.1),
  w.BatchTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3.0),
  w.MatryoshkaBatchTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3.0),
  w.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.architecture)
def test_encode_decode_match_numpy(cfg):
  p = _random_params(cfg)
  x = np.random.default_rng(1).standard_normal((16, D_IN)).astype(np.float32)
  z, x_hat = models.forward(cfg, p, x)
  z_ref, x_hat_ref = np_forward(cfg, p, x)
  assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
  assert_close(x_hat, x_hat_ref, rtol=1e-5, atol=1e-5)
  assert_close(models.decode(cfg, p, z), x_hat, rtol=1e-6, atol=1e-6)


def test_every_registered_architecture_is_tested_here():
  assert sorted(c.architecture for c in CONFIGS) == sorted(models.ARCHITECTURES)


def test_param_names_and_shapes_follow_saelens():
  p = models.init(CONFIGS[1], jax.random.key(0))
  assert {k: v.shape for k, v in p.items()} == {
    "W_enc": (D_IN, D_SAE),
    "W_dec": (D_SAE, D_IN),
    "b_enc": (D_SAE,),
    "b_dec": (D_IN,),
  }
  assert set(models.init(CONFIGS[0], jax.random.key(0))) == {"W_enc"}
  assert models.decoder_matrix(CONFIGS[0], models.init(CONFIGS[0], jax.random.key(0))).shape == (
    D_SAE,
    D_IN,
  )


def test_topk_has_exactly_k_nonzeros():
  cfg = w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4)
  p = _random_params(cfg)
  p["b_enc"] = jnp.full((D_SAE,), 10.0)  # every pre-activation positive
  x = np.random.default_rng(2).standard_normal((32, D_IN)).astype(np.float32)
  z = np.asarray(models.encode(cfg, p, x))
  assert np.all((z != 0).sum(axis=1) == 4)
  # Without the bias some rows have fewer than k positive pre-activations: never more than k.
  p["b_enc"] = jnp.full((D_SAE,), -1.0)
  assert np.all((np.asarray(models.encode(cfg, p, x)) != 0).sum(axis=1) <= 4)


@pytest.mark.parametrize(
  "width, k", [(1, 1), (7, 3), (40, 16), (200, 60), (200, 200), (513, 32), (12, 20)]
)
@pytest.mark.parametrize("data", ["normal", "ties", "non-positive"])
def test_radix_selection_equals_lax_top_k(width, k, data):
  """The sort-free selection keeps exactly the entries lax.top_k keeps (ties: lowest index
  first; k > width: all), with the same gradient, for a static and a per-row traced k."""
  rng = np.random.default_rng(width * 1000 + k)
  pre = {
    "normal": rng.standard_normal((48, width)),
    "ties": rng.integers(-2, 4, (48, width)).astype(np.float64) / 2,
    "non-positive": -np.abs(rng.standard_normal((48, width))),
  }[data]
  pre = jnp.asarray(pre, jnp.float32)
  static_k = min(k, width)
  select = lambda p, method, ka=None: models.topk_activation(p, static_k, ka, method=method)
  for ka in (None, max(1, static_k // 2)):
    a, b = select(pre, "top_k", ka), select(pre, "radix", ka)
    assert np.array_equal(np.asarray(a), np.asarray(b)), ka
    ga = jax.grad(lambda p: jnp.sum(jnp.sin(select(p, "top_k", ka))))(pre)
    gb = jax.grad(lambda p: jnp.sum(jnp.sin(select(p, "radix", ka))))(pre)
    assert np.array_equal(np.asarray(ga), np.asarray(gb)), ka
  # k traced per row (as a sweep's per-member k is): vmap over rows with their own k.
  ks = jnp.asarray(rng.integers(1, static_k + 1, 48), jnp.int32)
  by_row = jax.vmap(lambda r, kk: models.topk_activation(r[None], static_k, kk, method="radix")[0])
  ref = jax.vmap(lambda r, kk: models.topk_activation(r[None], static_k, kk, method="top_k")[0])
  assert np.array_equal(np.asarray(by_row(pre, ks)), np.asarray(ref(pre, ks)))
  if k > width:  # more than the row: every positive entry survives
    m = models.kth_largest_mask(jnp.maximum(pre, 0), k)
    assert bool(jnp.all(m))


@pytest.mark.parametrize(
  "width, k, block", [(20, 3, 8), (600, 32, 256), (600, 300, 256), (100, 100, 256), (1000, 7, 64)]
)
@pytest.mark.parametrize("data", ["normal", "ties", "non-positive"])
def test_blocked_selection_equals_lax_top_k(width, k, block, data, monkeypatch):
  """The two-stage selection (top-k per block of latents, then over the candidates) keeps
  exactly what lax.top_k keeps, ties included, with the same gradient, across block edges and
  padding (width not a multiple of the block)."""
  monkeypatch.setattr(models.selection, "BLOCK", block)
  rng = np.random.default_rng(width + k)
  pre = {
    "normal": rng.standard_normal((32, width)),
    "ties": rng.integers(-2, 4, (32, width)).astype(np.float64) / 2,
    "non-positive": -np.abs(rng.standard_normal((32, width))),
  }[data]
  pre = jnp.asarray(pre, jnp.float32)
  sel = lambda p, m: models.topk_activation(p, k, method=m)
  mask = models.selection.blocked_kth_largest_mask(jnp.maximum(pre, 0), k, block=block)
  assert (np.asarray(mask).sum(1) == k).all()
  a, b = sel(pre, "top_k"), sel(pre, "blocked")
  assert np.array_equal(np.asarray(a), np.asarray(b))
  ga = jax.grad(lambda p: jnp.sum(jnp.sin(sel(p, "top_k"))))(pre)
  gb = jax.grad(lambda p: jnp.sum(jnp.sin(sel(p, "blocked"))))(pre)
  assert np.array_equal(np.asarray(ga), np.asarray(gb))


def test_radix_mask_counts_exactly_k_against_numpy():
  x = np.abs(np.random.default_rng(0).standard_normal((64, 200))).astype(np.float32)
  x[:, 50:60] = x[:, 49:50]  # ten ties with column 49 in every row
  for k in (1, 5, 50, 55, 199):
    m = np.asarray(models.kth_largest_mask(jnp.asarray(x), k))
    assert np.all(m.sum(1) == k)
    order = np.lexsort((np.arange(200)[None].repeat(64, 0), -x), axis=1)[:, :k]  # stable ranks
    ref = np.zeros_like(m)
    np.put_along_axis(ref, order, True, axis=1)
    assert np.array_equal(m, ref), k


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.architecture)
def test_permuting_latents_permutes_outputs(cfg):
  p = _random_params(cfg)
  perm = np.random.default_rng(3).permutation(D_SAE)
  q = dict(p)
  q["W_enc"] = p["W_enc"][:, perm]
  if "W_dec" in p:
    q["W_dec"] = p["W_dec"][perm]
  for name in ("b_enc", "b_gate", "b_mag", "r_mag", "threshold"):  # per-latent vectors
    if np.ndim(p.get(name, 0)) == 1:
      q[name] = p[name][perm]
  x = np.random.default_rng(4).standard_normal((8, D_IN)).astype(np.float32)
  z, x_hat = models.forward(cfg, p, x)
  zq, x_hat_q = models.forward(cfg, q, x)
  assert_close(zq, np.asarray(z)[:, perm], atol=1e-6)
  assert_close(x_hat_q, x_hat, rtol=1e-5, atol=1e-5)


def test_topk_init_has_unit_decoder_rows():
  p = models.init(CONFIGS[2], jax.random.key(0))
  assert_close(jnp.linalg.norm(p["W_dec"], axis=1), np.ones(D_SAE), atol=1e-6)
  assert_close(p["W_enc"], p["W_dec"].T)


def test_config_is_hashable_and_frozen():
  cfg = CONFIGS[2]
  assert hash(cfg) == hash(w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3))
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.k = 5


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda: w.TopKSAEConfig(d_in=4, d_sae=8, k=9), "k must be <= d_sae"),
    (lambda: w.TopKSAEConfig(d_in=4, d_sae=8, k=0), "k must be >= 1"),
    (lambda: w.TiedSAEConfig(d_in=4, d_sae=0), "d_sae must be >= 1"),
    (lambda: w.ReLUSAEConfig(d_in=0, d_sae=4), "d_in must be >= 1"),
    (lambda: w.ReLUSAEConfig(d_in=4, d_sae=4, l1_coefficient=-1.0), "l1_coefficient"),
    (lambda: w.TiedSAEConfig(d_in=4.5, d_sae=4), "d_in must be an integer"),
    (lambda: w.make_config("abstopk", d_in=4, d_sae=4), "unknown architecture 'abstopk'"),
  ],
)
def test_bad_configs_raise(make, match):
  with pytest.raises(w.WSAEInputError, match=match):
    make()
