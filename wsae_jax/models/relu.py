"""Untied ReLU SAE with an L1 penalty weighted by decoder row norms (Anthropic, April 2024).

`z = ReLU(x W_enc + b_enc)`, `x̂ = z W_dec + b_dec`, loss `‖Γ(x − x̂)‖² + λ Σ_j z_j ‖W_dec[j]‖`.
The decoder is left free (the penalty sees its norms). SAELens: "standard" with
`apply_b_dec_to_input = False`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from wsae_jax import _validate as V
from wsae_jax.models import base
from wsae_jax.objectives.reconstruction import batch_summary, code_stats, reconstruction_loss


@dataclasses.dataclass(frozen=True, kw_only=True)
class L1Config(base.SAEConfig):
  """The fields of architectures with a decoder-norm-weighted L1 penalty and a free decoder
  (relu, gated)."""

  l1_coefficient: float = 1e-3
  """λ, the sparsity penalty on decoder-norm-weighted activations."""
  init_decoder_norm: float = 0.1
  """Norm of the decoder rows at initialisation (Anthropic suggest 0.05-1; `W_enc = W_decᵀ`)."""

  def __post_init__(self):
    super().__post_init__()
    V.check_range("l1_coefficient", self.l1_coefficient, low=0.0)
    V.check_range("init_decoder_norm", self.init_decoder_norm, low=0.0, low_open=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReLUSAEConfig(L1Config):
  """Untied ReLU SAE with an L1 penalty `λ Σ_j z_j ‖W_dec[j]‖`."""

  architecture: ClassVar[str] = "relu"


def init(cfg, key):
  """Decoder rows random with norm `init_decoder_norm`, `W_enc = W_decᵀ`, zero biases."""
  return base.untied_init(cfg, key, decoder_norm=cfg.init_decoder_norm)


def pre_activations(cfg, params, x_BxD):
  return x_BxD @ params["W_enc"] + params["b_enc"]


def encode(cfg, params, x_BxD):
  return jax.nn.relu(pre_activations(cfg, params, x_BxD))


def loss(cfg, params, x_BxD, *, gamma=None, dead_M=None, hp=None):
  """Weighted reconstruction plus `λ · E Σ_j z_j ‖W_dec[j]‖`; `hp["l1_coefficient"]` (may be
  traced) overrides `cfg.l1_coefficient`."""
  z = encode(cfg, params, x_BxD)
  recon, r_aux = reconstruction_loss(x_BxD, base.affine_decode(cfg, params, z), gamma)
  sparsity = jnp.mean(z @ jnp.linalg.norm(params["W_dec"], axis=-1))
  total = recon + hp.get("l1_coefficient", cfg.l1_coefficient) * sparsity
  return total, {
    "loss": total,
    "recon": recon,
    "l1": sparsity,
    **batch_summary(x_BxD, r_aux["mse"], **code_stats(z)),
  }


def to_saelens(cfg, params):
  return base.SAELensTensors(
    fields={"apply_b_dec_to_input": False}, tensors=base.untied_tensors(params)
  )


def from_saelens(c, tensors, ours):
  fields = base.saved_fields(ours, "relu")
  cfg = base.config_from_dict(
    {"architecture": "relu", **fields, "d_in": c["d_in"], "d_sae": c["d_sae"]}, "wsae_jax.config"
  )
  return cfg, base.b_dec_folded_into_b_enc(c, tensors)


ARCH = base.register(
  base.Architecture(
    name="relu",
    config=ReLUSAEConfig,
    init=init,
    pre_activations=pre_activations,
    encode=encode,
    decode=base.affine_decode,
    decoder_matrix=base.w_dec,
    loss=loss,
    saelens_name="standard",
    to_saelens=to_saelens,
    from_saelens=from_saelens,
    saelens_default=True,
    hyperparameters=(
      base.Hyperparameter("l1_coefficient", jnp.float32, base.check_nonnegative("l1_coefficient")),
    ),
  )
)
