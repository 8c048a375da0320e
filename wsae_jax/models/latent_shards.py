"""Exact sparsity when the latents are split over devices (a "latent" mesh axis).

Under `jax.jit` with the parameters split over "latent" (`parallel.state_shardings`), XLA's
partitioner finds the per-shard form of the dense products itself: the encoder product is local
to each shard, the decoder product a local product and one sum of the `(batch, d_in)` partial
reconstructions. What it cannot find is a selection across shards: left to itself it gathers the
whole `(batch, d_sae)` pre-activations (or runs one reduction per bit of a radix search). The
functions here write that per-shard maths out with `jax.shard_map`:

* `top_k`: each shard's k largest of each row, their values and global indices gathered (k per
  shard), and the k largest of those; ties go to the lower latent index, as `lax.top_k` breaks
  them (a shard's candidates are listed by index, shards in order).
* `topk_mask`, `batch_mask`: the same selection as a mask split like the pre-activations (the
  Top-k and BatchTopK codes then stay split, and their gradient is elementwise).
* `selected_decode`: the sparse path's decode (`sparse_path.selected_decode`), each shard over
  the selected latents it holds, the partial reconstructions summed.
* `level_parts`: Matryoshka's per-prefix reconstructions from a split code.

Each is the plain single-device computation when no mesh with a "latent" axis of more than one
device is in effect (`jax.sharding.use_abstract_mesh`, which `training.trainer` sets while it
traces its step), so the architectures call them unconditionally.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from wsae_jax.models import sparse_path
from wsae_jax.parallel import DATA_AXIS, LATENT_AXIS


def shards() -> int:
  """Devices splitting the latents in the mesh in effect (1 without one)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or LATENT_AXIS not in mesh.axis_names:
    return 1
  return int(mesh.shape[LATENT_AXIS])


def _rows() -> str | None:
  """The mesh axis the batch is split over here, if the mesh has one of more than one device
  (naming an axis of one device would leave sums over it in the program: XLA does not remove
  them) that is not already split by hand (a sweep's `shard_map` over "member" and "data")."""
  mesh = jax.sharding.get_abstract_mesh()
  if dict(mesh.shape).get(DATA_AXIS, 1) == 1 or DATA_AXIS in mesh.manual_axes:
    return None
  return DATA_AXIS


def _shard_map(f, in_specs, out_specs, axis_names=None):
  """`jax.shard_map` by hand over "latent" and the batch's axis (`_rows`), or `axis_names`; any
  other axis of the mesh (a sweep's members) stays as it is."""
  if axis_names is None:
    axis_names = {LATENT_AXIS} | ({_rows()} - {None})
  return jax.shard_map(f, in_specs=in_specs, out_specs=out_specs, axis_names=frozenset(axis_names))


def _concat(a, axis_name) -> jax.Array:
  """Inside `shard_map`: every device's `a` along `axis_name` (a name or a tuple of names, the
  devices then in row-major order of those axes), concatenated along the last axis in device
  order, the same on each (an all-gather written as a sum of zero-padded blocks, whose result JAX
  types as replicated over the axes)."""
  n, i = jax.lax.axis_size(axis_name), jax.lax.axis_index(axis_name)
  w = a.shape[-1]
  dtype = jnp.int32 if a.dtype == jnp.bool_ else a.dtype
  buf = jnp.zeros(a.shape[:-1] + (n * w,), dtype)
  buf = jax.lax.dynamic_update_slice_in_dim(buf, a.astype(dtype), i * w, axis=a.ndim - 1)
  out = jax.lax.psum(buf, axis_name)
  return out.astype(a.dtype)


def _local_top_k(pre_bxm, k):
  """Inside `shard_map`: the k largest of each row over every shard, `(values, global index)`."""
  m = pre_bxm.shape[-1]
  vals, idx = jax.lax.top_k(pre_bxm, min(k, m))
  offset = jax.lax.axis_index(LATENT_AXIS) * m
  vals, idx = _concat(vals, LATENT_AXIS), _concat(idx + offset, LATENT_AXIS)
  best, pos = jax.lax.top_k(vals, k)
  return best, jnp.take_along_axis(idx, pos, axis=-1)


