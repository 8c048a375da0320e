"""Reproduces the paper's synthetic experiments (Fig. 2, Fig. 3), the α sweep and the proxy question.

    python experiments/synthetic.py            # full: n=200, n_p=20, d_sae=200, 5 seeds; ~15 min
    python experiments/synthetic.py --smoke    # tiny, seconds (CI runs this)
    python experiments/synthetic.py --arch topk  # the same with Top-k SAEs, k = ceil((1 - S) n)

Setting (PAPER.md §4): n = 200 true features, n_p = 20 observed dimensions, tied theory SAE with
d_sae = 200, trained with Adam; two superposition matrices:
  * "toy model": W_p of an Elhage et al. toy model trained at S = 0.9 (columns normalised);
  * "constructed": 6 planes of regular 32-gons plus 8 monosemantic dimensions (n = 200, n_p = 20),
    a geometry whose observed dimensions differ sharply in polysemanticity.
Every point is a mean over seeds with a standard-deviation error bar; all sweeps run as single
compiled programs (wsae_jax.training.sweep). Writes experiments/results/synthetic.json and synthetic.png.

Parts:
  1. Fig. 2: features per latent (each true feature shown alone) against S, plain SAE.
  2. Fig. 3: SAE vs WSAE (γ = Var^1) against S: L_GT after matching, per-dimension variance of the
     matched latents, x_p reconstruction MSE; with the closed form's L_GT and L_SAE alongside.
  3. α ∈ {0, 0.25, 0.5, 1, 2} at S = 0.9 with variance weights and with oracle weights. The oracle
     knows W_p: γ_i = PR_i^(−α), PR_i = (Σ_j W_ij²)² / Σ_j W_ij⁴ the effective number of features
     in dimension i (γ ≈ 1 on monosemantic dimensions, smaller on polysemantic ones, as the paper's
     weight-selection principle asks). The proxy question: Spearman correlation between Var(x_p,i)
     and PR_i.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
from scipy.stats import spearmanr

import wsae_jax as w
from wsae_jax.data import problems
from wsae_jax.evaluation import scoring
from wsae_jax.theory import closed_form as cf
from wsae_jax.training import sweep

OUT = pathlib.Path(__file__).parent / "results"
ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0)


def constructed_matrix() -> np.ndarray:
  return w.polygon_matrix(6, 32, n_mono=8)


participation_ratio = w.data.superposition.participation_ratio


def oracle_weights(W, alpha: float) -> np.ndarray:
  return w.training.gamma.make_gamma("oracle", alpha, W_p=W)


def summarise(rows, keys, group_by):
  out = []
  for g in dict.fromkeys(tuple(r[k] for k in group_by) for r in rows):
    sel = [r for r in rows if tuple(r[k] for k in group_by) == g]
    e = dict(zip(group_by, g))
    e["seeds"] = len(sel)
    for k in keys:
      v = np.asarray([r[k] for r in sel], np.float64)
      e[k], e[k + "_std"] = float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    out.append(e)
  return out


KEYS = (
  "l_gt",
  "mse",
  "latent_var",
  "features_per_latent",
  "mmcs",
  "l0",
  "shrinkage",
  "vanishing",
  "dead_frac",
)


def k_for(sparsity: float, n: int) -> int:
  """Top-k budget matched to the expected number of active features, (1 − S)·n."""
  return max(1, int(np.ceil((1.0 - sparsity) * n)))


def run_geometry(name, W, sparsities, seeds, tc, eval_samples, progress, arch="tied"):
  n_p, n = W.shape
  if arch == "topk":
    cfg = w.TopKSAEConfig(
      d_in=n_p,
      d_sae=n,
      k=max(k_for(S, n) for S in sparsities),
      dead_after_tokens=50 * tc.batch_size,
    )
  else:
    cfg = w.TiedSAEConfig(d_in=n_p, d_sae=n)
  extra = (lambda S: {"k": k_for(S, n)}) if arch == "topk" else (lambda S: {})
  problem = problems.SyntheticProblem(W)
  # Parts 1 + 2: S x seeds x {SAE, WSAE α=1}.
  members = [
    {"seed": s, "data_seed": s, "sparsity": S, "alpha": a, **extra(S)}
    for S in sparsities
    for s in seeds
    for a in (0.0, 1.0)
  ]
  res = sweep.train_sweep(cfg, tc, members, problem, progress=progress and f"{name}: S sweep")
  rows = [
    dict(r, model="WSAE" if r["alpha"] else "SAE")
    for r in scoring.score_sweep(res, problem, eval_samples=eval_samples)
  ]
  # Part 3: α sweep with variance and oracle weights at S = 0.9.
  S3 = 0.9
  members3 = [
    {"seed": s, "data_seed": s, "sparsity": S3, "alpha": a, **extra(S3)}
    for a in ALPHAS
    for s in seeds
  ]
  members3 += [
    {"seed": s, "data_seed": s, "sparsity": S3, "gamma": oracle_weights(W, a), **extra(S3)}
    for a in ALPHAS
    for s in seeds
  ]
  res3 = sweep.train_sweep(cfg, tc, members3, problem, progress=progress and f"{name}: α sweep")
  rows3 = []
  for m, r in zip(members3, scoring.score_sweep(res3, problem, eval_samples=eval_samples)):
    weighting = "variance" if "alpha" in m else "oracle"
    alpha = (
      m["alpha"]
      if "alpha" in m
      else ALPHAS[[np.allclose(m["gamma"], oracle_weights(W, a)) for a in ALPHAS].index(True)]
    )
    rows3.append(dict(r, weighting=weighting, alpha=alpha))
  # Closed form on the same sparsities (it does not depend on γ).
  grid = cf.solve_grid(W, sparsities, num_samples=eval_samples)
  x_p = np.asarray(w.SyntheticSource(W, S3, 1, seed=0).sample(2**30, eval_samples)[1])
  var = np.var(x_p, axis=0)
  pr = participation_ratio(W)
  rho = spearmanr(var, pr)
  return {
    "n_p": n_p,
    "n": n,
    "train_seconds": res.seconds + res3.seconds,
    "diverged": {
      **{f"S:{k}": v for k, v in res.diverged.items()},
      **{f"alpha:{k}": v for k, v in res3.diverged.items()},
    },
    "by_sparsity": summarise(rows, KEYS, ("sparsity", "model")),
    "alpha_sweep": summarise(rows3, KEYS, ("weighting", "alpha")),
    "closed_form": {
      "sparsity": list(map(float, sparsities)),
      "l_gt": grid.l_gt[0].tolist(),
      "l_sae": grid.l_wsae[0, :, 0].tolist(),
    },
    "proxy": {
      "variance": var.tolist(),
      "participation_ratio": pr.tolist(),
      "spearman_rho": float(rho.statistic),
      "spearman_p": float(rho.pvalue),
    },
    "rows": rows,
    "alpha_rows": rows3,
  }


def plot(result, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  geos = list(result["geometries"])
  fig, axes = plt.subplots(len(geos), 5, figsize=(21, 3.8 * len(geos)), squeeze=False)
  for row, g in zip(axes, geos):
    R = result["geometries"][g]
    bs = R["by_sparsity"]
    ss = sorted({e["sparsity"] for e in bs})
    xs = np.arange(len(ss))

    def series(ax, key, model, **kw):
      es = sorted([e for e in bs if e["model"] == model], key=lambda e: e["sparsity"])
      ax.errorbar(
        xs,
        [e[key] for e in es],
        yerr=[e[key + "_std"] for e in es],
        marker="o",
        ms=3,
        capsize=3,
        **kw,
      )

    ax = row[0]
    series(ax, "features_per_latent", "SAE", color="tab:blue", label="SAE")
    ax.set_title(f"{g}: Fig. 2, features per latent")
    ax.set_ylabel("true features activating a latent")
    for ax, key, title in (
      (row[1], "l_gt", "L_GT (after matching)"),
      (row[2], "latent_var", "per-dim variance of recovered features"),
      (row[3], "mse", "x_p reconstruction (MSE)"),
    ):
      series(ax, key, "SAE", color="tab:blue", label="SAE")
      series(ax, key, "WSAE", color="tab:orange", label="WSAE (α=1)")
      cf_key = {"l_gt": "l_gt", "mse": "l_sae"}.get(key)
      if cf_key:
        ax.plot(xs, R["closed_form"][cf_key], "k:x", label="closed form")
      ax.set_title(f"{g}: {title}")
    for ax in row[:4]:
      ax.set_xticks(xs, [str(s) for s in ss])
      ax.set_xlabel("sparsity S")
      ax.set_ylim(bottom=0)
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    ax = row[4]
    for weighting, colour in (("variance", "tab:orange"), ("oracle", "tab:green")):
      es = sorted(
        [e for e in R["alpha_sweep"] if e["weighting"] == weighting], key=lambda e: e["alpha"]
      )
      ax.errorbar(
        [e["alpha"] for e in es],
        [e["l_gt"] for e in es],
        yerr=[e["l_gt_std"] for e in es],
        marker="o",
        ms=3,
        capsize=3,
        color=colour,
        label=f"{weighting} weights",
      )
    ax.set_title(f"{g}: α sweep at S=0.9 (ρ(Var, PR)={R['proxy']['spearman_rho']:.2f})")
    ax.set_xlabel("α")
    ax.set_ylabel("L_GT")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny version for CI")
  p.add_argument("--out", default=str(OUT))
  p.add_argument("--no-progress", action="store_true")
  p.add_argument(
    "--arch",
    choices=("tied", "topk"),
    default="tied",
    help="tied: the theory SAE (no sparsity term); topk: Top-k with k = ceil((1-S) n)",
  )
  a = p.parse_args(argv)
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  if a.smoke:
    geos = {"constructed": w.polygon_matrix(2, 8, n_mono=2)}
    sparsities, seeds, eval_samples = (0.7, 0.99), (0, 1), 1024
    tc = w.TrainConfig(steps=20, batch_size=128, learning_rate=3e-3, warmup_steps=5, log_every=10)
  else:
    geos = {
      "toy model": w.toy_model_matrix(jax.random.key(0), 200, 20, 0.9, steps=5000),
      "constructed": constructed_matrix(),
    }
    sparsities, seeds, eval_samples = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99), tuple(range(5)), 16384
    tc = w.TrainConfig(
      steps=3000,
      batch_size=1024,
      learning_rate=2e-3,
      warmup_steps=100,
      decay_fraction=0.2,
      log_every=250,
    )
  result = {
    "arch": a.arch,
    "train_config": dataclasses.asdict(tc),
    "seeds": list(seeds),
    "geometries": {},
  }
  for name, W in geos.items():
    result["geometries"][name] = run_geometry(
      name, W, sparsities, seeds, tc, eval_samples, not a.no_progress, arch=a.arch
    )
  result["seconds"] = time.perf_counter() - t0
  stem = "synthetic" if a.arch == "tied" else f"synthetic_{a.arch}"
  (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=float))
  plot(result, out / f"{stem}.png")
  for g, R in result["geometries"].items():
    print(
      f"\n== {g} (n={R['n']}, n_p={R['n_p']}); Spearman ρ(Var, PR) = "
      f"{R['proxy']['spearman_rho']:.3f}"
    )
    print(f"{'S':>5} {'model':>5} {'feat/lat':>9} {'L_GT':>14} {'latent var':>18} {'MSE':>16}")
    for e in sorted(R["by_sparsity"], key=lambda e: (e["sparsity"], e["model"])):
      print(
        f"{e['sparsity']:>5} {e['model']:>5} {e['features_per_latent']:>9.2f} "
        f"{e['l_gt']:>7.3f}±{e['l_gt_std']:<6.3f} {e['latent_var']:>9.5f}±{e['latent_var_std']:<8.5f} "
        f"{e['mse']:>8.4f}±{e['mse_std']:<7.4f}"
      )
    print(f"{'weights':>9} {'α':>5} {'L_GT':>14} {'MSE':>16}")
    for e in sorted(R["alpha_sweep"], key=lambda e: (e["weighting"], e["alpha"])):
      print(
        f"{e['weighting']:>9} {e['alpha']:>5} {e['l_gt']:>7.3f}±{e['l_gt_std']:<6.3f} "
        f"{e['mse']:>8.4f}±{e['mse_std']:<7.4f}"
      )
  print(
    f"\nwrote {out / (stem + '.json')} and {out / (stem + '.png')} in {result['seconds']:.0f} s"
  )


if __name__ == "__main__":
  main()
