import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close
from test_sae import CONFIGS, D_IN, D_SAE, _random_params, np_forward

import wsae_jax as w
from wsae_jax import models
from wsae_jax.objectives.reconstruction import reconstruction_loss

RNG = np.random.default_rng(0)
X = RNG.standard_normal((32, D_IN)).astype(np.float32)
GAMMA = RNG.uniform(0.2, 2.0, D_IN).astype(np.float32)


def test_reconstruction_loss_matches_numpy():
  x_hat = X + RNG.standard_normal(X.shape).astype(np.float32)
  loss, aux = reconstruction_loss(X, x_hat, GAMMA)
  ref = np.mean(np.sum(GAMMA.astype(np.float64) ** 2 * (X - x_hat) ** 2, axis=1))
  assert_close(loss, ref, rtol=1e-5)
  assert_close(aux["mse"], np.mean(np.sum((X - x_hat) ** 2, axis=1)), rtol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.architecture)
def test_gamma_none_is_all_ones(cfg):
  p = _random_params(cfg)
  dead = jnp.arange(D_SAE) % 2 == 0
  plain, aux_plain = models.sae_loss(cfg, p, X, dead_M=dead)
  ones, aux_ones = models.sae_loss(cfg, p, X, gamma=jnp.ones(D_IN), dead_M=dead)
  assert float(plain) == float(ones)  # exactly, not approximately
  g_plain = jax.grad(lambda q: models.sae_loss(cfg, q, X, dead_M=dead)[0])(p)
  g_ones = jax.grad(lambda q: models.sae_loss(cfg, q, X, gamma=jnp.ones(D_IN), dead_M=dead)[0])(p)
  assert_close(g_plain, g_ones, rtol=0, atol=0)


def test_relu_loss_matches_numpy():
  cfg = w.ReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.3)
  p = _random_params(cfg)
  z, x_hat = np_forward(cfg, p, X)
  recon = np.mean(np.sum(GAMMA.astype(np.float64) ** 2 * (X - x_hat) ** 2, axis=1))
  l1 = np.mean(np.sum(z * np.linalg.norm(np.asarray(p["W_dec"], np.float64), axis=1), axis=1))
  loss, aux = models.sae_loss(cfg, p, X, gamma=GAMMA)
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
  recon = np.mean(np.sum(GAMMA.astype(np.float64) ** 2 * residual**2, axis=1))
  loss, out = models.sae_loss(cfg, p, X, gamma=GAMMA, dead_M=jnp.asarray(dead))
  assert_close(out["aux_k"], aux, rtol=1e-5)
  assert_close(loss, recon + 0.5 * aux, rtol=1e-5)
  # No dead latents: no AuxK term, and the AuxK term never moves the main reconstruction.
  loss0, out0 = models.sae_loss(cfg, p, X, gamma=GAMMA, dead_M=jnp.zeros(D_SAE, bool))
  assert float(out0["aux_k"]) == 0.0
  assert_close(loss0, recon, rtol=1e-5)


@pytest.mark.parametrize("chunk_rows", [None, 8])
@pytest.mark.parametrize("n_dead", [1, 3, 4, 5, 9])
def test_auxk_over_gathered_dead_latents_equals_the_full_width(n_dead, chunk_rows, monkeypatch):
  """AuxK gathers the dead latents' columns when at most `aux_width` (here 4) are dead and uses
  the full width beyond, whole or `chunk_rows` rows at a time (each chunk recomputed in the
  backward pass): loss and gradients equal a plain full-width computation every way."""
  from wsae_jax.models import topk

  if chunk_rows:
    monkeypatch.setattr(topk, "AUX_CHUNK_MIN_BYTES", 0)
    monkeypatch.setattr(topk, "AUX_CHUNK_BYTES", chunk_rows * 4 * D_SAE)
  assert topk._aux_row_chunk(32, D_SAE) == (chunk_rows or 32)
  cfg = w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, aux_k=2, aux_coefficient=0.5)
  assert topk.aux_width(cfg) == 4 < D_SAE
  rng = np.random.default_rng(n_dead)
  p = _random_params(cfg)
  dead = jnp.asarray(np.isin(np.arange(D_SAE), rng.permutation(D_SAE)[:n_dead]))
  residual = jnp.asarray(rng.standard_normal((32, D_IN)).astype(np.float32))

  def ours(q):
    return topk.auxk_loss(cfg, q, X, dead, residual, GAMMA, jnp.float32(0))

  def full_width(q):
    pre = topk.pre_activations(cfg, q, X)
    z = w.models.topk_activation(jnp.where(dead, pre, -jnp.inf), 2)
    scale = min(n_dead / 2, 1.0)
    return scale * reconstruction_loss(residual, z @ q["W_dec"], GAMMA)[0]

  assert_close(ours(p), full_width(p), rtol=1e-6)
  assert_close(jax.grad(ours)(p), jax.grad(full_width)(p), rtol=1e-5, atol=1e-6)
  assert_close(jax.jit(jax.grad(ours))(p), jax.grad(full_width)(p), rtol=1e-5, atol=1e-6)


