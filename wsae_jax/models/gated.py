"""Gated SAE (Rajamanoharan et al. 2024, "Improving dictionary learning with gated sparse
autoencoders"): a gate decides which latents fire, a magnitude path how strongly.

  π_gate = (x − b_dec) W_enc + b_gate,             f_gate = 1[π_gate > 0]
  π_mag  = (x − b_dec) (W_enc ⊙ exp(r_mag)) + b_mag, f_mag = ReLU(π_mag)
  z = f_gate ⊙ f_mag,  x̂ = z W_dec + b_dec

The two paths share `W_enc` (the magnitude path rescales its columns by `exp(r_mag)`). The step
`f_gate` passes no gradient, so the gate learns from the other two terms of the loss:

  ‖Γ(x − x̂)‖² + λ Σ_j ReLU(π_gate)_j ‖W_dec[j]‖ + ‖Γ(x − x̂_frozen(ReLU(π_gate)))‖²

where `x̂_frozen` decodes with a stopped-gradient copy of `W_dec` and `b_dec` (the paper's
auxiliary term; SAELens 6 lets it train the decoder as well, the one difference from its
`GatedTrainingSAE`). The L1 term is weighted by decoder norms as SAELens does, so the decoder is
left free. Parameters: SAELens's names, `W_enc W_dec b_dec b_gate b_mag r_mag` (no `b_enc`).
SAELens: "gated" with `apply_b_dec_to_input = True`; folders without it are converted exactly.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from wsae_jax import _validate as V
from wsae_jax.models import base, relu
from wsae_jax.objectives.reconstruction import batch_summary, code_stats, reconstruction_loss

GATED_TENSORS = ("W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatedSAEConfig(relu.L1Config):
  """Gated SAE: a gate path (L1-penalised: λ on the gate's decoder-norm-weighted ReLU
  pre-activations) and a magnitude path sharing the encoder."""

  architecture: ClassVar[str] = "gated"


def init(cfg, key):
  """Decoder rows of norm `init_decoder_norm`, `W_enc = W_decᵀ`, zero biases and `r_mag = 0` (the
  two paths start equal)."""
  p = base.untied_init(cfg, key, decoder_norm=cfg.init_decoder_norm)
  zeros = p.pop("b_enc")
  return {**p, "b_gate": zeros, "b_mag": zeros, "r_mag": zeros}


def _centred(params, x_BxD):
  return x_BxD - params["b_dec"]


def gate_pre_activations(cfg, params, x_BxD):
  """π_gate, `(batch, d_sae)`."""
  return _centred(params, x_BxD) @ params["W_enc"] + params["b_gate"]


def pre_activations(cfg, params, x_BxD):
  """π_mag, the magnitude path's pre-activations (SAELens's `hidden_pre`)."""
  return _centred(params, x_BxD) @ (params["W_enc"] * jnp.exp(params["r_mag"])) + params["b_mag"]


def encode(cfg, params, x_BxD):
  gate = gate_pre_activations(cfg, params, x_BxD) > 0
  return jnp.where(gate, jax.nn.relu(pre_activations(cfg, params, x_BxD)), 0.0)


def loss(cfg, params, x_BxD, *, gamma=None, dead_M=None, hp=None):
  """Weighted reconstruction + λ · decoder-norm-weighted L1 of ReLU(π_gate) + the weighted
  reconstruction of ReLU(π_gate) through the frozen decoder. `hp["l1_coefficient"]` (may be
  traced) overrides `cfg.l1_coefficient`."""
  pi_gate = gate_pre_activations(cfg, params, x_BxD)
  z = jnp.where(pi_gate > 0, jax.nn.relu(pre_activations(cfg, params, x_BxD)), 0.0)
  recon, r_aux = reconstruction_loss(x_BxD, base.affine_decode(cfg, params, z), gamma)
  gate_act = jax.nn.relu(pi_gate)
  sparsity = jnp.mean(gate_act @ jnp.linalg.norm(params["W_dec"], axis=-1))
  frozen = jax.lax.stop_gradient({"W_dec": params["W_dec"], "b_dec": params["b_dec"]})
  aux, _ = reconstruction_loss(x_BxD, base.affine_decode(cfg, frozen, gate_act), gamma)
  total = recon + hp.get("l1_coefficient", cfg.l1_coefficient) * sparsity + aux
  return total, {
    "loss": total,
    "recon": recon,
    "l1": sparsity,
    "aux_recon": aux,
    **batch_summary(x_BxD, r_aux["mse"], **code_stats(z)),
  }


def to_saelens(cfg, params):
  return base.SAELensTensors(
    fields={"apply_b_dec_to_input": True},
    tensors=base.untied_tensors(params, GATED_TENSORS),
  )


def from_saelens(c, tensors, ours):
  """A SAELens gated folder; without `apply_b_dec_to_input` the input-side `b_dec` subtraction is
  undone in the biases: `b_gate' = b_gate + b_dec W_enc`, `b_mag' = b_mag + (b_dec W_enc) ⊙
  exp(r_mag)`, so both pre-activations are unchanged."""
  missing = sorted(set(GATED_TENSORS) - set(tensors))
  if missing:
    raise V.WSAEInputError(
      f"a gated SAE needs the tensors {list(GATED_TENSORS)}; {missing} missing."
    )
  p = {k: np.asarray(tensors[k], np.float64) for k in GATED_TENSORS}
  if not c.get("apply_b_dec_to_input", True):
    shift = p["b_dec"] @ p["W_enc"]
    p["b_gate"] = p["b_gate"] + shift
    p["b_mag"] = p["b_mag"] + shift * np.exp(p["r_mag"])
  fields = base.saved_fields(ours, "gated")
  cfg = base.config_from_dict(
    {"architecture": "gated", **fields, "d_in": c["d_in"], "d_sae": c["d_sae"]}, "wsae_jax.config"
  )
  return cfg, {k: v.astype(np.float32) for k, v in p.items()}


ARCH = base.register(
  base.Architecture(
    name="gated",
    config=GatedSAEConfig,
    init=init,
    pre_activations=pre_activations,
    encode=encode,
    decode=base.affine_decode,
    decoder_matrix=base.w_dec,
    loss=loss,
    saelens_name="gated",
    to_saelens=to_saelens,
    from_saelens=from_saelens,
    saelens_default=True,
    hyperparameters=(
      base.Hyperparameter("l1_coefficient", jnp.float32, base.check_nonnegative("l1_coefficient")),
    ),
  )
)
