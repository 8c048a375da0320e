"""Scores of a trained SAE on held-out activations: reconstruction, sparsity, latent statistics.

Works for any registered architecture and any SAELens folder our loader reads (the SAE is applied
to the raw activations: SAELens folders carry any normalisation folded into their weights).

  * FVU over all rows and over typical rows (norm <= 5x the median: without the few
    massive-activation tokens, which hold much of the variance of a residual stream);
  * L0, the dead fraction (never active on these rows), the dense fraction (active on more than
    `DENSE_FREQUENCY` of the rows), the histogram of log10 firing frequencies;
  * with token ids: token consistency and top-20 token entropy per latent (see
    `metrics.latent_token_stats`), averaged over latents with at least 20 activations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from wsae_jax import _validate as V
from wsae_jax import models
from wsae_jax.evaluation import metrics
from wsae_jax.objectives.weights import typical_rows

DENSE_FREQUENCY = 0.1
"""A latent active on more than this fraction of rows counts as dense."""
FREQUENCY_BINS = np.linspace(-6.0, 0.0, 25)
"""Edges of the log10 firing-frequency histogram (frequencies below 1e-6 fall in the first bin)."""
MIN_ACTIVATIONS = 20
"""Latents with fewer activations are left out of the token averages."""


def sparse_codes(cfg, params, x_BxD, *, batch: int = 2048, progress: bool = False):
  """`(x̂, latent ids, values)` of `x` in batches: ids and values `(B, K)` padded with -1 / 0,
  K the most latents any row activates (wide SAEs' dense codes would not fit in memory).
  `progress`: a tqdm bar over the rows."""
  x = np.asarray(x_BxD, np.float32)
  V.check_rank("x", x, 2)
  if x.shape[1] != cfg.d_in:
    raise V.WSAEInputError(f"activations have d_in={x.shape[1]}, the SAE expects {cfg.d_in}.")
  fwd = jax.jit(lambda p, xb: models.forward(cfg, p, xb))
  params = jax.tree.map(jnp.asarray, params)
  x_hats, ids, vals = [], [], []
  bar = tqdm(
    total=len(x), desc="encoding", unit="row", unit_scale=True, disable=not progress, leave=False
  )
  for i in range(0, len(x), batch):
    z, x_hat = jax.device_get(fwd(params, jnp.asarray(x[i : i + batch])))
    lat, val = metrics.sparse_codes(z)
    x_hats.append(x_hat)
    ids.append(lat)
    vals.append(val)
    bar.update(len(x_hat))
  bar.close()
  width = max(a.shape[1] for a in ids)
  pad = lambda a, v: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=v)
  return (
    np.concatenate(x_hats),
    np.concatenate([pad(a, -1) for a in ids]),
    np.concatenate([pad(a, 0) for a in vals]),
  )


def firing_frequency(latents_BxK, d_sae: int) -> np.ndarray:
  """Fraction of rows on which each latent is active."""
  lat = np.asarray(latents_BxK)
  return np.bincount(lat[lat >= 0], minlength=d_sae) / max(len(lat), 1)


def score(
  cfg, params, x_BxD, tokens_B=None, *, batch: int = 2048, codes=None, per_latent: bool = False
) -> dict:
  """Every score of this module for one SAE on held-out rows `x` (and their token ids);
  `codes`: the output of `sparse_codes` if already computed. `per_latent=True` adds each latent's
  activation count and token consistency (`latent_count`, `latent_token_consistency`, lists), for
  comparisons of two SAEs over a common latent set (`stats.common_set_means`)."""
  x = np.asarray(x_BxD, np.float32)
  x_hat, lat, val = codes if codes is not None else sparse_codes(cfg, params, x, batch=batch)
  typical = typical_rows(x)
  freq = firing_frequency(lat, cfg.d_sae)
  hist, _ = np.histogram(
    np.log10(np.maximum(freq[freq > 0], 10 ** FREQUENCY_BINS[0])), bins=FREQUENCY_BINS
  )
  out = {
    "rows": int(len(x)),
    "fvu": metrics.fvu(x, x_hat),
    "fvu_typical_rows": metrics.fvu(x[typical], x_hat[typical]),
    "massive_rows": int((~typical).sum()),
    "l0": float((lat >= 0).sum(1).mean()),
    "dead_frac": float(np.mean(freq == 0)),
    "dense_frac": float(np.mean(freq > DENSE_FREQUENCY)),
    "firing_frequency_hist": {
      "log10_edges": FREQUENCY_BINS.tolist(),
      "counts": hist.tolist(),
      "dead": int((freq == 0).sum()),
    },
  }
  if tokens_B is not None:
    stats = metrics.latent_token_stats(
      lat, val, np.asarray(tokens_B), cfg.d_sae, top_n=MIN_ACTIVATIONS
    )
    frequent = stats["count"] >= MIN_ACTIVATIONS
    out.update(
      {
        "token_consistency": float(np.nanmean(stats["consistency"][frequent]))
        if frequent.any()
        else float("nan"),
        "top20_token_entropy_bits": float(np.nanmean(stats["top_entropy"][frequent]))
        if frequent.any()
        else float("nan"),
        "latents_with_20_activations": int(frequent.sum()),
      }
    )
    if per_latent:
      out["latent_count"] = stats["count"].tolist()
      out["latent_token_consistency"] = np.nan_to_num(stats["consistency"]).tolist()
  return out