def test_full_width_auxk_chunks_divide_the_batch():
  from wsae_jax.models import topk

  target = topk.AUX_CHUNK_BYTES // (4 * 18432)  # 227 rows of 18,432 latents
  assert topk._aux_row_chunk(4096, 18432) == 128  # the largest divisor <= 227
  assert topk._aux_row_chunk(1000, 18432) == 200
  assert topk._aux_row_chunk(1009, 18432) == 1009  # prime: no useful divisor, all rows at once
  assert topk._aux_row_chunk(target, 18432) == target  # fits at once
  assert topk._aux_row_chunk(4096, 200) == 4096
  assert topk._aux_row_chunk(512, 18432) == 512  # 38 MB: under AUX_CHUNK_MIN_BYTES, not chunked


def test_weighted_loss_is_the_plain_loss_of_rescaled_data():
  # ‖Γ(x − x̂)‖² is the plain loss of Γx against Γx̂.
  x_hat = X[::-1]
  a = reconstruction_loss(X, x_hat, GAMMA)[0]
  b = reconstruction_loss(X * GAMMA, x_hat * GAMMA)[0]
  assert_close(a, b, rtol=1e-5)


@pytest.mark.parametrize("k_active", [None, 2])
def test_topk_sparse_path_equals_dense_path(k_active):
  dense = w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, sparse_path=False)
  sparse = w.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=3, sparse_path=True)
  p = _random_params(dense)
  dead = jnp.arange(D_SAE) % 3 == 0
  f = lambda cfg: jax.value_and_grad(
    lambda q: models.sae_loss(cfg, q, X, gamma=GAMMA, dead_M=dead, hp={"k": k_active}), has_aux=True
  )(p)
  (l_d, aux_d), g_d = f(dense)
  (l_s, aux_s), g_s = f(sparse)
  assert_close(l_s, l_d, rtol=1e-6)
  assert_close(g_s, g_d, rtol=1e-5, atol=1e-6)
  for key in ("l0", "mse", "aux_k"):
    assert_close(aux_s[key], aux_d[key], rtol=1e-6)
  assert np.array_equal(np.asarray(aux_s["fired"]), np.asarray(aux_d["fired"]))


def test_sparse_path_is_chosen_by_width_over_k():
  assert w.TopKSAEConfig(d_in=8, d_sae=4608, k=32).use_sparse_path == (
    4608 >= w.TopKSAEConfig.SPARSE_MIN_RATIO * 32
  )
  assert not w.TopKSAEConfig(d_in=8, d_sae=64, k=32).use_sparse_path
  assert w.TopKSAEConfig(d_in=8, d_sae=64, k=32, sparse_path=True).use_sparse_path


