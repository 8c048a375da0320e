"""Pure SAE losses with per-input-dimension reweighting: `loss(...) -> (scalar, aux_metrics)`.

The weighted reconstruction error is the paper's `‖Γ (x − x̂)‖²`, `Γ = diag(γ)`: each squared error
is weighted by `γ_i²`. `gamma=None` is the ordinary (unweighted) SAE loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wsae_jax import sae as sae_lib


def _weighted_sq_err(x_BxD, x_hat_BxD, gamma_D):
  err = (x_BxD - x_hat_BxD) ** 2
  if gamma_D is not None:
    err = err * jnp.square(gamma_D)
  return jnp.mean(jnp.sum(err, axis=-1))


def reconstruction_loss(x_BxD: jax.Array, x_hat_BxD: jax.Array,
                        gamma=None) -> tuple[jax.Array, dict]:
  """Batch mean of `Σ_i γ_i² (x_i − x̂_i)²`; with `gamma=None` the plain squared error.

  Returns `(loss, {"mse": unweighted squared error})`.

  >>> x = jnp.array([[1.0, 2.0]]); x_hat = jnp.array([[0.0, 0.0]])
  >>> float(reconstruction_loss(x, x_hat, gamma=jnp.array([1.0, 0.5]))[0])
  2.0
  """
  loss = _weighted_sq_err(x_BxD, x_hat_BxD, gamma)
  mse = loss if gamma is None else _weighted_sq_err(x_BxD, x_hat_BxD, None)
  return loss, {"mse": mse}


def _fvu(x_BxD, mse):
  var = jnp.sum(jnp.var(x_BxD, axis=0))
  return mse / jnp.maximum(var, jnp.finfo(x_BxD.dtype).tiny)


def _common_aux(x_BxD, z_BxM, mse):
  return {"mse": mse, "fvu": _fvu(x_BxD, mse),
          "l0": jnp.mean(jnp.sum(z_BxM > 0, axis=-1).astype(jnp.float32)),
          "fired": jnp.any(z_BxM > 0, axis=0)}


def tied_loss(cfg: sae_lib.TiedSAEConfig, params, x_BxD, *, gamma=None, **_):
  """The theory's `L_(W)SAE = E‖Γ(x_p − W_mᵀ σ(W_m x_p))‖²`; no sparsity term."""
  z, x_hat = sae_lib.forward(cfg, params, x_BxD)
  recon, r_aux = reconstruction_loss(x_BxD, x_hat, gamma)
  return recon, {"loss": recon, "recon": recon, **_common_aux(x_BxD, z, r_aux["mse"])}


def relu_loss(cfg: sae_lib.ReLUSAEConfig, params, x_BxD, *, gamma=None, l1_coefficient=None, **_):
  """Weighted reconstruction plus `λ · E Σ_j z_j ‖W_dec[j]‖` (Anthropic, April 2024).

  `l1_coefficient` overrides `cfg.l1_coefficient` (it may be traced, e.g. one value per sweep member).
  """
  z, x_hat = sae_lib.forward(cfg, params, x_BxD)
  recon, r_aux = reconstruction_loss(x_BxD, x_hat, gamma)
  dec_norms_M = jnp.linalg.norm(params["W_dec"], axis=-1)
  sparsity = jnp.mean(z @ dec_norms_M)
  lam = cfg.l1_coefficient if l1_coefficient is None else l1_coefficient
  loss = recon + lam * sparsity
  return loss, {"loss": loss, "recon": recon, "l1": sparsity,
                **_common_aux(x_BxD, z, r_aux["mse"])}


def _topk_dense(cfg, params, x_BxD, pre_BxM, k):
  """Top-k forward through dense `(batch, d_sae)` codes: every product is d_sae wide."""
  z = sae_lib.topk_activation(pre_BxM, cfg.k, k_active=k)
  x_hat = sae_lib.decode(cfg, params, z)
  l0 = jnp.mean(jnp.sum(z > 0, axis=-1).astype(jnp.float32))
  return x_hat, l0, jnp.any(z > 0, axis=0)