def top_k(pre_BxM, k: int):
  """`lax.top_k(pre, k)` of the stopped-gradient pre-activations: `(values, indices)`, the
  indices global, replicated over the latent shards."""
  pre_BxM = jax.lax.stop_gradient(pre_BxM)
  if shards() == 1:
    return jax.lax.top_k(pre_BxM, k)
  rows = _rows()
  return _shard_map(lambda p: _local_top_k(p, k), P(rows, LATENT_AXIS), (P(rows), P(rows)))(pre_BxM)


def _local_index(idx, m):
  """Inside `shard_map`: global latent indices as this shard's, and which are its own; an index
  it does not hold becomes `m` (out of range: a scatter with mode "drop" skips it)."""
  local = idx - jax.lax.axis_index(LATENT_AXIS) * m
  mine = (local >= 0) & (local < m)
  return jnp.where(mine, local, m), mine


def topk_mask(pre_BxM, k: int, k_active=None):
  """Mask of each row's k largest pre-activations (the first `k_active` of them when given, may be
  traced), split like `pre`: what `selection.topk_activation` keeps, ties included."""
  if shards() == 1:
    _, idx = jax.lax.top_k(jax.lax.stop_gradient(pre_BxM), k)
    keep = jnp.ones(idx.shape, bool) if k_active is None else jnp.arange(k) < k_active
    rows = jnp.arange(pre_BxM.shape[0])[:, None]
    return jnp.zeros(pre_BxM.shape, bool).at[rows, idx].max(jnp.broadcast_to(keep, idx.shape))
  rows_axis = _rows()
  k_active = k if k_active is None else k_active

  def local(p, k_act):
    _, idx = _local_top_k(p, k)
    local_idx, _ = _local_index(idx, p.shape[-1])
    keep = jnp.broadcast_to(jnp.arange(k) < k_act, idx.shape)
    rows = jnp.arange(p.shape[0])[:, None]
    return jnp.zeros(p.shape, bool).at[rows, local_idx].max(keep, mode="drop")

  return _shard_map(local, (P(rows_axis, LATENT_AXIS), P()), P(rows_axis, LATENT_AXIS))(
    jax.lax.stop_gradient(pre_BxM), jnp.asarray(k_active, jnp.int32)
  )


def topk_activation(pre_BxM, k: int, k_active=None):
  """`selection.topk_activation` of `(batch, d_sae)` pre-activations split over the latent
  shards (the single-device function without them)."""
  if shards() == 1:
    from wsae_jax.models.selection import topk_activation as plain

    return plain(pre_BxM, k, k_active)
  relu = jnp.where(pre_BxM > 0, pre_BxM, jnp.zeros((), pre_BxM.dtype))
  return jnp.where(topk_mask(pre_BxM, k, k_active), relu, jnp.zeros((), pre_BxM.dtype))


def batch_mask(relu_BxM, count):
  """Mask of the `count` largest entries of the whole batch (ties to the lower row, then the lower
  latent: `lax.top_k` over the flattened batch), split like `relu` over data and latent shards.

  Each device sends its own `count` largest (all, if it holds fewer, or if `count` is traced);
  every device sorts the gathered candidates by (value, row, latent) and keeps what is above the
  `count`-th, and of its ties those at or before it."""
  rows_axis = _rows()
  axes = tuple(a for a in (rows_axis, LATENT_AXIS) if a is not None)
  static = isinstance(count, int)

  def local(r, cnt):
    b, m = r.shape
    row0 = (jax.lax.axis_index(rows_axis) * b) if rows_axis else 0
    col0 = jax.lax.axis_index(LATENT_AXIS) * m
    cap = min(b * m, count) if static else b * m
    flat = r.reshape(-1)
    vals, pos = jax.lax.top_k(flat, max(cap, 1))
    row, col = pos // m + row0, pos % m + col0
    # One gather over both axes (the device's place in the (data, latent) grid).
    g_val, g_row, g_col = (_concat(a, axes) for a in (vals, row, col))
    neg, s_row, s_col = jax.lax.sort((-g_val, g_row, g_col), num_keys=3)
    n = s_row.shape[0]
    last = jnp.clip(cnt - 1, 0, n - 1)
    t, t_row, t_col = -neg[last], s_row[last], s_col[last]
    rr = jnp.arange(b)[:, None] + row0
    cc = jnp.arange(m)[None, :] + col0
    at_or_before = (rr < t_row) | ((rr == t_row) & (cc <= t_col))
    keep = (r > t) | ((r == t) & at_or_before)
    return jnp.where(cnt >= n, True, jnp.where(cnt <= 0, False, keep))

  spec = P(rows_axis, LATENT_AXIS)
  return _shard_map(local, (spec, P()), spec)(
    jax.lax.stop_gradient(relu_BxM), jnp.asarray(count, jnp.int32)
  )


