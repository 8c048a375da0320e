"""BatchTopK SAE (Bussmann et al. 2024): Top-k over a whole batch in training, a learned global
threshold at inference.

Training keeps the `⌊k·B⌋` largest ReLU'd pre-activations of the batch (k active latents per row
on average, more on rows that need them); inference keeps every pre-activation above a global
threshold θ, `z = pre · 1[pre > θ]`, so a row's code does not depend on the other rows. θ is not
trained by the gradient: after each step it moves towards the smallest activation the batch
selection kept, `θ ← (1 − r) θ + r · min_selected` with rate `threshold_lr` (as SAELens does).
Pre-activations are `(x − b_dec) W_enc + b_enc`; decoder rows have unit norm; AuxK as in Top-k.
Exported to SAELens as a "jumprelu" SAE with θ for every latent, as SAELens saves BatchTopK.

The batch selection couples the rows of a batch: under `jax.jit` data parallelism it is taken over
the global batch; a sweep cannot split batches by hand (`Architecture.batch_coupled`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from wsae_jax import _validate as V
from wsae_jax.models import base, constraints, jumprelu, latent_shards, topk
from wsae_jax.models.selection import kth_largest_mask
from wsae_jax.objectives.reconstruction import (
  batch_summary,
  code_stats,
  reconstruction_loss,
  selected_l0,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchTopKSAEConfig(topk.AuxKConfig):
  """BatchTopK SAE: k active latents per row on average over a batch; unit-norm decoder rows."""

  k: float = 32.0
  """Mean number of active latents per row (the batch keeps ⌊k·B⌋ activations)."""
  threshold_lr: float = 0.01
  """Rate of the moving average that sets the inference threshold θ."""
  sparse_path: bool = False
  """Train through each row's `candidates` largest pre-activations only (gathers and
  scatter-adds, `sparse_path.selected_decode`) instead of d_sae-wide products; exact, with a
  dense fallback on a batch where some row's candidates are all selected (see `batch_parts`).
  Measured on 2 CPU cores (`python benchmarks/bench_sparse_step.py`): the train step 1.62x the
  dense one at 576 x 4608 (batch 4096), 3.14x at 576 x 18432, 2.78x at 768 x 24576. Off by
  default all the same: inside a sweep's `vmap` the fallback's `lax.cond` becomes a select that
  runs both branches, dense products included, on every step; a single SAE gains the speed.
  `wsae train --sparse-path on`."""
  candidates: int | None = None
  """Pre-activations per row the sparse path considers (None: 4·⌈k⌉, at least 16, at most
  d_sae). A row that needs more than this triggers the dense fallback for that batch."""

  architecture: ClassVar[str] = "batchtopk"

  def __post_init__(self):
    super().__post_init__()
    V.check_range("k", self.k, low=0.0, high=float(self.d_sae), low_open=True)
    V.check_range("threshold_lr", self.threshold_lr, low=0.0, high=1.0)
    if self.candidates is not None:
      V.check_int("candidates", self.candidates, low=1, high=self.d_sae)

  @property
  def resolved_candidates(self) -> int:
    if self.candidates is not None:
      return self.candidates
    return min(self.d_sae, max(16, 4 * math.ceil(self.k)))


def init(cfg, key):
  """Unit decoder rows, `W_enc = W_decᵀ`, zero biases, θ = 0."""
  return {**base.untied_init(cfg, key), "threshold": jnp.zeros((), jnp.dtype(cfg.dtype))}


def encode(cfg, params, x_BxD):
  """Inference: every pre-activation above the global threshold θ."""
  pre = topk.pre_activations(cfg, params, x_BxD)
  return jnp.where(pre > params["threshold"], jax.nn.relu(pre), 0.0)


def batch_topk(pre_BxM, k):
  """The `⌊k·B⌋` largest ReLU'd pre-activations of the whole batch, zero elsewhere (exact; ties
  by position, as `lax.top_k`). `k` may be traced. On latent shards, `latent_shards.batch_mask`
  selects across them."""
  relu = jnp.where(pre_BxM > 0, pre_BxM, jnp.zeros((), pre_BxM.dtype))
  if latent_shards.shards() > 1:
    count = _count(k, pre_BxM.shape[0])
    return jnp.where(latent_shards.batch_mask(relu, count), relu, jnp.zeros((), relu.dtype))
  count = jnp.floor(jnp.asarray(k, jnp.float32) * pre_BxM.shape[0]).astype(jnp.int32)
  mask = kth_largest_mask(jax.lax.stop_gradient(relu).reshape(1, -1), count)
  return jnp.where(mask.reshape(pre_BxM.shape), relu, jnp.zeros((), pre_BxM.dtype))


def _count(k, rows: int):
  """`⌊k·rows⌋`, a Python int when k is concrete (float32 arithmetic, as the traced form)."""
  try:
    return int(np.floor(np.float32(k) * np.float32(rows)))
  except (TypeError, jax.errors.ConcretizationTypeError):
    return jnp.floor(jnp.asarray(k, jnp.float32) * rows).astype(jnp.int32)


def batch_candidates(pre_BxM, k, candidates: int):
  """The batch selection restricted to each row's `candidates` largest ReLU'd pre-activations:
  `(idx_BxC, keep_BxC, exact)`.

  `keep` marks the `⌊k·B⌋` largest candidates of the batch, ties broken by position as the dense
  selection does (`lax.top_k` lists a row's tied values by index, rows in order). It is the dense
  selection whenever no row has its last candidate kept with a positive value (`exact`): every
  other entry of such a row is at most that candidate, which lost, so no entry outside the
  candidates can be kept (or, at zero, contributes nothing).
  """
  relu = jnp.where(pre_BxM > 0, pre_BxM, jnp.zeros((), pre_BxM.dtype))
  vals_BxC, idx_BxC = latent_shards.top_k(relu, candidates)
  count = jnp.floor(jnp.asarray(k, jnp.float32) * pre_BxM.shape[0]).astype(jnp.int32)
  keep_BxC = kth_largest_mask(vals_BxC.reshape(1, -1), count).reshape(vals_BxC.shape)
  # The last candidate is the row's smallest; `jnp.min`, not `vals[:, -1]`: XLA:CPU took 2.6 s
  # instead of 0.2 s for this function with the column slice of top_k's output (measured at
  # (4096, 4608), 128 candidates).
  exact = ~jnp.any(keep_BxC[:, -1] & (jnp.min(vals_BxC, axis=1) > 0))
  return idx_BxC, keep_BxC, exact


def batch_parts(cfg, params, x_BxD, k, level_bounds):
  """The batch-selected code's reconstruction split by latent prefix, without `b_dec`:
  `(parts_LxBxD, stats)`, stats `l0`, `fired_M` and `min_selected`. Part `l` sums the selected
  latents in `[w_{l−1}, w_l)` of `level_bounds` (`(d_sae,)` for plain BatchTopK).

  Dense: the `(batch, d_sae)` code and one product per prefix. `cfg.sparse_path`: the
  candidates' gathered rows (`batch_candidates`, `sparse_path.selected_decode`), and the dense
  computation, pre-activations included, only on a batch where the candidates are not exact
  (inside its own branch, so that its cotangents and dense products exist only there)."""

  def dense():
    z = batch_topk(topk.pre_activations(cfg, params, x_BxD), k)
    parts = latent_shards.level_parts(z, params["W_dec"], level_bounds)
    return parts, {**code_stats(z), "min_selected": min_selected(params, z)}

  if not cfg.sparse_path:
    return dense()
  pre = jax.lax.stop_gradient(topk.pre_activations(cfg, params, x_BxD))
  idx_BxC, keep_BxC, exact = batch_candidates(pre, k, cfg.resolved_candidates)

  def sparse():
    acts, parts, fired = latent_shards.selected_decode(
      tuple(level_bounds),
      x_BxD - params["b_dec"],
      params["W_enc"],
      params["b_enc"],
      params["W_dec"],
      idx_BxC,
      keep_BxC,
    )
    return parts, {
      "l0": selected_l0(acts),
      "fired_M": fired,
      "min_selected": min_selected(params, acts),
    }

  return jax.lax.cond(exact, sparse, dense)


def loss(cfg, params, x_BxD, *, gamma=None, dead_M=None, hp=None):
  """Weighted reconstruction of the batch-selected code plus `aux_coefficient` × AuxK.

  `hp["k"]` (may be traced) overrides `cfg.k`. `aux["min_selected"]` is the smallest positive
  activation kept (θ where none), the target of the threshold's moving average.
  """
  parts, stats = batch_parts(cfg, params, x_BxD, hp.get("k", cfg.k), (cfg.d_sae,))
  x_hat = parts[0] + params["b_dec"]
  recon, r_aux = reconstruction_loss(x_BxD, x_hat, gamma)
  aux = topk.auxk_loss(cfg, params, x_BxD, dead_M, x_BxD - x_hat, gamma, recon)
  total = recon + cfg.aux_coefficient * aux
  return total, {
    "loss": total,
    "recon": recon,
    "aux_k": aux,
    "min_selected": stats["min_selected"],
    **batch_summary(x_BxD, r_aux["mse"], l0=stats["l0"], fired_M=stats["fired_M"]),
  }


def min_selected(params, z_BxM):
  """The smallest positive activation the batch selection kept (θ where none): the target of the
  threshold's moving average."""
  z_kept = jax.lax.stop_gradient(z_BxM)
  smallest = jnp.min(jnp.where(z_kept > 0, z_kept, jnp.inf))
  return jnp.where(jnp.isfinite(smallest), smallest, jax.lax.stop_gradient(params["threshold"]))


def post_update(cfg, params, stats):
  r = jnp.asarray(cfg.threshold_lr, params["threshold"].dtype)
  theta = (1 - r) * params["threshold"] + r * stats["min_selected"].astype(r.dtype)
  return {**params, "threshold": theta}


def to_saelens(cfg, params):
  return base.SAELensTensors(
    fields={"apply_b_dec_to_input": True},
    tensors={
      **base.untied_tensors(params),
      "threshold": np.full(cfg.d_sae, np.asarray(params["threshold"]), np.float32),
    },
  )


def from_saelens(c, tensors, ours, *, name="batchtopk"):
  """Only folders we saved from a BatchTopK SAE (one θ for every latent) load as one; `name` is
  the architecture that saved it (Matryoshka BatchTopK is saved the same way)."""
  theta = jumprelu.threshold_tensor(c, tensors)
  if not np.all(theta == theta[0]):
    raise V.WSAEInputError(
      f"wsae_jax.config says it saved a {name} SAE, but its thresholds "
      f"differ between latents; the folder was edited."
    )
  if not c.get("apply_b_dec_to_input", True):
    raise V.WSAEInputError(
      f"a {name} SAE subtracts b_dec at its input (apply_b_dec_to_input must be true)."
    )
  fields = base.saved_fields(ours, name)
  cfg = base.config_from_dict(
    {"architecture": name, **fields, "d_in": c["d_in"], "d_sae": c["d_sae"]}, "wsae_jax.config"
  )
  p = {k: np.asarray(tensors[k], np.float32) for k in ("W_enc", "W_dec", "b_dec")}
  p["b_enc"] = np.asarray(tensors.get("b_enc", np.zeros(c["d_sae"])), np.float32)
  return cfg, {**p, "threshold": np.float32(theta[0])}


def check_k(cfg, k):
  V.check_range("k", k, low=0.0, high=float(cfg.d_sae), low_open=True)


ARCH = base.register(
  base.Architecture(
    name="batchtopk",
    config=BatchTopKSAEConfig,
    init=init,
    pre_activations=topk.pre_activations,
    encode=encode,
    decode=base.affine_decode,
    decoder_matrix=base.w_dec,
    loss=loss,
    saelens_name="jumprelu",
    to_saelens=to_saelens,
    from_saelens=from_saelens,
    hyperparameters=(base.Hyperparameter("k", jnp.float32, check_k),),
    uses_dead_latents=True,
    optimizer_parts=constraints.unit_norm_decoder,
    post_update=post_update,
    batch_coupled=True,
  )
)
