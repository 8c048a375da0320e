"""What each latent is: its statistics, its top-activating examples and its decoder neighbours,
from sparse codes on held-out rows (the data of `wsae report`'s feature pages, in the manner of
SAE-Vis / sae-dashboard, without a model in the loop).

Rows are token positions in file order; with `context_len` the rows of one context are
consecutive, so an example's window never crosses into another context.
"""

from __future__ import annotations

import numpy as np

from wsae_jax import _validate as V

BANDS = 3
"""Activation bands (thirds of each latent's maximum), sampled as SAE-Vis' quantile groups."""


def latent_stats(
  latents_BxK, values_BxK, d_sae: int, tokens_B=None, *, top_tokens: int = 5
) -> dict:
  """Per latent: `count` (rows active), `frequency`, `mean` (over active rows), `max`, and with
  tokens `top_tokens`: the ids of the tokens it is most often active on, with their counts
  (`top_token_counts`), `-1` / 0 where fewer exist."""
  lat = np.asarray(latents_BxK)
  val = np.asarray(values_BxK, np.float64)
  if lat.shape != val.shape or lat.ndim != 2:
    raise V.WSAEInputError(
      f"latents and values must be (B, K) alike, got {lat.shape}, {val.shape}."
    )
  act = lat >= 0
  L, Vv = lat[act], val[act]
  count = np.bincount(L, minlength=d_sae)
  total = np.bincount(L, weights=Vv, minlength=d_sae)
  mx = np.zeros(d_sae)
  np.maximum.at(mx, L, Vv)
  out = {
    "count": count,
    "frequency": count / max(len(lat), 1),
    "mean": np.where(count > 0, total / np.maximum(count, 1), 0.0),
    "max": mx,
  }
  if tokens_B is not None:
    tok = np.broadcast_to(np.asarray(tokens_B)[:, None], lat.shape)[act].astype(np.int64)
    ids = np.full((d_sae, top_tokens), -1, np.int64)
    counts = np.zeros((d_sae, top_tokens), np.int64)
    if L.size:
      pairs, n = np.unique(L.astype(np.int64) * (int(tok.max()) + 1) + tok, return_counts=True)
      lat_of, tok_of = np.divmod(pairs, int(tok.max()) + 1)
      order = np.lexsort((-n, lat_of))  # by latent, then most frequent first
      lat_of, tok_of, n = lat_of[order], tok_of[order], n[order]
      first = np.searchsorted(lat_of, lat_of)  # index of each latent's first pair
      rank = np.arange(len(lat_of)) - first
      keep = rank < top_tokens
      ids[lat_of[keep], rank[keep]] = tok_of[keep]
      counts[lat_of[keep], rank[keep]] = n[keep]
    out.update(top_tokens=ids, top_token_counts=counts)
  return out


def activation_histograms(latents_BxK, values_BxK, d_sae: int, *, bins: int = 20) -> np.ndarray:
  """Per latent, the histogram of its non-zero activations over `bins` equal bins from 0 to its
  own maximum (as SAE-Vis shows): counts `(d_sae, bins)`; a latent's maximum falls in its last
  bin. With `latent_stats`'s `max` the bin edges are `max · [0, 1/bins, …, 1]`."""
  lat = np.asarray(latents_BxK)
  val = np.asarray(values_BxK, np.float64)
  act = (lat >= 0) & (val > 0)
  L, Vv = lat[act].astype(np.int64), val[act]
  mx = np.zeros(d_sae)
  np.maximum.at(mx, L, Vv)
  b = np.minimum((Vv / np.maximum(mx[L], 1e-30) * bins).astype(np.int64), bins - 1)
  return np.bincount(L * bins + b, minlength=d_sae * bins).reshape(d_sae, bins)