def _vary(a, axis):
  """`a` cast to vary over `axis` too inside `shard_map` (a custom VJP's inputs must vary alike;
  the transpose of the cast sums the cotangent over the axis)."""
  return a if axis is None else jax.lax.pcast(a, axis, to="varying")


def selected_decode(level_bounds, xc_BxD, W_enc_DxM, b_enc_M, W_dec_MxD, idx_BxK, keep_BxK):
  """`sparse_path.selected_decode` with global indices `idx` into weights split over the latent
  shards, plus the mask of latents that fired: `(acts_BxK, parts_LxBxD, fired_M)`. Each shard
  gathers and scatters only the selected latents it holds; the activations and partial
  reconstructions are summed over the shards (one `(levels, batch, d_in)` sum per step)."""
  if shards() == 1:
    acts, parts = sparse_path.selected_decode(
      level_bounds, xc_BxD, W_enc_DxM, b_enc_M, W_dec_MxD, idx_BxK, keep_BxK
    )
    active = acts > 0
    return acts, parts, jnp.zeros((W_dec_MxD.shape[0],), bool).at[idx_BxK].max(active)

  return _sharded_decode(
    tuple(level_bounds), xc_BxD, W_enc_DxM, b_enc_M, W_dec_MxD, idx_BxK, keep_BxK
  )


# The sharded decode is a custom VJP around two `shard_map`s (forward, backward) rather than a
# `shard_map` around `sparse_path`'s custom VJP: JAX cannot differentiate a `shard_map` holding a
# custom VJP when it is nested in another one (a sweep's, over members), and here no `shard_map`
# is differentiated. Both are by hand over "latent" only: the batch's split over "data" is left
# to the partitioner, which sums the weight gradients over it as for a replicated dictionary. The
# backward pass recomputes the forward's residuals per shard (the slot loops' values, a fraction
# of the step) instead of returning them through the `shard_map`.
_W_SPECS = (P(None, LATENT_AXIS), P(LATENT_AXIS), P(LATENT_AXIS))