def test_jumprelu_loss_and_threshold_gradient_match_numpy():
  """The L0 term counts pre > θ; θ's gradient is the straight-through estimate, written out by
  hand: −(θ/ε) Σ_b K((pre−θ)/ε) ∂L/∂z (the activation) − (λ/B)(1/ε) Σ_b K((pre−θ)/ε) (the L0)."""
  cfg = w.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, l0_coefficient=0.3, bandwidth=0.4)
  p = _random_params(cfg)
  p = {**p, "threshold": jnp.asarray(RNG.uniform(0.0, 0.5, D_SAE), jnp.float32)}
  pp = {k: np.asarray(v, np.float64) for k, v in p.items()}
  x = X.astype(np.float64)
  pre = x @ pp["W_enc"] + pp["b_enc"]
  on = pre > pp["threshold"]
  z = np.where(on, pre, 0.0)
  err = x - (z @ pp["W_dec"] + pp["b_dec"])
  g2 = GAMMA.astype(np.float64) ** 2
  recon = np.mean(np.sum(g2 * err**2, axis=1))
  loss, aux = models.sae_loss(cfg, p, X, gamma=GAMMA)
  assert_close(loss, recon + 0.3 * np.mean(on.sum(axis=1)), rtol=1e-5)
  assert_close(aux["l0"], np.mean(on.sum(axis=1)), rtol=1e-6)
  eps, B = cfg.bandwidth, X.shape[0]
  kernel = (np.abs((pre - pp["threshold"]) / eps) < 0.5).astype(np.float64)
  dL_dz = -2.0 / B * (err * g2) @ pp["W_dec"].T
  ref = -(pp["threshold"] / eps) * np.sum(kernel * dL_dz, axis=0) - 0.3 / B / eps * np.sum(
    kernel, axis=0
  )
  grad = jax.grad(lambda q: models.sae_loss(cfg, q, X, gamma=GAMMA)[0])(p)
  assert np.count_nonzero(kernel.sum(0)) >= D_SAE // 2  # the check is not vacuous
  assert_close(grad["threshold"], ref, rtol=1e-4, atol=1e-6)


def test_batchtopk_keeps_the_largest_activations_of_the_whole_batch():
  cfg = w.BatchTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=2.5)
  p = _random_params(cfg)
  pp = {k: np.asarray(v, np.float64) for k, v in p.items()}
  relu = np.maximum((X - pp["b_dec"]) @ pp["W_enc"] + pp["b_enc"], 0)
  keep = int(2.5 * X.shape[0])
  cut = np.sort(relu.ravel())[::-1][keep - 1]
  z_ref = np.where(relu >= cut, relu, 0.0)
  x_hat = z_ref @ pp["W_dec"] + pp["b_dec"]
  loss, aux = models.sae_loss(cfg, p, X)
  assert_close(aux["recon"], np.mean(np.sum((X - x_hat) ** 2, axis=1)), rtol=1e-5)
  assert_close(aux["l0"], np.mean(np.sum(z_ref > 0, axis=1)), rtol=1e-6)
  assert float(aux["min_selected"]) == pytest.approx(cut, rel=1e-5)
  # Rows differ in how many latents they keep (a per-row Top-k would give each exactly 2 or 3).
  counts = np.sum(z_ref > 0, axis=1)
  assert counts.min() < 2 and counts.max() > 3
  # A sweep member's k is traced: the same program keeps ⌊k·B⌋ for another k.
  _, aux4 = jax.jit(lambda q, kk: models.sae_loss(cfg, q, X, hp={"k": kk}))(p, 1.0)
  assert float(aux4["l0"]) * X.shape[0] == X.shape[0]


def test_batchtopk_threshold_follows_the_smallest_kept_activation():
  """After each step θ ← (1 − r)θ + r·min_selected (SAELens' moving average)."""
  cfg = w.BatchTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=2.0, threshold_lr=0.5)
  x = np.abs(X) + 0.1
  tc = w.TrainConfig(steps=3, batch_size=32, learning_rate=1e-3, warmup_steps=0, log_every=1)
  p0 = _random_params(cfg)
  p0 = {**p0, "threshold": jnp.zeros((), jnp.float32)}
  state, hist = w.train(cfg, tc, iter([x] * 3), params=p0, progress=False)
  theta = 0.0
  for rec in hist.records:
    theta = 0.5 * theta + 0.5 * rec["min_selected"]
  assert_close(state.params["threshold"], theta, rtol=1e-5)
  assert theta > 0


def test_unknown_hyperparameters_are_refused():
  cfg = w.ReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)
  with pytest.raises(
    w.WSAEInputError, match=r"relu SAEs take the hyperparameters \['l1_coefficient'\], not \['k'\]"
  ):
    models.sae_loss(cfg, _random_params(cfg), X, hp={"k": 3})


