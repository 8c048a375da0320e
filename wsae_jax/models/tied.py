"""The paper's theory SAE: tied weights, no biases, ReLU; the loss is reconstruction only.

`z = ReLU(x W_enc)`, `x̂ = z W_encᵀ`, `L_(W)SAE = E‖Γ(x − x̂)‖²`. Only `W_enc` is stored; the decoder
is `W_encᵀ`. Exported to SAELens as the equivalent untied "standard" SAE (zero biases); a folder we
saved from a tied SAE loads back as one while its weights are still tied (no input scale folded
in), else as the equivalent relu SAE.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from wsae_jax.models import base
from wsae_jax.objectives.reconstruction import batch_summary, code_stats, reconstruction_loss


@dataclasses.dataclass(frozen=True, kw_only=True)
class TiedSAEConfig(base.SAEConfig):
  """The theory's SAE: tied weights, no biases, ReLU; loss is reconstruction only."""

  architecture: ClassVar[str] = "tied"


def init(cfg, key):
  """Columns of `W_enc` are random unit vectors."""
  return {"W_enc": base.unit_rows(key, (cfg.d_sae, cfg.d_in), jnp.dtype(cfg.dtype)).T}


def pre_activations(cfg, params, x_BxD):
  return x_BxD @ params["W_enc"]


def encode(cfg, params, x_BxD):
  return jax.nn.relu(pre_activations(cfg, params, x_BxD))


def decoder_matrix(cfg, params):
  return params["W_enc"].T


def decode(cfg, params, z_BxM):
  return z_BxM @ params["W_enc"].T


def loss(cfg, params, x_BxD, *, gamma=None, dead_M=None, hp=None):
  """`L_(W)SAE = E‖Γ(x_p − W_mᵀ σ(W_m x_p))‖²`; no sparsity term."""
  z = encode(cfg, params, x_BxD)
  recon, r_aux = reconstruction_loss(x_BxD, decode(cfg, params, z), gamma)
  return recon, {
    "loss": recon,
    "recon": recon,
    **batch_summary(x_BxD, r_aux["mse"], **code_stats(z)),
  }


def to_saelens(cfg, params):
  w = np.asarray(params["W_enc"], np.float32)
  return base.SAELensTensors(
    fields={"apply_b_dec_to_input": False},
    tensors={
      "W_enc": w,
      "W_dec": np.ascontiguousarray(w.T),
      "b_enc": np.zeros(cfg.d_sae, np.float32),
      "b_dec": np.zeros(cfg.d_in, np.float32),
    },
  )


def from_saelens(c, tensors, ours):
  """Our own tied export back as a tied SAE when `W_dec = W_encᵀ` and the biases are zero;
  otherwise (an input scale was folded in) its exact untied equivalent, a relu SAE."""
  from wsae_jax.models import relu

  w = np.asarray(tensors["W_enc"], np.float32)
  zero = lambda k: k not in tensors or not np.any(np.asarray(tensors[k]))
  if (
    np.array_equal(np.asarray(tensors["W_dec"], np.float32), w.T)
    and zero("b_enc")
    and zero("b_dec")
  ):
    return TiedSAEConfig(d_in=c["d_in"], d_sae=c["d_sae"]), {"W_enc": w}
  return relu.from_saelens(c, tensors, {})


ARCH = base.register(
  base.Architecture(
    name="tied",
    config=TiedSAEConfig,
    init=init,
    pre_activations=pre_activations,
    encode=encode,
    decode=decode,
    decoder_matrix=decoder_matrix,
    loss=loss,
    saelens_name="standard",
    to_saelens=to_saelens,
    from_saelens=from_saelens,
    closed_form=True,
  )
)