def _on_shard(level_bounds, xc, W_enc, b_enc, W_dec, idx, keep):
  """Inside `shard_map`: `sparse_path`'s forward `(outputs, residuals)` over this shard's
  selected latents (global `idx` made local; the others not kept)."""
  m = W_dec.shape[0]
  local_idx, mine = _local_index(idx, m)
  return sparse_path._fwd(
    level_bounds,
    _vary(xc, LATENT_AXIS),
    W_enc,
    b_enc,
    W_dec,
    jnp.where(mine, local_idx, 0),
    keep & mine,
    jax.lax.axis_index(LATENT_AXIS) * m,
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _sharded_decode(level_bounds, xc, W_enc, b_enc, W_dec, idx, keep):
  def local(xc, W_enc, b_enc, W_dec, idx, keep):
    (acts, parts), _ = _on_shard(level_bounds, xc, W_enc, b_enc, W_dec, idx, keep)
    local_idx, _ = _local_index(idx, W_dec.shape[0])
    fired = jnp.zeros((W_dec.shape[0],), jnp.int32)
    fired = fired.at[local_idx].max((acts > 0).astype(jnp.int32), mode="drop")
    return jax.lax.psum(acts, LATENT_AXIS), jax.lax.psum(parts, LATENT_AXIS), fired > 0

  return _shard_map(
    local,
    (P(), *_W_SPECS, P(), P()),
    (P(), P(), P(LATENT_AXIS)),
    axis_names={LATENT_AXIS},
  )(xc, W_enc, b_enc, W_dec, idx, keep)


def _sharded_decode_fwd(level_bounds, xc, W_enc, b_enc, W_dec, idx, keep):
  out = _sharded_decode(level_bounds, xc, W_enc, b_enc, W_dec, idx, keep)
  return out, (xc, W_enc, b_enc, W_dec, idx, keep)


def _sharded_decode_bwd(level_bounds, res, cotangents):
  g_acts, g_parts, _ = cotangents

  def local(xc, W_enc, b_enc, W_dec, idx, keep, g_acts, g_parts):
    _, residuals = _on_shard(level_bounds, xc, W_enc, b_enc, W_dec, idx, keep)
    g_xc, g_enc, g_b_enc, g_dec, *_ = sparse_path._bwd(level_bounds, residuals, (g_acts, g_parts))
    return jax.lax.psum(g_xc, LATENT_AXIS), g_enc, g_b_enc, g_dec

  grads = _shard_map(
    local,
    (P(), *_W_SPECS, P(), P(), P(), P()),
    (P(), *_W_SPECS),
    axis_names={LATENT_AXIS},
  )(*res, g_acts, g_parts)
  return (*grads, None, None)


_sharded_decode.defvjp(_sharded_decode_fwd, _sharded_decode_bwd)


def level_parts(z_BxM, W_dec_MxD, level_bounds):
  """`(levels, batch, d_in)`: part l is `z[:, a:b] @ W_dec[a:b]` for the l-th range `[a, b)` of
  `(0, *level_bounds)` (Matryoshka's prefixes; one part, `z @ W_dec`, for `(d_sae,)`). On latent
  shards each computes the ranges that meet its latents (`lax.switch` over the shards, so every
  slice is static and no product is wider than the unsplit one), and the parts are summed; its
  gradient likewise (a custom VJP, for the reason `_sharded_decode` gives)."""
  bounds = (0, *level_bounds)
  if shards() == 1:
    return jnp.stack([z_BxM[:, a:b] @ W_dec_MxD[a:b] for a, b in zip(bounds, bounds[1:])])
  return _level_parts(tuple(level_bounds), z_BxM, W_dec_MxD)


def _ranges(level_bounds, s: int, m: int):
  """Shard s's (of m latents) part of each level: `(level, lo, hi)` in its local indices."""
  bounds = (0, *level_bounds)
  out = []
  for level, (a, b) in enumerate(zip(bounds, bounds[1:])):
    lo, hi = max(a - s * m, 0), min(b - s * m, m)
    if lo < hi:
      out.append((level, lo, hi))
  return out


def _per_shard(f):
  """Inside `shard_map`: `f(s)` for this device's latent shard s, by `lax.switch` over the shards
  (so that `f` may slice statically)."""
  n = jax.lax.axis_size(LATENT_AXIS)
  return jax.lax.switch(jax.lax.axis_index(LATENT_AXIS), [lambda s=s: f(s) for s in range(n)])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _level_parts(level_bounds, z, W):
  rows = _rows()

  def local(z, W):
    m, L = W.shape[0], len(level_bounds)

    def parts(s):
      # A level without latents here gives zeros of the same (shard-varying) type as the others.
      out = [z[:, :0] @ W[:0]] * L
      for level, lo, hi in _ranges(level_bounds, s, m):
        out[level] = z[:, lo:hi] @ W[lo:hi]
      return jnp.stack(out)

    part = (z @ W)[None] if L == 1 else _per_shard(parts)
    return jax.lax.psum(part, LATENT_AXIS)

  return _shard_map(local, (P(rows, LATENT_AXIS), P(LATENT_AXIS)), P(None, rows))(z, W)


def _level_parts_fwd(level_bounds, z, W):
  return _level_parts(level_bounds, z, W), (z, W)


def _level_parts_bwd(level_bounds, res, g_parts):
  rows = _rows()

  def local(z, W, g):
    m = W.shape[0]

    def grads(s):
      # Zeros typed as the pieces set into them: the code's like z, the decoder's like z and W.
      g_z, g_W = jnp.zeros_like(z), _vary(jnp.zeros_like(W), rows)
      for level, lo, hi in _ranges(level_bounds, s, m):
        g_z = g_z.at[:, lo:hi].set(g[level] @ W[lo:hi].T)
        g_W = g_W.at[lo:hi].set(z[:, lo:hi].T @ g[level])
      return g_z, g_W

    g_z, g_W = _per_shard(grads)
    return g_z, (g_W if rows is None else jax.lax.psum(g_W, rows))

  spec = (P(rows, LATENT_AXIS), P(LATENT_AXIS))
  return _shard_map(local, (*spec, P(None, rows)), spec)(*res, g_parts)


_level_parts.defvjp(_level_parts_fwd, _level_parts_bwd)
