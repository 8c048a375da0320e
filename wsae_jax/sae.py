"""The SAE family: one frozen config per architecture, parameters as plain dicts with SAELens names.

Parameter names and shapes follow SAELens: `W_enc (d_in, d_sae)`, `W_dec (d_sae, d_in)`,
`b_enc (d_sae,)`, `b_dec (d_in,)`. The tied theory SAE stores only `W_enc`; its decoder is
`W_enc.T` (see `decoder_matrix`).

Architectures:
  * `TiedSAEConfig`: the paper's SAE, `z = ReLU(x W_enc)`, `x̂ = z W_encᵀ`, no biases.
  * `ReLUSAEConfig`: untied with biases; L1 penalty weighted by decoder row norms (Anthropic's
    April-2024 recipe), `z = ReLU(x W_enc + b_enc)`, `x̂ = z W_dec + b_dec`.
  * `TopKSAEConfig`: OpenAI's Top-k SAE, `z = TopK(ReLU((x − b_dec) W_enc + b_enc))`, unit-norm
    decoder rows, with the AuxK loss on dead latents.

Each config is hashable (a valid `static_argnums` value) and is checked when it is built.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Union

import jax
import jax.numpy as jnp

from wsae_jax import _validate as V

Params = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True, kw_only=True)
class _BaseSAEConfig:
  d_in: int
  """Input (observed activation) dimension."""
  d_sae: int
  """Number of latents (dictionary size)."""
  dtype: str = "float32"
  """Parameter dtype."""

  architecture: ClassVar[str] = ""

  def __post_init__(self):
    V.check_int("d_in", self.d_in, low=1)
    V.check_int("d_sae", self.d_sae, low=1)
    if self.dtype not in ("float32", "float64", "bfloat16"):
      raise V.WSAEInputError(
          f"dtype must be 'float32', 'float64' or 'bfloat16', got {self.dtype!r}.")

  def to_dict(self) -> dict:
    return {"architecture": self.architecture, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TiedSAEConfig(_BaseSAEConfig):
  """The theory's SAE: tied weights, no biases, ReLU; loss is reconstruction only."""

  architecture: ClassVar[str] = "tied"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReLUSAEConfig(_BaseSAEConfig):
  """Untied ReLU SAE with an L1 penalty `λ Σ_j z_j ‖W_dec[j]‖`."""

  l1_coefficient: float = 1e-3
  """λ, the sparsity penalty on decoder-norm-weighted activations."""
  init_decoder_norm: float = 0.1
  """Norm of the decoder rows at initialisation (Anthropic suggest 0.05-1)."""

  architecture: ClassVar[str] = "relu"

  def __post_init__(self):
    super().__post_init__()
    V.check_range("l1_coefficient", self.l1_coefficient, low=0.0)
    V.check_range("init_decoder_norm", self.init_decoder_norm, low=0.0, low_open=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TopKSAEConfig(_BaseSAEConfig):
  """Top-k SAE with unit-norm decoder rows and the AuxK loss for dead latents."""

  k: int = 32
  """Number of active latents per example."""
  aux_k: int | None = None
  """Latents used by the AuxK loss (None: d_in // 2, capped at d_sae)."""
  aux_coefficient: float = 1.0 / 32.0
  """Weight of the AuxK loss."""
  dead_after_tokens: int = 10_000_000
  """A latent that has not fired for this many training tokens counts as dead."""
  sparse_path: bool | None = None
  """Train through the k selected latents only (gathers/scatter-adds) instead of dense d_sae-wide
  products; None chooses by `d_sae / k` (see `use_sparse_path`)."""

  architecture: ClassVar[str] = "topk"
  SPARSE_MIN_RATIO: ClassVar[int] = 256
  """Measured on 2 CPU cores (benchmarks/RESULTS.md): sparse was 0.95x dense at d_sae/k = 144,
  1.26x at 576 and 1.14x at 768."""

  def __post_init__(self):
    super().__post_init__()
    V.check_int("k", self.k, low=1)
    if self.k > self.d_sae:
      raise V.WSAEInputError(
          f"k must be <= d_sae (cannot keep {self.k} of {self.d_sae} latents); lower k or "
          f"raise d_sae.")
    if self.aux_k is not None:
      V.check_int("aux_k", self.aux_k, low=1, high=self.d_sae)
    V.check_range("aux_coefficient", self.aux_coefficient, low=0.0)
    V.check_int("dead_after_tokens", self.dead_after_tokens, low=1)

  @property
  def use_sparse_path(self) -> bool:
    if self.sparse_path is not None:
      return self.sparse_path
    return self.d_sae >= self.SPARSE_MIN_RATIO * self.k

  @property
  def resolved_aux_k(self) -> int:
    return self.aux_k if self.aux_k is not None else max(1, min(self.d_in // 2, self.d_sae))


SAEConfig = Union[TiedSAEConfig, ReLUSAEConfig, TopKSAEConfig]
ARCHITECTURES = {c.architecture: c for c in (TiedSAEConfig, ReLUSAEConfig, TopKSAEConfig)}


def make_config(architecture: str, **kwargs) -> SAEConfig:
  """Builds the config for an architecture name ("tied", "relu", "topk")."""
  if architecture not in ARCHITECTURES:
    raise V.WSAEInputError(
        f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}.")
  return V.build_dataclass(ARCHITECTURES[architecture], kwargs, f"{architecture} SAE config")


def config_from_dict(d, where: str) -> SAEConfig:
  """The config a `to_dict()` record describes (as saved in checkpoints and sweep files).

  Raises `WSAEInputError` naming `where` and the field for a missing architecture, an unknown
  field or a value of the wrong type.
  """
  V.check_fields(where, d, {"architecture": str}, allow_unknown=True)
  fields = {k: v for k, v in d.items() if k != "architecture"}
  try:
    return make_config(d["architecture"], **fields)
  except V.WSAEInputError as e:
    raise V.WSAEInputError(f"{where}: {e}") from None


def _unit_rows(key, shape, dtype):
  w = jax.random.normal(key, shape, jnp.float32)
  return (w / jnp.linalg.norm(w, axis=-1, keepdims=True)).astype(dtype)


def init(cfg: SAEConfig, key: jax.Array) -> Params:
  """Initial parameters.

  Tied: columns of `W_enc` are random unit vectors. ReLU: decoder rows random with norm
  `init_decoder_norm`, `W_enc = W_decᵀ`, zero biases. Top-k: unit decoder rows, `W_enc = W_decᵀ`,
  zero biases (set `b_dec` to the data mean or geometric median afterwards if you like).
  """
  dtype = jnp.dtype(cfg.dtype)
  w_dec = _unit_rows(key, (cfg.d_sae, cfg.d_in), dtype)
  if isinstance(cfg, TiedSAEConfig):
    return {"W_enc": w_dec.T}
  if isinstance(cfg, ReLUSAEConfig):
    w_dec = w_dec * jnp.asarray(cfg.init_decoder_norm, dtype)
  return {"W_enc": w_dec.T, "W_dec": w_dec,
          "b_enc": jnp.zeros((cfg.d_sae,), dtype), "b_dec": jnp.zeros((cfg.d_in,), dtype)}


def decoder_matrix(cfg: SAEConfig, params: Params) -> jax.Array:
  """`W_dec` of shape `(d_sae, d_in)`; for the tied SAE this is `W_encᵀ`."""
  return params["W_enc"].T if isinstance(cfg, TiedSAEConfig) else params["W_dec"]


def pre_activations(cfg: SAEConfig, params: Params, x_BxD: jax.Array) -> jax.Array:
  """Encoder pre-activations `(batch, d_sae)`, before ReLU / Top-k."""
  if isinstance(cfg, TiedSAEConfig):
    return x_BxD @ params["W_enc"]
  if isinstance(cfg, TopKSAEConfig):
    return (x_BxD - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
  return x_BxD @ params["W_enc"] + params["b_enc"]


# When "auto" selects by a radix search instead of `lax.top_k`: at most this many latents and at
# least this k. Measured on 2 CPU cores (`python benchmarks/bench_topk_select.py`, forward /
# gradient ms at batch 1024): d_sae = 200: radix 1.45 / 1.45 at any k, lax.top_k 1.58 / 1.82 at
# k = 10, 6.64 / 7.45 at k = 60, 29.3 / 29.8 at k = 200; d_sae = 1024, k = 32: radix 5.9 / 6.7,
# lax.top_k 8.1 / 8.7; d_sae = 4608, k = 32 (batch 4096): radix 466 / 483, lax.top_k 80 / 125.
RADIX_SELECT_MAX_WIDTH = 1024
RADIX_SELECT_MIN_K = 8


@jax.jit
def kth_largest_mask(values_BxM: jax.Array, k) -> jax.Array:
  """Boolean mask of the `k` largest entries of each row of a non-negative array.

  Exact, including ties (the lowest indices win, as in `lax.top_k`), and sort-free: the k-th
  largest value is found bit by bit on the float's bit pattern (non-negative floats order as
  their bits do), in 16 passes of compare-and-count over the row; ties at that value are broken
  by index in a few more. `k` may be traced (one value per sweep member) and may exceed the row width (every
  entry is kept).
  """
  keys_BxM = jax.lax.bitcast_convert_type(values_BxM.astype(jnp.float32), jnp.int32)
  k = jnp.asarray(k, jnp.int32)
  # The k-th largest key, two bits per pass (16 passes over the row; measured 1.3x faster than
  # one bit per pass): among the prefixes extended by 01, 10, 11, keep the largest whose count of
  # keys at or above it is still >= k. zeros_like keeps `keys`' sharding axes in shard_map.
  kth_B = jnp.zeros_like(keys_BxM[:, 0])
  for low, width in [(low, 2) for low in range(29, 0, -2)] + [(0, 1)]:  # bits 30..0
    ext_C = jnp.arange(1, 2 ** width, dtype=jnp.int32)
    cand_BxC = kth_B[:, None] | jnp.left_shift(ext_C, low)[None, :]
    count_BxC = jnp.sum(keys_BxM[:, :, None] >= cand_BxC[:, None, :], axis=1, dtype=jnp.int32)
    kth_B = kth_B | jnp.left_shift(jnp.max(jnp.where(count_BxC >= k, ext_C, 0), axis=1), low)
  above = keys_BxM > kth_B[:, None]
  tied = keys_BxM == kth_B[:, None]
  need_B = k - jnp.sum(above, axis=-1, dtype=jnp.int32)
  # Ties at the threshold: keep the `need` lowest-indexed tied entries. The largest index bound
  # J with fewer than `need` tied entries below it, found bit by bit like the threshold (a few
  # passes; a cumsum along the row measured 1.1 ms at (1024, 200), more than this whole search).
  idx_M = jnp.arange(keys_BxM.shape[-1], dtype=jnp.int32)
  bound_B = jnp.zeros_like(kth_B)
  for b in reversed(range(max(1, (keys_BxM.shape[-1]).bit_length()))):
    cand_B = bound_B | (1 << b)
    below_B = jnp.sum(tied & (idx_M[None, :] < cand_B[:, None]), axis=-1, dtype=jnp.int32)
    bound_B = jnp.where(below_B < need_B, cand_B, bound_B)
  return above | (tied & (idx_M[None, :] <= bound_B[:, None]))


def topk_activation(pre_BxM: jax.Array, k: int, k_active=None, *, method: str = "auto"
                    ) -> jax.Array:
  """Keeps the k largest pre-activations per row (after ReLU), zero elsewhere.

  Exactly k entries survive the selection; entries whose value is <= 0 are then zeroed by the
  ReLU, so a row has k non-zeros whenever it has at least k positive pre-activations.
  `k_active` (<= k, may be traced) keeps only the first `k_active` ranks: Top-k for many k in
  one compiled program.

  `method`: "top_k" (`lax.top_k` and a scatter), "radix" (`kth_largest_mask` on the ReLU'd
  values: no sort, no scatter, its gradient a plain mask) or "auto" (radix up to
  `RADIX_SELECT_MAX_WIDTH` latents when k >= `RADIX_SELECT_MIN_K`). Both give identical outputs
  and gradients.
  """
  if method == "auto":
    method = ("radix" if pre_BxM.shape[-1] <= RADIX_SELECT_MAX_WIDTH and k >= RADIX_SELECT_MIN_K
              else "top_k")
  if method == "radix":
    # Selecting among the ReLU'd values keeps the same positive entries as selecting among the
    # raw ones (the others are zeroed either way); `where` keeps +0.0, whose bits order first.
    relu = jnp.where(pre_BxM > 0, pre_BxM, jnp.zeros((), pre_BxM.dtype))
    mask = kth_largest_mask(jax.lax.stop_gradient(relu), k if k_active is None else k_active)
    return jnp.where(mask, relu, jnp.zeros((), pre_BxM.dtype))
  if method != "top_k":
    raise V.WSAEInputError(f"method must be 'auto', 'radix' or 'top_k', got {method!r}.")
  vals_BxK, idx_BxK = jax.lax.top_k(pre_BxM, k)
  if k_active is not None:
    vals_BxK = jnp.where(jnp.arange(k) < k_active, vals_BxK, 0.0)
  rows = jnp.arange(pre_BxM.shape[0])[:, None]
  return jnp.zeros_like(pre_BxM).at[rows, idx_BxK].set(jax.nn.relu(vals_BxK))


def encode(cfg: SAEConfig, params: Params, x_BxD: jax.Array) -> jax.Array:
  """Latent activations `z`, shape `(batch, d_sae)`."""
  pre = pre_activations(cfg, params, x_BxD)
  if isinstance(cfg, TopKSAEConfig):
    return topk_activation(pre, cfg.k)
  return jax.nn.relu(pre)


def decode(cfg: SAEConfig, params: Params, z_BxM: jax.Array) -> jax.Array:
  """Reconstruction `x̂`, shape `(batch, d_in)`."""
  x_hat = z_BxM @ decoder_matrix(cfg, params)
  if isinstance(cfg, TiedSAEConfig):
    return x_hat
  return x_hat + params["b_dec"]


def forward(cfg: SAEConfig, params: Params, x_BxD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`(z, x̂)` for a batch."""
  z = encode(cfg, params, x_BxD)
  return z, decode(cfg, params, z)


def num_params(params: Params) -> int:
  return sum(math.prod(p.shape) for p in jax.tree.leaves(params))
