"""The compiled closed-form grid against a straightforward numpy loop, measured in one run.

    python benchmarks/bench_closed_form.py            # 5 geometries x 10 sparsities x 10 alphas
                                                      # = 500 configurations x 100k samples
    python benchmarks/bench_closed_form.py --smoke    # tiny grid, seconds

The baseline is what a researcher would write first: for each configuration, draw that
configuration's own samples with numpy's default Generator (mask and magnitude drawn separately),
compute x_m = ReLU(x W_pᵀ W_p), the weighted loss, L_GT, the Thm 4/5 predicted gap, shrinkage and
vanishing. Both produce the same quantities; the JSON records the largest disagreement (the two
use different random samples, so they agree to Monte-Carlo error, which is also recorded).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import common  # noqa: E402

from wsae_jax.data import superposition as sp
from wsae_jax.theory import closed_form  # noqa: E402


def geometries(n_p: int, n: int) -> np.ndarray:
  """Five equally shaped W_p (n_p, n): digons, triangles, squares, pentagons, random directions."""
  out = []
  for k in (2, 3, 4, 5):
    planes = min(n_p // 2, n // k)
    mono = min(n_p - 2 * planes, n - k * planes)
    W = np.zeros((n_p, n), np.float32)
    Wk = sp.polygon_matrix(planes, k, n_mono=mono)
    W[: Wk.shape[0], : Wk.shape[1]] = Wk
    rest = n - Wk.shape[1]  # leftover features: random unit directions
    if rest:
      W[:, Wk.shape[1] :] = np.asarray(sp.random_matrix(jax.random.key(k), n_p, rest))
    out.append(W)
  out.append(np.asarray(sp.random_matrix(jax.random.key(0), n_p, n)))
  return np.stack(out)


def numpy_one(W, s, gamma, num_samples, rng):
  """One configuration, the obvious way."""
  n = W.shape[1]
  mask = rng.random((num_samples, n)) >= s
  x = np.where(mask, rng.random((num_samples, n)), 0.0)
  G = W.T @ W
  x_m = np.maximum(x @ G, 0.0)
  e = x - x_m
  g2 = gamma**2
  l_wsae = np.mean(np.sum(g2 * (e @ W.T) ** 2, axis=1))
  l_gt = np.mean(np.sum(e * e, axis=1))
  M = W.T @ (g2[:, None] * W) - np.eye(n)
  pred = np.mean(np.sum((e @ M) * e, axis=1))
  active = x > 0
  cnt = active.sum(0)
  shrink = np.where(active, x_m / np.where(active, x, 1.0), 0.0).sum(0) / cnt
  vanish = (active & (x_m == 0)).sum(0) / cnt
  return l_wsae, l_gt, pred, shrink, vanish


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--n-p", type=int, default=20)
  p.add_argument("--n", type=int, default=40)
  p.add_argument("--sparsities", type=int, default=10)
  p.add_argument("--alphas", type=int, default=10)
  p.add_argument("--samples", type=int, default=100_000)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default="benchmarks/results/closed_form.json")
  a = p.parse_args(argv)
  if a.smoke:
    a.sparsities, a.alphas, a.samples = 3, 2, 8192
  W = geometries(a.n_p, a.n)
  sparsities = np.linspace(0.5, 0.99, a.sparsities)
  alphas = np.linspace(0.0, 2.0, a.alphas)
  configs = W.shape[0] * len(sparsities) * len(alphas)

  t0 = time.perf_counter()
  res = closed_form.solve_grid(W, sparsities, alphas=alphas, num_samples=a.samples)
  first_s = time.perf_counter() - t0  # compile + run
  keys = iter(range(1, 10**6))
  jax_s = common.timeit(
    lambda: closed_form.solve_grid(
      W, sparsities, alphas=alphas, num_samples=a.samples, key=jax.random.key(next(keys))
    ),
    repeats=3,
    min_seconds=1.0,
  )

  rng = np.random.default_rng(0)
  t0 = time.perf_counter()
  worst = 0.0
  for g in range(W.shape[0]):
    Wg = W[g].astype(np.float64)
    for i, s in enumerate(sparsities):
      for k, alpha in enumerate(alphas):
        gamma = np.asarray(closed_form.model_variance_weights(Wg, alpha), np.float64)
        l_wsae, l_gt, pred, _, _ = numpy_one(Wg, s, gamma, a.samples, rng)
        worst = max(worst, abs(l_wsae - res.l_wsae[g, i, k]) / max(l_wsae, 1e-12))
  numpy_s = time.perf_counter() - t0

  speedup = numpy_s / jax_s
  record = {
    "machine": common.machine(),
    "configurations": configs,
    "samples": res.num_samples,
    "grid": {
      "geometries": int(W.shape[0]),
      "sparsities": len(sparsities),
      "alphas": len(alphas),
      "n_p": a.n_p,
      "n": a.n,
    },
    "jax_first_call_s": first_s,
    "jax_s": jax_s,
    "numpy_loop_s": numpy_s,
    "speedup": speedup,
    "max_rel_diff_l_wsae_vs_numpy": worst,
    "max_abs_identity_error": float(np.max(np.abs(res.gap - res.predicted_gap))),
    "command": " ".join(sys.argv),
  }
  print(
    f"{configs} configurations x {res.num_samples} samples: jax grid {jax_s:.3f} s "
    f"(first call incl. compile {first_s:.2f} s), numpy loop {numpy_s:.2f} s -> "
    f"{speedup:.1f}x; max rel. difference of L_WSAE {worst:.2e} (independent samples)"
  )
  common.write_json(a.out, record)


if __name__ == "__main__":
  main()
