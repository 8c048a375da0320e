"""JumpReLU SAE (Rajamanoharan et al. 2024) with an L0 penalty through straight-through estimators.

`z = JumpReLU_θ(x W_enc + b_enc) = pre · 1[pre > θ]` with a learned threshold θ per latent,
`x̂ = z W_dec + b_dec`, loss `‖Γ(x − x̂)‖² + λ E Σ_j 1[pre_j > θ_j]`. The step has no gradient, so
both the activation and the L0 term pass one to θ through the rectangle kernel
`K(u) = 1[|u| < 1/2]` of bandwidth ε:

  ∂JumpReLU/∂θ = −(θ/ε) K((pre − θ)/ε),   ∂step/∂θ = −(1/ε) K((pre − θ)/ε),

and the activation passes `1[pre > θ]` to the pre-activation (the L0 term none: DeepMind's
estimator). θ is a parameter of its own (not log θ), projected to θ >= 0 after each update, as
SAELens 6 does; the decoder is free, initialised with rows of norm `init_decoder_norm` and
`W_enc = W_decᵀ`. SAELens: "jumprelu" with `apply_b_dec_to_input = False`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from wsae_jax import _validate as V
from wsae_jax.models import base, constraints
from wsae_jax.objectives.reconstruction import batch_summary, code_stats, reconstruction_loss


@dataclasses.dataclass(frozen=True, kw_only=True)
class JumpReLUSAEConfig(base.SAEConfig):
  """JumpReLU SAE with a learned threshold per latent and an L0 penalty."""

  l0_coefficient: float = 1e-2
  """λ, the penalty per active latent (SAELens' `l0_coefficient`)."""
  bandwidth: float = 0.05
  """ε, the width of the rectangle kernel of the straight-through estimators."""
  init_threshold: float = 0.01
  """θ at initialisation, for every latent."""
  init_decoder_norm: float = 0.1
  """Norm of the decoder rows at initialisation."""

  architecture: ClassVar[str] = "jumprelu"

  def __post_init__(self):
    super().__post_init__()
    V.check_range("l0_coefficient", self.l0_coefficient, low=0.0)
    V.check_range("bandwidth", self.bandwidth, low=0.0, low_open=True)
    V.check_range("init_threshold", self.init_threshold, low=0.0)
    V.check_range("init_decoder_norm", self.init_decoder_norm, low=0.0, low_open=True)


def _rectangle(u):
  return ((u > -0.5) & (u < 0.5)).astype(u.dtype)


# The straight-through rules are written elementwise, on θ broadcast to the batch: the
# broadcast's own transpose then sums over the rows, and under `shard_map` with a split batch it
# also carries the sum across devices (a rule that summed over rows itself would return a
# per-device gradient for a parameter that is the same on every device).


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _jumprelu(pre_BxM, threshold_BxM, bandwidth):
  return pre_BxM * (pre_BxM > threshold_BxM)


def _jumprelu_fwd(pre, threshold, bandwidth):
  return _jumprelu(pre, threshold, bandwidth), (pre, threshold)


def _jumprelu_bwd(bandwidth, res, g):
  pre, threshold = res
  ste = (threshold / bandwidth) * _rectangle((pre - threshold) / bandwidth) * g
  return (pre > threshold) * g, -ste


_jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _step(pre_BxM, threshold_BxM, bandwidth):
  return (pre_BxM > threshold_BxM).astype(pre_BxM.dtype)


def _step_fwd(pre, threshold, bandwidth):
  return _step(pre, threshold, bandwidth), (pre, threshold)


def _step_bwd(bandwidth, res, g):
  pre, threshold = res
  ste = (1.0 / bandwidth) * _rectangle((pre - threshold) / bandwidth) * g
  return jnp.zeros_like(pre), -ste


_step.defvjp(_step_fwd, _step_bwd)


def jump_relu(pre_BxM, threshold_M, bandwidth: float):
  """`pre · 1[pre > θ]`, with the straight-through gradient for θ (see the module docstring)."""
  return _jumprelu(pre_BxM, threshold_M + jnp.zeros_like(pre_BxM), bandwidth)


def heaviside(pre_BxM, threshold_M, bandwidth: float):
  """`1[pre > θ]`, with the straight-through gradient for θ only."""
  return _step(pre_BxM, threshold_M + jnp.zeros_like(pre_BxM), bandwidth)


def init(cfg, key):
  p = base.untied_init(cfg, key, decoder_norm=cfg.init_decoder_norm)
  return {**p, "threshold": jnp.full((cfg.d_sae,), cfg.init_threshold, jnp.dtype(cfg.dtype))}


def pre_activations(cfg, params, x_BxD):
  return x_BxD @ params["W_enc"] + params["b_enc"]


def encode(cfg, params, x_BxD):
  pre = pre_activations(cfg, params, x_BxD)
  return jnp.where(pre > params["threshold"], jax.nn.relu(pre), 0.0)


def loss(cfg, params, x_BxD, *, gamma=None, dead_M=None, hp=None):
  """Weighted reconstruction plus `λ · E Σ_j heaviside(pre_j, θ_j)`; `hp["l0_coefficient"]` (may be
  traced) overrides `cfg.l0_coefficient`."""
  pre = pre_activations(cfg, params, x_BxD)
  z = jump_relu(pre, params["threshold"], cfg.bandwidth)
  recon, r_aux = reconstruction_loss(x_BxD, base.affine_decode(cfg, params, z), gamma)
  l0_term = jnp.mean(jnp.sum(heaviside(pre, params["threshold"], cfg.bandwidth), axis=-1))
  total = recon + hp.get("l0_coefficient", cfg.l0_coefficient) * l0_term
  return total, {
    "loss": total,
    "recon": recon,
    "l0_penalty": l0_term,
    **batch_summary(x_BxD, r_aux["mse"], **code_stats(z)),
  }


def to_saelens(cfg, params):
  return base.SAELensTensors(
    fields={"apply_b_dec_to_input": False},
    tensors={
      **base.untied_tensors(params),
      "threshold": np.asarray(params["threshold"], np.float32),
    },
  )


def threshold_tensor(c, tensors) -> np.ndarray:
  """The `threshold` tensor of a SAELens jumprelu folder, checked."""
  if "threshold" not in tensors:
    raise V.WSAEInputError("a jumprelu SAE needs a 'threshold' tensor in its weights.")
  t = np.asarray(tensors["threshold"], np.float32)
  if t.shape != (c["d_sae"],):
    raise V.WSAEInputError(
      f"the jumprelu 'threshold' tensor has shape {t.shape}; d_sae = "
      f"{c['d_sae']} requires ({c['d_sae']},)."
    )
  V.check_finite("threshold", t)
  return t


def from_saelens(c, tensors, ours):
  fields = base.saved_fields(ours, "jumprelu")
  cfg = base.config_from_dict(
    {"architecture": "jumprelu", **fields, "d_in": c["d_in"], "d_sae": c["d_sae"]},
    "wsae_jax.config",
  )
  return cfg, {
    **base.b_dec_folded_into_b_enc(c, tensors),
    "threshold": threshold_tensor(c, tensors),
  }


ARCH = base.register(
  base.Architecture(
    name="jumprelu",
    config=JumpReLUSAEConfig,
    init=init,
    pre_activations=pre_activations,
    encode=encode,
    decode=base.affine_decode,
    decoder_matrix=base.w_dec,
    loss=loss,
    saelens_name="jumprelu",
    to_saelens=to_saelens,
    from_saelens=from_saelens,
    saelens_default=True,
    hyperparameters=(
      base.Hyperparameter("l0_coefficient", jnp.float32, base.check_nonnegative("l0_coefficient")),
    ),
    optimizer_parts=lambda cfg: ([], [constraints.clip_below("threshold", 0.0)]),
  )
)
