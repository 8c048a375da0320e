"""OpenAI's Top-k SAE (Gao et al. 2024) with unit-norm decoder rows and the AuxK loss.

`z = TopK(ReLU((x − b_dec) W_enc + b_enc))`, `x̂ = z W_dec + b_dec`. SAELens: "topk" with
`apply_b_dec_to_input = True`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from wsae_jax import _validate as V
from wsae_jax.models import base, constraints, latent_shards
from wsae_jax.models.selection import topk_activation
from wsae_jax.objectives.reconstruction import batch_summary, reconstruction_loss, selected_l0


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuxKConfig(base.SAEConfig):
  """The fields of architectures that revive dead latents with the AuxK loss (topk, batchtopk)."""

  aux_k: int | None = None
  """Latents used by the AuxK loss (None: d_in // 2, capped at d_sae)."""
  aux_coefficient: float = 1.0 / 32.0
  """Weight of the AuxK loss."""
  dead_after_tokens: int | None = None
  """A latent that has not fired for this many training tokens counts as dead. None: 5% of the
  run's tokens, at least one batch (`training.config.resolve_run_defaults`), the recipe measured
  on real activations (experiments/REAL.md): a fixed 10M-token window never opens in a short run,
  so AuxK would never act."""

  def __post_init__(self):
    super().__post_init__()
    if self.aux_k is not None:
      V.check_int("aux_k", self.aux_k, low=1, high=self.d_sae)
    V.check_range("aux_coefficient", self.aux_coefficient, low=0.0)
    if self.dead_after_tokens is not None:
      V.check_int("dead_after_tokens", self.dead_after_tokens, low=1)

  @property
  def resolved_aux_k(self) -> int:
    return self.aux_k if self.aux_k is not None else max(1, min(self.d_in // 2, self.d_sae))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopKSAEConfig(AuxKConfig):
  """Top-k SAE with unit-norm decoder rows and the AuxK loss for dead latents."""

  k: int = 32
  """Number of active latents per example."""
  sparse_path: bool | None = None
  """Train through the k selected latents only (gathers/scatter-adds) instead of dense d_sae-wide
  products; None chooses by `d_sae / k` (see `use_sparse_path`)."""

  architecture: ClassVar[str] = "topk"
  SPARSE_MIN_RATIO: ClassVar[int] = 32
  """Measured on 2 CPU cores (train step, batch 4096, k 32/64; `sparse_path.selected_decode`):
  sparse 1.17x dense at d_sae/k = 36 (576 x 1152), 1.49x at 72, 1.59x at 32 (256 x 2048, k 64);
  see benchmarks/bench_sparse_step.py for the benchmark sizes."""

  def __post_init__(self):
    super().__post_init__()
    V.check_int("k", self.k, low=1)
    if self.k > self.d_sae:
      raise V.WSAEInputError(
        f"k must be <= d_sae (cannot keep {self.k} of {self.d_sae} latents); lower k or "
        f"raise d_sae."
      )

  @property
  def use_sparse_path(self) -> bool:
    if self.sparse_path is not None:
      return self.sparse_path
    return self.d_sae >= self.SPARSE_MIN_RATIO * self.k


def init(cfg, key):
  """Unit decoder rows, `W_enc = W_decᵀ`, zero biases (set `b_dec` to the data mean or
  geometric median afterwards if you like)."""
  return base.untied_init(cfg, key)


def pre_activations(cfg, params, x_BxD):
  return (x_BxD - params["b_dec"]) @ params["W_enc"] + params["b_enc"]


def encode(cfg, params, x_BxD):
  return topk_activation(pre_activations(cfg, params, x_BxD), cfg.k)


def auxk_loss(cfg, params, x_BxD, dead_M, residual_BxD, gamma, like):
  """The AuxK loss (Gao et al. 2024): the `aux_k` largest pre-activations among dead latents
  reconstruct the (stopped-gradient) residual `x − x̂` through the decoder without bias; weighted
  by γ like the main term and scaled by `min(n_dead / aux_k, 1)` (as SAELens does), so it fades
  as latents revive. Computed only when some latent is dead; `dead_M=None` gives no term.
  `like` is the main loss: `like * 0` (not a fresh zero) carries its sharding axes in shard_map.

  The branch computes its own pre-activations from the parameters rather than taking the main
  term's: a `(batch, d_sae)` operand of the `lax.cond` would receive a (zero, when no latent is
  dead) cotangent outside the cond on every step, and with it the two dense backward products the
  sparse path exists to avoid. When at most `aux_width(cfg)` latents are dead (the usual case once
  the recipe has revived them), only their encoder columns are gathered and their pre-activations
  computed (its loss and gradient at 576 × 18432, batch 2048, 184 dead, 1.0–1.1 s -> 0.81–0.82 s
  against a dense scatter and product); the selection and decoder product are that wide. With
  more dead latents the full width is used, a chunk of rows at a time (`_aux_row_chunk`), each
  chunk recomputed in the backward pass, so that it holds no `(batch, d_sae)` buffers beyond one
  chunk's. Both equal the plain full-width computation (tested).
  """
  if dead_M is None:
    return like * 0
  aux_k = cfg.resolved_aux_k
  n_dead = jnp.sum(dead_M)
  residual = jax.lax.stop_gradient(residual_BxD)
  scale = jnp.minimum(n_dead / aux_k, 1.0).astype(like.dtype)
  width = aux_width(cfg)

  def loss_of(x, res, p):
    pre = jnp.where(dead_M, pre_activations(cfg, p, x), -jnp.inf)
    z = latent_shards.topk_activation(pre, aux_k)
    return reconstruction_loss(res, z @ p["W_dec"], gamma)[0]

  def full():
    B = x_BxD.shape[0]
    C = _aux_row_chunk(B, cfg.d_sae)
    if C == B:  # small enough at once: no chunks, nothing recomputed
      return scale * loss_of(x_BxD, residual, params)
    chunk = jax.checkpoint(lambda a: loss_of(a[0], a[1], params))
    split = lambda a: a.reshape((B // C, C) + a.shape[1:])
    # Equal chunks: the mean of their batch means is the batch mean.
    return scale * jnp.mean(jax.lax.map(chunk, (split(x_BxD), split(residual))))

  def gathered():
    (idx_W,) = jnp.nonzero(dead_M, size=width, fill_value=0)
    live_W = jnp.arange(width) < n_dead  # the padding repeats latent 0: masked out
    columns = {**params, "W_enc": params["W_enc"][:, idx_W], "b_enc": params["b_enc"][idx_W]}
    pre_BxW = jnp.where(live_W, pre_activations(cfg, columns, x_BxD), -jnp.inf)
    z = topk_activation(pre_BxW, aux_k)
    return scale * reconstruction_loss(residual, z @ params["W_dec"][idx_W], gamma)[0]

  if width >= cfg.d_sae:
    return jax.lax.cond(n_dead > 0, full, lambda: like * 0)
  return jax.lax.cond(
    n_dead > 0, lambda: jax.lax.cond(n_dead <= width, gathered, full), lambda: like * 0
  )


AUX_CHUNK_MIN_BYTES = 64 * 2**20
"""Full-width AuxK is chunked when one `(rows, d_sae)` float32 block exceeds this. Chunking saves
the branch's `(rows, d_sae)` temporaries (reserved by the compiled step even while no latent is
dead) at the price of recomputing the branch in the backward pass: `bench_auxk.py` measured the
full-width step 1.64x -> 1.90x the step without AuxK at (4096, 4608), and `bench_memory.py` the
Top-k step's temporaries 499 MB unchunked -> 392 MB chunked there."""
AUX_CHUNK_BYTES = 16 * 2**20
"""Row chunks of full-width AuxK hold about this many bytes of `(rows, d_sae)` float32."""


def _aux_row_chunk(rows: int, d_sae: int) -> int:
  """Rows per chunk of full-width AuxK: all rows while their `(rows, d_sae)` block is at most
  `AUX_CHUNK_MIN_BYTES`; else the largest divisor of `rows` whose block fits `AUX_CHUNK_BYTES`,
  or all rows when no divisor comes within 8× of that (an awkward batch size)."""
  target = max(1, AUX_CHUNK_BYTES // (4 * d_sae))
  if rows * d_sae * 4 <= AUX_CHUNK_MIN_BYTES or rows <= target:
    return rows
  best = max(c for c in range(1, target + 1) if rows % c == 0)
  return best if best * 8 >= target else rows


def aux_width(cfg) -> int:
  """How many dead latents AuxK gathers before it falls back to the full width: twice `aux_k`
  (at least the k it selects), at most d_sae."""
  return min(cfg.d_sae, 2 * cfg.resolved_aux_k)


def _dense(cfg, params, x_BxD, pre_BxM, k):
  """Top-k forward through dense `(batch, d_sae)` codes: every product is d_sae wide."""
  z = latent_shards.topk_activation(pre_BxM, cfg.k, k_active=k)
  x_hat = base.affine_decode(cfg, params, z)
  l0 = jnp.mean(jnp.sum(z > 0, axis=-1).astype(jnp.float32))
  return x_hat, l0, jnp.any(z > 0, axis=0)


def _sparse(cfg, params, x_BxD, pre_BxM, k):
  """Top-k forward that touches only the k selected latents of each example.

  The selection uses the (stopped-gradient) dense pre-activations; the selected activations and
  the reconstruction come from `sparse_path.selected_decode`, whose gradient is a few gathers and
  scatter-adds of B·k rows instead of the dense `(batch, d_sae) × (d_sae, d_in)` products:
  O(B·k·d_in) instead of O(B·d_sae·d_in). On latent shards, `latent_shards` selects across them
  and each shard decodes the selected latents it holds.
  """
  _, idx_BxK = latent_shards.top_k(pre_BxM, cfg.k)
  keep_BxK = jnp.broadcast_to(True if k is None else jnp.arange(cfg.k) < k, idx_BxK.shape)
  acts_BxK, parts_1xBxD, fired_M = latent_shards.selected_decode(
    (cfg.d_sae,),
    x_BxD - params["b_dec"],
    params["W_enc"],
    params["b_enc"],
    params["W_dec"],
    idx_BxK,
    keep_BxK,
  )
  return parts_1xBxD[0] + params["b_dec"], selected_l0(acts_BxK), fired_M


def loss(cfg, params, x_BxD, *, gamma=None, dead_M=None, hp=None):
  """Weighted reconstruction plus `aux_coefficient` × AuxK (see `auxk_loss`).

  `hp["k"]` (<= cfg.k, may be traced) keeps only the k largest of the cfg.k selected latents, so
  one compiled program serves many k. `cfg.use_sparse_path` picks the sparse forward.
  """
  pre = pre_activations(cfg, params, x_BxD)
  path = _sparse if cfg.use_sparse_path else _dense
  x_hat, l0, fired = path(cfg, params, x_BxD, pre, hp.get("k"))
  recon, r_aux = reconstruction_loss(x_BxD, x_hat, gamma)
  aux = auxk_loss(cfg, params, x_BxD, dead_M, x_BxD - x_hat, gamma, recon)
  total = recon + cfg.aux_coefficient * aux
  return total, {
    "loss": total,
    "recon": recon,
    "aux_k": aux,
    **batch_summary(x_BxD, r_aux["mse"], l0=l0, fired_M=fired),
  }


def to_saelens(cfg, params):
  return base.SAELensTensors(
    fields={"apply_b_dec_to_input": True, "k": cfg.k}, tensors=base.untied_tensors(params)
  )


def from_saelens(c, tensors, ours):
  where = "wsae_jax.config"
  if "k" not in c:
    raise V.WSAEInputError("a topk SAE needs the field 'k' (active latents).")
  fields = base.saved_fields(ours, "topk", drop=("d_in", "d_sae", "k"))
  cfg = base.config_from_dict(
    {"architecture": "topk", **fields, "d_in": c["d_in"], "d_sae": c["d_sae"], "k": c["k"]}, where
  )
  return cfg, base.b_dec_unfolded_from_b_enc(c, tensors)


def _check_k(cfg, k):
  V.check_int("k", k, low=1, high=cfg.k)


ARCH = base.register(
  base.Architecture(
    name="topk",
    config=TopKSAEConfig,
    init=init,
    pre_activations=pre_activations,
    encode=encode,
    decode=base.affine_decode,
    decoder_matrix=base.w_dec,
    loss=loss,
    saelens_name="topk",
    to_saelens=to_saelens,
    from_saelens=from_saelens,
    saelens_default=True,
    hyperparameters=(base.Hyperparameter("k", jnp.int32, _check_k, config_is_max=True),),
    uses_dead_latents=True,
    optimizer_parts=constraints.unit_norm_decoder,
  )
)