def _topk_sparse(cfg, params, x_BxD, pre_BxM, k):
  """Top-k forward that touches only the k selected latents of each example.

  The selection uses the (stopped-gradient) dense pre-activations; the selected activations are
  recomputed from gathered encoder columns, and the reconstruction sums gathered decoder rows. Its
  gradient is therefore a scatter-add into k rows per example instead of two dense
  `(batch, d_sae) × (d_sae, d_in)` products: O(B·k·d_in) instead of O(B·d_sae·d_in).
  """
  _, idx_BxK = jax.lax.top_k(jax.lax.stop_gradient(pre_BxM), cfg.k)
  enc_rows_BxKxD = params["W_enc"].T[idx_BxK]
  vals = jnp.einsum("bd,bkd->bk", x_BxD - params["b_dec"], enc_rows_BxKxD) + params["b_enc"][idx_BxK]
  if k is not None:
    vals = jnp.where(jnp.arange(cfg.k) < k, vals, 0.0)
  acts_BxK = jax.nn.relu(vals)
  x_hat = jnp.einsum("bk,bkd->bd", acts_BxK, params["W_dec"][idx_BxK]) + params["b_dec"]
  active = acts_BxK > 0
  l0 = jnp.mean(jnp.sum(active, axis=-1).astype(jnp.float32))
  fired = jnp.zeros((cfg.d_sae,), bool).at[idx_BxK].max(active)
  return x_hat, l0, fired


def topk_loss(cfg: sae_lib.TopKSAEConfig, params, x_BxD, *, gamma=None, dead_M=None, k=None, **_):
  """Weighted reconstruction plus the AuxK loss.

  AuxK (Gao et al. 2024): the `aux_k` largest pre-activations among dead latents reconstruct the
  (stopped-gradient) residual `x − x̂` through the decoder without bias; weighted by γ like the main
  term and scaled by `min(n_dead / aux_k, 1)` (as SAELens does), so it fades as latents revive.
  It is computed only when some latent is dead. `dead_M` is a boolean mask of dead latents (None:
  no AuxK term). `k` (<= cfg.k, may be traced) keeps only the k largest of the cfg.k selected
  latents, so one compiled program serves many k. `cfg.use_sparse_path` picks the sparse forward.
  """
  pre = sae_lib.pre_activations(cfg, params, x_BxD)
  path = _topk_sparse if cfg.use_sparse_path else _topk_dense
  x_hat, l0, fired = path(cfg, params, x_BxD, pre, k)
  recon, r_aux = reconstruction_loss(x_BxD, x_hat, gamma)
  if dead_M is None:
    aux = recon * 0  # not a fresh zero: it carries recon's sharding axes inside shard_map
  else:
    aux_k = cfg.resolved_aux_k
    n_dead = jnp.sum(dead_M)

    def aux_term():
      residual = jax.lax.stop_gradient(x_BxD - x_hat)
      z_aux = sae_lib.topk_activation(jnp.where(dead_M, pre, -jnp.inf), aux_k)
      scale = jnp.minimum(n_dead / aux_k, 1.0).astype(recon.dtype)
      return scale * reconstruction_loss(residual, z_aux @ params["W_dec"], gamma)[0]

    # `recon * 0` (not a fresh zero) keeps the branch types equal inside shard_map.
    aux = jax.lax.cond(n_dead > 0, aux_term, lambda: recon * 0)
  loss = recon + cfg.aux_coefficient * aux
  mse = r_aux["mse"]
  return loss, {"loss": loss, "recon": recon, "aux_k": aux, "mse": mse, "fvu": _fvu(x_BxD, mse),
                "l0": l0, "fired": fired}


_LOSSES = {"tied": tied_loss, "relu": relu_loss, "topk": topk_loss}


def sae_loss(cfg: sae_lib.SAEConfig, params, x_BxD, *, gamma=None, dead_M=None,
             l1_coefficient=None, k=None):
  """The training loss of `cfg`'s architecture: `(scalar, aux_metrics)`.

  `aux_metrics` holds scalars (`loss`, `recon`, `mse`, `fvu`, `l0`, and the architecture's
  penalty) plus `fired`, a `(d_sae,)` mask of latents active anywhere in the batch.
  `l1_coefficient` (relu) and `k` (topk) override the config's values and may be traced.
  """
  return _LOSSES[cfg.architecture](cfg, params, x_BxD, gamma=gamma, dead_M=dead_M,
                                   l1_coefficient=l1_coefficient, k=k)
