"""The weighted reconstruction error, the paper's `‖Γ (x − x̂)‖²` with `Γ = diag(γ)`.

Each squared error is weighted by `γ_i²`; `gamma=None` is the ordinary (unweighted) SAE loss.
Every architecture's loss is this term plus its own penalties (see `wsae_jax.models`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wsae_jax import _validate as V


def _at_least_f32(a):
  """`a` in float32 if it is in a narrower float (bf16 products): sums accumulate in float32."""
  return a.astype(jnp.promote_types(a.dtype, jnp.float32))


def _weighted_sq_err(x_BxD, x_hat_BxD, gamma_D):
  err = (_at_least_f32(x_BxD) - _at_least_f32(x_hat_BxD)) ** 2
  if gamma_D is not None:
    # Shapes are static under jit: a γ of the wrong length (e.g. (1,), which would broadcast
    # silently) is refused when the loss is traced.
    if jnp.shape(gamma_D) != jnp.shape(x_BxD)[-1:]:
      raise V.WSAEInputError(
        f"gamma has shape {tuple(jnp.shape(gamma_D))}; it must have one weight per input "
        f"dimension, shape ({jnp.shape(x_BxD)[-1]},)."
      )
    err = err * jnp.square(gamma_D)
  return jnp.mean(jnp.sum(err, axis=-1))


def reconstruction_loss(
  x_BxD: jax.Array, x_hat_BxD: jax.Array, gamma=None
) -> tuple[jax.Array, dict]:
  """Batch mean of `Σ_i γ_i² (x_i − x̂_i)²`; with `gamma=None` the plain squared error.

  Returns `(loss, {"mse": unweighted squared error})`.

  >>> x = jnp.array([[1.0, 2.0]]); x_hat = jnp.array([[0.0, 0.0]])
  >>> float(reconstruction_loss(x, x_hat, gamma=jnp.array([1.0, 0.5]))[0])
  2.0
  """
  loss = _weighted_sq_err(x_BxD, x_hat_BxD, gamma)
  mse = loss if gamma is None else _weighted_sq_err(x_BxD, x_hat_BxD, None)
  return loss, {"mse": mse}


def batch_fvu(x_BxD, mse) -> jax.Array:
  """Fraction of variance unexplained of a batch: `mse / Σ_i Var(x_i)`."""
  x_BxD = _at_least_f32(x_BxD)
  var = jnp.sum(jnp.var(x_BxD, axis=0))
  return mse / jnp.maximum(var, jnp.finfo(x_BxD.dtype).tiny)


def batch_summary(x_BxD, mse, *, l0, fired_M) -> dict:
  """The metrics every loss reports beside its terms: mse, fvu, l0 and the fired-latent mask."""
  return {"mse": mse, "fvu": batch_fvu(x_BxD, mse), "l0": l0, "fired": fired_M}


def selected_l0(acts_BxK) -> jax.Array:
  """`code_stats`' l0 of a code held as its selected entries' activations (every other latent 0),
  as the Top-k family's sparse path keeps it (its fired mask comes with the decode)."""
  return jnp.mean(jnp.sum(acts_BxK > 0, axis=-1).astype(jnp.float32))


def code_stats(z_BxM) -> dict:
  """`l0` (mean active latents per row) and `fired_M` (latents active anywhere) of dense codes."""
  return {
    "l0": jnp.mean(jnp.sum(z_BxM > 0, axis=-1).astype(jnp.float32)),
    "fired_M": jnp.any(z_BxM > 0, axis=0),
  }
