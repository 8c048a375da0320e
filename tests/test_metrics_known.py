"""Ground-truth metrics on constructed SAEs whose answer is known exactly.

A "perfect" SAE has one latent per true feature, its encoder column and decoder row along that
feature's direction (latents permuted, and for every architecture whose parameters allow it each
latent rescaled by c_m ∈ [e⁻², e²] with its decoder row rescaled by 1/c_m: the same function).
Its latents are then `σ(W_pᵀ W_p x)` up to permutation and scale, so `evaluate` must give the L_GT
of the true permutation, `E‖x − σ(W_pᵀ W_p x)‖²`, computed here without any matching.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close

import wsae_jax as w
from wsae_jax.evaluation import metrics

ARCHS = ("tied", "relu", "jumprelu", "topk", "batchtopk", "matryoshka_batchtopk", "gated")


def antipodal(n_p=10):
  return np.concatenate([np.eye(n_p), -np.eye(n_p)], axis=1).astype(np.float32)


GEOMETRIES = {
  "antipodal": antipodal,
  "triangles": lambda: w.polygon_matrix(3, 3, n_mono=2),
  "squares": lambda: w.polygon_matrix(2, 4, n_mono=1),
  "random": lambda: np.asarray(w.random_matrix(jax.random.key(3), 8, 12)),
}


def sample(W, S=0.95, n=20_000, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(size=(n, W.shape[1])) * (rng.uniform(size=(n, W.shape[1])) > S)
  return x.astype(np.float32)


def truth_value(x, W, keep=None):
  """L_GT of the true permutation: latents σ(W_pᵀ W_p x), features outside `keep` never fire."""
  x = np.asarray(x, np.float64)
  W = np.asarray(W, np.float64)
  x_m = np.maximum(x @ W.T @ W, 0.0)
  if keep is not None:
    x_m[:, ~keep] = 0.0
  return float(np.mean(np.sum((x - x_m) ** 2, axis=1)))


def perfect_sae(arch, W, *, perm, scale, dead=None):
  """Params of `arch` whose latent perm[j] reads feature j; `scale[j]` rescales that latent (its
  encoder column by 1/c, decoder row by c); latents of features in `dead` never fire."""
  n_p, n = W.shape
  enc_MxP = np.zeros((n, n_p), np.float32)
  dec_MxP = np.zeros((n, n_p), np.float32)
  enc_MxP[perm] = (W / scale).T
  dec_MxP[perm] = (W * scale).T
  b_enc = np.zeros(n, np.float32)
  if dead is not None:
    b_enc[perm[dead]] = -100.0
  kw = {"d_in": n_p, "d_sae": n}
  if arch == "tied":
    cfg = w.TiedSAEConfig(**kw)
    assert dead is None
    return cfg, {"W_enc": jnp.asarray(enc_MxP.T)}
  p = {"W_enc": enc_MxP.T, "W_dec": dec_MxP, "b_enc": b_enc, "b_dec": np.zeros(n_p, np.float32)}
  if arch == "relu":
    cfg = w.ReLUSAEConfig(**kw)
  elif arch == "jumprelu":
    cfg = w.models.make_config("jumprelu", **kw)
    p["threshold"] = np.zeros(n, np.float32)
  elif arch == "topk":
    cfg = w.TopKSAEConfig(**kw, k=n)  # k = n: the selection keeps every positive latent
  elif arch in ("batchtopk", "matryoshka_batchtopk"):
    cfg = w.models.make_config(arch, **kw, k=1.0)
    p["threshold"] = np.float32(0.0)
  elif arch == "gated":  # both paths read the feature: b_gate = b_mag = b_enc, r_mag = 0
    cfg = w.models.make_config("gated", **kw)
    b = p.pop("b_enc")
    p.update(b_gate=b, b_mag=b, r_mag=np.zeros(n, np.float32))
  return cfg, jax.tree.map(jnp.asarray, p)


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("arch", ARCHS)
def test_a_perfect_sae_scores_the_true_permutation(arch, geometry):
  W = GEOMETRIES[geometry]()
  rng = np.random.default_rng(1)
  n = W.shape[1]
  perm = rng.permutation(n)
  # The tied SAE's decoder is its encoder: rescaling a latent changes its function.
  scale = np.ones(n) if arch == "tied" else np.exp(rng.uniform(-2, 2, n))
  cfg, params = perfect_sae(arch, W, perm=perm, scale=scale.astype(np.float32))
  x = sample(W)
  r = w.evaluate(cfg, params, x, W)
  expected = truth_value(x, W)
  assert r["mse"] < 1e-10 or geometry in ("triangles", "random")  # exact where W_p allows it
  assert_close(r["l_gt"], expected, rtol=1e-4, atol=1e-7)
  assert_close(r["l_gt_encoder"], expected, rtol=1e-4, atol=1e-7)
  assert_close(r["match_cos"], 1.0, atol=1e-5)
  m = metrics.match_sae(cfg, params, W)
  assert np.array_equal(m.latent_of_feature, perm)
  assert_close(m.scale, scale, rtol=1e-5)
  # MCC of the true permutation: signed Pearson r of x_j with σ(W_pᵀW_p x)_j.
  x_m = np.maximum(x.astype(np.float64) @ W.T @ W, 0.0)
  r_true = np.mean([np.corrcoef(x[:, j], x_m[:, j])[0, 1] for j in range(n)])
  assert_close(r["mcc"], r_true, rtol=1e-6)
  # Shrinkage of a perfect SAE: the closed form's, per feature.
  active = x > 0
  expected_shrink = np.nanmean(
    np.where(active, x_m / np.where(active, x, 1), 0).sum(0) / active.sum(0)
  )
  assert_close(r["shrinkage"], expected_shrink, rtol=1e-4)


def test_the_reviewers_antipodal_case_within_ten_percent():
  # The reproduction: n_p = 10, n = 20, S = 0.95, 20,000 samples; relu SAE, latents
  # permuted and rescaled by c ∈ [e⁻², e²]. Before signed matching and scaled latents: 34× / 224×.
  W = antipodal(10)
  rng = np.random.default_rng(0)
  for scale in (np.ones(20), np.exp(rng.uniform(-2, 2, 20))):
    cfg, params = perfect_sae("relu", W, perm=rng.permutation(20), scale=scale.astype(np.float32))
    x = sample(W)
    r = w.evaluate(cfg, params, x, W)
    assert r["mse"] < 1e-10
    assert abs(r["l_gt"] / truth_value(x, W) - 1) < 0.10


@pytest.mark.parametrize("arch", ("relu", "topk", "jumprelu"))
def test_half_recovered_counts_the_missing_features_in_full(arch):
  W = GEOMETRIES["squares"]()
  n = W.shape[1]
  rng = np.random.default_rng(2)
  perm = rng.permutation(n)
  dead = np.zeros(n, bool)
  dead[rng.permutation(n)[: n // 2]] = True
  cfg, params = perfect_sae(
    arch, W, perm=perm, scale=np.exp(rng.uniform(-1, 1, n)).astype(np.float32), dead=dead
  )
  x = sample(W, S=0.8)
  r = w.evaluate(cfg, params, x, W)
  assert_close(r["l_gt"], truth_value(x, W, keep=~dead), rtol=1e-4)
  assert_close(r["dead_frac"], dead.mean())


def test_antipodal_opposites_are_not_matched_to_each_other():
  # Decoder rows along −W_p[:, j] are the antipodes' directions; the signed matching pairs each
  # latent with the feature it points to, |cos| could not tell them apart.
  W = antipodal(3)
  dirs = W.T.copy()
  m = metrics.match_latents(dirs, W)
  assert np.array_equal(m.latent_of_feature, np.arange(6))
  assert_close(m.cos, np.ones(6))
  assert_close(metrics.mmcs(-dirs[:3], W[:, :3]), 0.0)  # |cos| said 1


def test_raw_reading_is_the_papers_formula_for_the_tied_sae():
  # Tied SAE with rows of norm 2: the paper's L_GT (raw σ(W_m W_p x)) sees latents twice too
  # large; the scaled reading sees them 4× too large (z·‖row‖ = 4 x_j on orthogonal features).
  W = np.eye(4, dtype=np.float32)
  cfg = w.TiedSAEConfig(d_in=4, d_sae=4)
  x = sample(W, S=0.5)
  r = w.evaluate(cfg, {"W_enc": jnp.asarray(2 * W)}, x, W)
  ex = np.mean(np.sum(x.astype(np.float64) ** 2, axis=1))
  assert_close(r["l_gt_raw"], ex * (2 - 1) ** 2, rtol=1e-5)
  assert_close(r["l_gt"], ex * (4 - 1) ** 2, rtol=1e-5)


def test_every_registered_architecture_is_scored_here():
  assert sorted(ARCHS) == sorted(w.models.ARCHITECTURES)
