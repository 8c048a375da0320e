"""Matryoshka BatchTopK SAE (Bussmann et al. 2025, "Learning multi-level features with Matryoshka
sparse autoencoders"; Nabeshima 2024): a BatchTopK SAE whose first latents must also reconstruct
on their own.

The latents are split into nested prefixes of widths `w_1 < w_2 < … < w_L = d_sae`. Training keeps
the batch's `⌊k·B⌋` largest activations as BatchTopK does (over all latents), then reconstructs
with each prefix alone and sums the errors:

  Σ_l ‖Γ(x − x̂_l)‖² + aux_coefficient · AuxK,   x̂_l = z[:, :w_l] W_dec[:w_l] + b_dec

so early latents learn general, frequent features and later ones refine them (less absorption).
The prefix reconstructions are one cumulative sum over per-level products: the cost is one
decode. AuxK acts on the full reconstruction's residual (SAELens's default,
`use_matryoshka_aux_loss = False`). Inference, the threshold θ, unit-norm decoder rows and the
SAELens export (a "jumprelu" folder, as SAELens saves it) are BatchTopK's.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from wsae_jax import _validate as V
from wsae_jax.models import base, batchtopk, constraints, topk
from wsae_jax.objectives.reconstruction import batch_summary, reconstruction_loss


@dataclasses.dataclass(frozen=True, kw_only=True)
class MatryoshkaBatchTopKSAEConfig(batchtopk.BatchTopKSAEConfig):
  """BatchTopK SAE trained to reconstruct with nested prefixes of its latents."""

  matryoshka_widths: tuple[int, ...] | None = None
  """Strictly increasing prefix widths ending at d_sae (SAELens's `matryoshka_widths`). None:
  d_sae/8, d_sae/4, d_sae/2, d_sae (rounded down; widths below 1 dropped)."""

  architecture: ClassVar[str] = "matryoshka_batchtopk"

  def __post_init__(self):
    super().__post_init__()
    if self.matryoshka_widths is None:
      return
    widths = tuple(self.matryoshka_widths)  # a JSON/TOML list becomes a (hashable) tuple
    for w in widths:
      V.check_int("matryoshka_widths[i]", w, low=1, high=self.d_sae)
    if not widths or widths[-1] != self.d_sae:
      raise V.WSAEInputError(
        f"matryoshka_widths must end with d_sae = {self.d_sae} (the full "
        f"dictionary is the last level), got {list(widths)}; append "
        f"{self.d_sae}."
      )
    if any(a >= b for a, b in zip(widths, widths[1:])):
      raise V.WSAEInputError(f"matryoshka_widths must be strictly increasing, got {list(widths)}.")
    object.__setattr__(self, "matryoshka_widths", widths)

  @property
  def levels(self) -> tuple[int, ...]:
    """The prefix widths in use (the default schedule when `matryoshka_widths` is None)."""
    if self.matryoshka_widths is not None:
      return self.matryoshka_widths
    return tuple(
      sorted(
        {w for w in (self.d_sae // 8, self.d_sae // 4, self.d_sae // 2) if 1 <= w < self.d_sae}
        | {self.d_sae}
      )
    )


def loss(cfg, params, x_BxD, *, gamma=None, dead_M=None, hp=None):
  """Σ over levels of the weighted reconstruction error + `aux_coefficient` × AuxK. `recon` is the
  full dictionary's term (comparable with other architectures), `nested` the inner levels' sum.
  `hp["k"]` (may be traced) overrides `cfg.k`; `cfg.sparse_path` as BatchTopK's."""
  parts, stats = batchtopk.batch_parts(cfg, params, x_BxD, hp.get("k", cfg.k), cfg.levels)
  x_hats = jnp.cumsum(parts, axis=0) + params["b_dec"]
  terms = [reconstruction_loss(x_BxD, x_hats[i], gamma) for i in range(len(cfg.levels))]
  recon, r_aux = terms[-1]
  nested = sum((t[0] for t in terms[:-1]), start=recon * 0)
  aux = topk.auxk_loss(cfg, params, x_BxD, dead_M, x_BxD - x_hats[-1], gamma, recon)
  total = recon + nested + cfg.aux_coefficient * aux
  return total, {
    "loss": total,
    "recon": recon,
    "nested": nested,
    "aux_k": aux,
    "min_selected": stats["min_selected"],
    **batch_summary(x_BxD, r_aux["mse"], l0=stats["l0"], fired_M=stats["fired_M"]),
  }


def from_saelens(c, tensors, ours):
  return batchtopk.from_saelens(c, tensors, ours, name="matryoshka_batchtopk")


ARCH = base.register(
  base.Architecture(
    name="matryoshka_batchtopk",
    config=MatryoshkaBatchTopKSAEConfig,
    init=batchtopk.init,
    pre_activations=topk.pre_activations,
    encode=batchtopk.encode,
    decode=base.affine_decode,
    decoder_matrix=base.w_dec,
    loss=loss,
    saelens_name="jumprelu",
    to_saelens=batchtopk.to_saelens,
    from_saelens=from_saelens,
    hyperparameters=(base.Hyperparameter("k", jnp.float32, batchtopk.check_k),),
    uses_dead_latents=True,
    optimizer_parts=constraints.unit_norm_decoder,
    post_update=batchtopk.post_update,
    batch_coupled=True,
  )
)