def test_matryoshka_sums_the_prefix_errors_and_is_batchtopk_at_one_level():
  """Each level reconstructs with its prefix of the batch-selected code (numpy reference); with
  one level the loss, its gradient and θ's target are BatchTopK's."""
  widths = (3, 6, D_SAE)
  cfg = w.MatryoshkaBatchTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=2.5, matryoshka_widths=widths)
  p = _random_params(cfg)
  pp = {k: np.asarray(v, np.float64) for k, v in p.items()}
  relu = np.maximum((X - pp["b_dec"]) @ pp["W_enc"] + pp["b_enc"], 0)
  cut = np.sort(relu.ravel())[::-1][int(2.5 * X.shape[0]) - 1]
  z = np.where(relu >= cut, relu, 0.0)
  g2 = GAMMA.astype(np.float64) ** 2
  errs = [
    np.mean(np.sum(g2 * (X - z[:, :n] @ pp["W_dec"][:n] - pp["b_dec"]) ** 2, axis=1))
    for n in widths
  ]
  loss, aux = models.sae_loss(cfg, p, X, gamma=GAMMA)
  assert errs[0] > errs[1] > errs[2]  # the inner levels are worse: the check is not vacuous
  assert_close(aux["recon"], errs[-1], rtol=1e-5)
  assert_close(aux["nested"], sum(errs[:-1]), rtol=1e-5)
  assert_close(loss, sum(errs), rtol=1e-5)

  one = w.MatryoshkaBatchTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=2.5, matryoshka_widths=(D_SAE,))
  btk = w.BatchTopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=2.5)
  dead = jnp.arange(D_SAE) % 3 == 0
  f = lambda c: jax.value_and_grad(lambda q: models.sae_loss(c, q, X, gamma=GAMMA, dead_M=dead)[0])(
    p
  )
  assert_close(f(one), f(btk), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
  "widths, match",
  [
    ((4, 8), f"must end with d_sae = {D_SAE}"),
    ((8, 4, D_SAE), "strictly increasing"),
    ((0, D_SAE), "matryoshka_widths"),
    ("4,10", "must be a list of integers"),
  ],
)
def test_bad_matryoshka_widths_are_refused(widths, match):
  with pytest.raises(w.WSAEInputError, match=match):
    w.models.config_from_dict(
      {
        "architecture": "matryoshka_batchtopk",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "k": 2.0,
        "matryoshka_widths": widths,
      },
      "cfg",
    )


def test_matryoshka_widths_from_json_become_a_hashable_tuple():
  cfg = w.models.config_from_dict(
    {
      "architecture": "matryoshka_batchtopk",
      "d_in": D_IN,
      "d_sae": D_SAE,
      "k": 2.0,
      "matryoshka_widths": [5, D_SAE],
    },
    "cfg",
  )
  assert cfg.matryoshka_widths == (5, D_SAE) and hash(cfg)
  assert w.MatryoshkaBatchTopKSAEConfig(d_in=4, d_sae=64, k=2.0).levels == (8, 16, 32, 64)


def test_gated_gate_learns_only_from_its_penalty_and_the_frozen_decoder_term():
  """The gate's step passes no gradient: b_gate's gradient is the L1 term's plus the auxiliary
  reconstruction's (numpy reference), and that auxiliary term moves neither W_dec nor b_dec."""
  cfg = w.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.3)
  p = _random_params(cfg)
  pp = {k: np.asarray(v, np.float64) for k, v in p.items()}
  xc = X - pp["b_dec"]
  pi_gate = xc @ pp["W_enc"] + pp["b_gate"]
  on = (pi_gate > 0).astype(np.float64)
  norms = np.linalg.norm(pp["W_dec"], axis=1)
  g2 = GAMMA.astype(np.float64) ** 2
  resid = X - (np.maximum(pi_gate, 0) @ pp["W_dec"] + pp["b_dec"])  # the auxiliary residual
  B = X.shape[0]
  d_aux = -2 / B * (resid * g2) @ pp["W_dec"].T  # d aux / d ReLU(π_gate)
  ref = np.sum(on * (0.3 / B * norms + d_aux), axis=0)
  grad = jax.grad(lambda q: models.sae_loss(cfg, q, X, gamma=GAMMA)[0])(p)
  assert 0 < on.mean() < 1  # some gates open, some shut
  assert_close(grad["b_gate"], ref, rtol=1e-4, atol=1e-6)
  # W_dec's gradient is the main reconstruction's plus the L1 norms' only.
  z = on * np.maximum(xc @ (pp["W_enc"] * np.exp(pp["r_mag"])) + pp["b_mag"], 0)
  r_main = X - (z @ pp["W_dec"] + pp["b_dec"])
  g_dec = (
    -2 / B * z.T @ (r_main * g2)
    + 0.3 * np.mean(np.maximum(pi_gate, 0), axis=0)[:, None] * pp["W_dec"] / norms[:, None]
  )
  assert_close(grad["W_dec"], g_dec, rtol=1e-4, atol=1e-6)
