"""Top-k selection: the k largest entries of each row, sort-free where that is faster.

Used by the Top-k SAE (k per row), the AuxK loss, and BatchTopK (k·B over a whole batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from wsae_jax import _validate as V

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
  by index in a few more. `k` may be traced (one value per sweep member) and may exceed the row
  width (every entry is kept).
  """
  keys_BxM = jax.lax.bitcast_convert_type(values_BxM.astype(jnp.float32), jnp.int32)
  k = jnp.asarray(k, jnp.int32)
  # The k-th largest key, two bits per pass (16 passes over the row; measured 1.3x faster than
  # one bit per pass): among the prefixes extended by 01, 10, 11, keep the largest whose count of
  # keys at or above it is still >= k. zeros_like keeps `keys`' sharding axes in shard_map.
  kth_B = jnp.zeros_like(keys_BxM[:, 0])
  for low, width in [(low, 2) for low in range(29, 0, -2)] + [(0, 1)]:  # bits 30..0
    ext_C = jnp.arange(1, 2**width, dtype=jnp.int32)
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


BLOCK = 256
"""Latents per block of the two-stage ("blocked") selection."""


def blocked_kth_largest_mask(values_BxM: jax.Array, k: int, *, block: int = BLOCK) -> jax.Array:
  """Boolean mask of the `k` largest entries of each row, found in two stages: `lax.top_k` within
  blocks of `block` latents (the row's k largest are among the blocks' k largest), then over those
  candidates for each row's k-th value; entries above it are kept, and of those equal to it the
  lowest-indexed (as `lax.top_k` keeps them). Exact; no scatter, so its gradient is a mask."""
  B, M = values_BxM.shape
  n_blocks = -(-M // block)
  pad = n_blocks * block - M
  v = jnp.pad(values_BxM, ((0, 0), (0, pad)), constant_values=-jnp.inf) if pad else values_BxM
  cand = jax.lax.top_k(v.reshape(B, n_blocks, block), min(k, block))[0].reshape(B, -1)
  kth_B = jax.lax.top_k(cand, k)[0][:, -1]
  above = values_BxM > kth_B[:, None]
  tied = values_BxM == kth_B[:, None]
  need_B = k - jnp.sum(above, axis=-1, dtype=jnp.int32)
  return above | (tied & (jnp.cumsum(tied, axis=-1, dtype=jnp.int32) <= need_B[:, None]))


def topk_activation(
  pre_BxM: jax.Array, k: int, k_active=None, *, method: str = "auto"
) -> jax.Array:
  """Keeps the k largest pre-activations per row (after ReLU), zero elsewhere.

  Exactly k entries survive the selection; entries whose value is <= 0 are then zeroed by the
  ReLU, so a row has k non-zeros whenever it has at least k positive pre-activations.
  `k_active` (<= k, may be traced) keeps only the first `k_active` ranks: Top-k for many k in
  one compiled program.

  `method`: "top_k" (`lax.top_k` and a scatter), "radix" (`kth_largest_mask` on the ReLU'd
  values: no sort, no scatter, its gradient a plain mask), "blocked" (`blocked_kth_largest_mask`:
  two-stage `lax.top_k`, no scatter) or "auto" (radix up to `RADIX_SELECT_MAX_WIDTH` latents when
  k >= `RADIX_SELECT_MIN_K`, else top_k). All give identical outputs and gradients.
  """
  if method == "auto":
    method = (
      "radix"
      if pre_BxM.shape[-1] <= RADIX_SELECT_MAX_WIDTH and k >= RADIX_SELECT_MIN_K
      else "top_k"
    )
  if method == "radix":
    # Selecting among the ReLU'd values keeps the same positive entries as selecting among the
    # raw ones (the others are zeroed either way); `where` keeps +0.0, whose bits order first.
    relu = jnp.where(pre_BxM > 0, pre_BxM, jnp.zeros((), pre_BxM.dtype))
    mask = kth_largest_mask(jax.lax.stop_gradient(relu), k if k_active is None else k_active)
    return jnp.where(mask, relu, jnp.zeros((), pre_BxM.dtype))
  if method == "blocked" and k_active is None:
    relu = jnp.where(pre_BxM > 0, pre_BxM, jnp.zeros((), pre_BxM.dtype))
    mask = blocked_kth_largest_mask(jax.lax.stop_gradient(relu), k, block=BLOCK)
    return jnp.where(mask, relu, jnp.zeros((), pre_BxM.dtype))
  if method not in ("top_k", "blocked"):
    raise V.WSAEInputError(f"method must be 'auto', 'radix', 'blocked' or 'top_k', got {method!r}.")
  vals_BxK, idx_BxK = jax.lax.top_k(pre_BxM, k)
  if k_active is not None:
    vals_BxK = jnp.where(jnp.arange(k) < k_active, vals_BxK, 0.0)
  rows = jnp.arange(pre_BxM.shape[0])[:, None]
  return jnp.zeros_like(pre_BxM).at[rows, idx_BxK].set(jax.nn.relu(vals_BxK))