def examples(
  latents_BxK,
  values_BxK,
  d_sae: int,
  *,
  top: int = 10,
  per_band: int = 4,
  exclude_B=None,
  seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Example rows per latent: its `top` most activating rows, then `per_band` rows drawn at random
  from each of `BANDS` activation bands (thirds of its maximum, lowest band first), as SAE-Vis
  shows. Returns `rows (d_sae, top + BANDS·per_band)` and `band` of the same shape (0 = top,
  1..BANDS from the lowest band), `-1` where a latent has fewer rows. `exclude_B` masks rows that
  may not be examples (e.g. each context's first token)."""
  lat = np.asarray(latents_BxK)
  val = np.asarray(values_BxK, np.float64)
  n_ex = top + BANDS * per_band
  rows_out = np.full((d_sae, n_ex), -1, np.int64)
  band_out = np.full((d_sae, n_ex), -1, np.int8)
  act = lat >= 0
  if exclude_B is not None:
    act &= ~np.asarray(exclude_B, bool)[:, None]
  r = np.broadcast_to(np.arange(len(lat))[:, None], lat.shape)[act]
  L, Vv = lat[act].astype(np.int64), val[act]
  order = np.lexsort((-Vv, L))  # by latent, strongest first
  L, Vv, r = L[order], Vv[order], r[order]
  starts = np.searchsorted(L, np.arange(d_sae + 1))
  rng = np.random.default_rng(seed)
  for j in np.flatnonzero(np.diff(starts)):
    s, e = starts[j], starts[j + 1]
    k = min(top, e - s)
    rows_out[j, :k], band_out[j, :k] = r[s : s + k], 0
    col = top
    mx = Vv[s]
    rest_v, rest_r = Vv[s + k : e], r[s + k : e]
    for b in range(BANDS):
      lo, hi = mx * b / BANDS, mx * (b + 1) / BANDS
      pick = np.flatnonzero((rest_v > lo) & (rest_v <= hi))
      if len(pick):
        pick = np.sort(rng.choice(pick, min(per_band, len(pick)), replace=False))
        rows_out[j, col : col + len(pick)], band_out[j, col : col + len(pick)] = rest_r[pick], b + 1
      col += per_band
  return rows_out, band_out


def windows(
  latents_BxK,
  values_BxK,
  rows_MxE,
  *,
  context_len: int,
  before: int = 12,
  after: int = 4,
  chunk: int = 128,
) -> np.ndarray:
  """For each example row (`rows_MxE`, -1 = none) of each latent, that latent's activation on the
  window of `before` tokens before the row and `after` after it, clipped to the row's context:
  `(M, E, before + 1 + after)`, 0 outside the context or where inactive (`chunk` latents at a
  time bound the memory)."""
  lat = np.asarray(latents_BxK)
  val = np.asarray(values_BxK, np.float64)
  rows = np.asarray(rows_MxE)
  M, E = rows.shape
  offs = np.arange(-before, after + 1)
  out = np.zeros((M, E, len(offs)))
  for s in range(0, M, chunk):
    r = rows[s : s + chunk, :, None]
    pos = r + offs  # (m, E, W)
    inside = (pos // context_len == r // context_len) & (pos >= 0) & (pos < len(lat)) & (r >= 0)
    safe = np.where(inside, pos, 0)
    mine = lat[safe] == np.arange(s, s + len(r))[:, None, None, None]  # (m, E, W, K)
    out[s : s + chunk] = np.where(inside, np.where(mine, val[safe], 0.0).sum(-1), 0.0)
  return out


def decoder_neighbours(
  w_dec_MxD, k: int = 5, *, chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
  """Each latent's `k` nearest decoder directions by cosine (itself excluded): `(ids, cos)`, each
  `(M, k)`, nearest first."""
  w = np.asarray(w_dec_MxD, np.float32)
  u = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
  M = len(u)
  k = min(k, M - 1)
  ids = np.zeros((M, k), np.int64)
  cos = np.zeros((M, k), np.float32)
  for s in range(0, M, chunk):
    c = u[s : s + chunk] @ u.T
    c[np.arange(len(c)), np.arange(s, s + len(c))] = -np.inf
    part = np.argpartition(-c, k - 1, axis=1)[:, :k] if k > 0 else np.zeros((len(c), 0), int)
    pc = np.take_along_axis(c, part, 1)
    o = np.argsort(-pc, axis=1)
    ids[s : s + chunk] = np.take_along_axis(part, o, 1)
    cos[s : s + chunk] = np.take_along_axis(pc, o, 1)
  return ids, cos
