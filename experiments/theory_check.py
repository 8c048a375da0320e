"""Checks the paper's closed-form theory against gradient-trained tied SAEs; writes JSON + PNG.

    python experiments/theory_check.py                 # full run, about 6 minutes on 2 CPU cores
    python experiments/theory_check.py --smoke         # seconds: tiny steps, for CI

Parts (numbers land in experiments/results/theory_check.json; experiments/THEORY.md discusses them):
  1. Example 1 of the paper, exactly.
  2. The Thm 4/5 identities on random W_p and Γ in float64.
  3. Closed form vs. training for digons, triangles, squares, pentagons and a toy-model W_p, over
     sparsities 0.5…0.999 and d_sae ∈ {n, 2n}, from random inits (2 seeds) and from the closed form:
     L_SAE at the closed form vs after training, Hungarian match of the trained encoder to the
     closed form, the gradient norm at the closed form, and a verdict.
  4. Shrinking and vanishing: closed-form per-feature predictions against a trained SAE on the same
     data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import wsae_jax as w
from wsae_jax.data import problems
from wsae_jax.evaluation import metrics
from wsae_jax.theory import closed_form as cf
from wsae_jax.training import sweep

OUT = pathlib.Path(__file__).parent / "results"


def geometries(smoke: bool) -> dict[str, np.ndarray]:
  planes = 2 if smoke else 4
  geo = {
    "digons": w.polygon_matrix(planes, 2),
    "triangles": w.polygon_matrix(planes, 3),
    "squares": w.polygon_matrix(planes, 4),
    "pentagons": w.polygon_matrix(planes, 5),
  }
  geo["toy model"] = w.toy_model_matrix(
    jax.random.key(0), 2 * planes * 2 + 4, 2 * planes, 0.9, steps=200 if smoke else 4000
  )
  return geo


def part1_example():
  x = np.array([[0.5, 1.0, 0.8]])
  W = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
  with jax.enable_x64(True):
    x_m = np.asarray(cf.recover(jnp.asarray(W), jnp.asarray(x)))[0]
  return {
    "x": x[0].tolist(),
    "x_p": (x @ W.T)[0].tolist(),
    "x_m": x_m.tolist(),
    "matches_paper": bool(np.allclose(x_m, [0.5, 0.2, 0.0], atol=1e-15)),
  }


def part2_identities(trials: int):
  rng = np.random.default_rng(0)
  worst = 0.0
  with jax.enable_x64(True):
    for t in range(trials):
      n_p, n = int(rng.integers(2, 20)), int(rng.integers(4, 60))
      W = jnp.asarray(rng.standard_normal((n_p, n)))
      x = w.sample_features(
        jax.random.key(t), 2000, n, float(rng.uniform(0.3, 0.99)), dtype=jnp.float64
      )
      for gamma in (None, jnp.asarray(rng.uniform(0.05, 3.0, n_p))):
        o = cf.loss_terms(W, x, gamma)
        worst = max(worst, abs(float(o["gap"] - o["predicted_gap"])) / max(float(o["l_gt"]), 1e-30))
  return {"trials": trials, "max_relative_error": worst}


def part3_training(geo, sparsities, tc, seeds, eval_samples):
  rows = []
  for name, W in geo.items():
    n_p, n = W.shape
    x_eval_cache = {}
    for mult in (1, 2):
      d_sae = n * mult
      cfg = w.TiedSAEConfig(d_in=n_p, d_sae=d_sae)
      members, inits = [], []
      for s in sparsities:
        for seed in seeds:
          members.append({"seed": seed, "sparsity": s})
          inits.append(np.asarray(w.models.init(cfg, jax.random.key(seed))["W_enc"]))
        members.append({"seed": 0, "sparsity": s})
        inits.append(np.asarray(cf.optimal_encoder(W, d_sae)))
      res = sweep.train_sweep(
        cfg,
        tc,
        members,
        problems.SyntheticProblem(W),
        progress=False,
        initial_params={"W_enc": np.stack(inits)},
      )
      for i, m in enumerate(members):
        s = m["sparsity"]
        if s not in x_eval_cache:
          x_eval_cache[s] = np.asarray(w.sample_features(jax.random.key(12345), eval_samples, n, s))
        x = x_eval_cache[s]
        c = cf.compare(cfg, res.params(i), W, x)
        init = (
          "closed form" if (i % (len(seeds) + 1)) == len(seeds) else f"random (seed {m['seed']})"
        )
        rows.append(
          {
            "geometry": name,
            "d_sae": d_sae,
            "n": n,
            "sparsity": s,
            "init": init,
            "l_sae_closed_form": c["closed_form"]["l_sae"],
            "l_sae_trained": c["trained"]["l_sae"],
            "l_gt_closed_form": c["closed_form"]["l_gt"],
            "l_gt_trained": c["trained"]["l_gt"],
            "match_cos": c["mean_encoder_cos"],
            "verdict": c["verdict"],
            "grad_norm_at_closed_form": cf.gradient_at_closed_form(W, x, d_sae=d_sae),
            "nonpositive_interference": cf.interference_summary(W)["nonpositive"],
            "diverged": i in res.diverged,
          }
        )
  return rows


def part4_shrinkage(tc, eval_samples):
  W = w.polygon_matrix(4, 3, n_mono=4)  # triangles + monosemantic dims
  n_p, n = W.shape
  S = 0.9
  d = cf.diagnose(W, S, d_sae=n, num_samples=200_000)
  cfg = w.TiedSAEConfig(d_in=n_p, d_sae=n)
  res = sweep.train_sweep(
    cfg,
    tc,
    [{"seed": 0, "sparsity": S}, {"seed": 1, "sparsity": S}],
    problems.SyntheticProblem(W),
    progress=False,
    initial_params={
      "W_enc": np.stack(
        [
          np.asarray(cf.optimal_encoder(W, n)),
          np.asarray(w.models.init(cfg, jax.random.key(1))["W_enc"]),
        ]
      )
    },
  )
  x = np.asarray(w.sample_features(jax.random.key(999), eval_samples, n, S))
  out = {
    "predicted_shrinkage": d["shrinkage"].tolist(),
    "predicted_vanishing": d["vanishing"].tolist(),
  }
  for i, label in enumerate(("from closed form", "from random init")):
    p = res.params(i)
    z = np.asarray(w.encode(cfg, {k: jnp.asarray(v) for k, v in p.items()}, x @ W.T))
    m = metrics.match_latents(p["W_enc"].T, W)
    shrink, vanish = metrics.shrinkage_vanishing(x, metrics.matched_latents(z, m))
    out[f"trained_shrinkage ({label})"] = shrink.tolist()
    out[f"trained_vanishing ({label})"] = vanish.tolist()
  return out


def plot(rows, shrink, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  geos = list(dict.fromkeys(r["geometry"] for r in rows))
  fig, axes = plt.subplots(2, len(geos) + 1, figsize=(3.6 * (len(geos) + 1), 7))
  for j, g in enumerate(geos):
    ax = axes[0, j]
    for d_mult, ls in ((1, "-"), (2, "--")):
      sel = [r for r in rows if r["geometry"] == g and r["d_sae"] == r["n"] * d_mult]
      ss = sorted({r["sparsity"] for r in sel})
      cfl = [np.mean([r["l_sae_closed_form"] for r in sel if r["sparsity"] == s]) for s in ss]
      for init, colour in (("random", "tab:blue"), ("closed form", "tab:orange")):
        vals = [
          [r["l_sae_trained"] for r in sel if r["sparsity"] == s and r["init"].startswith(init)]
          for s in ss
        ]
        ax.errorbar(
          range(len(ss)),
          [np.mean(v) for v in vals],
          yerr=[np.std(v) for v in vals],
          ls=ls,
          marker="o",
          ms=3,
          color=colour,
          capsize=2,
          label=f"trained, {init} init, d_sae={d_mult}n" if j == 0 else None,
        )
      ax.plot(
        range(len(ss)),
        cfl,
        ls=ls,
        color="k",
        marker="x",
        label=f"closed form, d_sae={d_mult}n" if j == 0 else None,
      )
      ax.set_xticks(range(len(ss)), [str(s) for s in ss], rotation=45, fontsize=7)
    ax.set_title(g)
    ax.set_xlabel("sparsity S")
    ax.set_ylabel("L_SAE (held out)")
    ax.set_ylim(bottom=0)
    ax = axes[1, j]
    for d_mult, marker in ((1, "o"), (2, "s")):
      sel = [
        r
        for r in rows
        if r["geometry"] == g and r["d_sae"] == r["n"] * d_mult and r["init"].startswith("random")
      ]
      ax.scatter(
        [r["sparsity"] for r in sel],
        [r["match_cos"] for r in sel],
        marker=marker,
        s=14,
        label=f"d_sae={d_mult}n",
      )
    ax.set_ylim(0, 1.02)
    ax.set_xscale("logit")
    ax.set_xlabel("sparsity S")
    ax.set_ylabel("match |cos| to closed form")
    ax.legend(fontsize=7)
  axes[0, 0].legend(fontsize=6)
  ax = axes[0, -1]
  pred = np.asarray(shrink["predicted_shrinkage"])
  for key, colour in (
    ("trained_shrinkage (from closed form)", "tab:orange"),
    ("trained_shrinkage (from random init)", "tab:blue"),
  ):
    ax.scatter(pred, shrink[key], s=16, color=colour, label=key.split("(")[1][:-1])
  ax.plot([0, 1.05], [0, 1.05], "k:", lw=1)
  ax.set_xlim(0, 1.05)
  ax.set_ylim(0, None)
  ax.set_xlabel("closed-form shrinkage E[x_m/x | x>0]")
  ax.set_ylabel("trained SAE shrinkage")
  ax.set_title("shrinking, triangles+mono, S=0.9")
  ax.legend(fontsize=7)
  ax = axes[1, -1]
  pv = np.asarray(shrink["predicted_vanishing"])
  for key, colour in (
    ("trained_vanishing (from closed form)", "tab:orange"),
    ("trained_vanishing (from random init)", "tab:blue"),
  ):
    ax.scatter(pv, shrink[key], s=16, color=colour)
  ax.plot([0, 1], [0, 1], "k:", lw=1)
  ax.set_xlim(0, max(0.05, pv.max() * 1.2))
  ax.set_ylim(0, None)
  ax.set_xlabel("closed-form P(x_m = 0 | x > 0)")
  ax.set_ylabel("trained SAE vanishing")
  ax.set_title("vanishing")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny version (seconds), as CI runs it")
  p.add_argument("--out", default=str(OUT))
  a = p.parse_args(argv)
  out = pathlib.Path(a.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  if a.smoke:
    sparsities, seeds, eval_samples, trials = [0.5, 0.99], [0], 2048, 5
    tc = w.TrainConfig(steps=30, batch_size=256, learning_rate=3e-3, warmup_steps=5, log_every=10)
  else:
    sparsities, seeds, eval_samples, trials = [0.5, 0.7, 0.9, 0.99, 0.999], [0, 1], 65536, 200
    tc = w.TrainConfig(
      steps=4000,
      batch_size=1024,
      learning_rate=3e-3,
      warmup_steps=100,
      decay_fraction=0.3,
      log_every=200,
    )
  result = {"example_1": part1_example(), "identities": part2_identities(trials)}
  print("example 1:", result["example_1"])
  print("identities:", result["identities"])
  rows = part3_training(geometries(a.smoke), sparsities, tc, seeds, eval_samples)
  result["training"] = rows
  result["shrinkage"] = part4_shrinkage(tc, eval_samples)
  result["train_config"] = dataclasses.asdict(tc)
  result["seconds"] = time.perf_counter() - t0
  (out / "theory_check.json").write_text(json.dumps(result, indent=2))
  plot(rows, result["shrinkage"], out / "theory_check.png")
  print(
    f"{'geometry':>10} {'d_sae':>5} {'S':>6} {'init':>16} {'L_SAE cf':>9} {'L_SAE tr':>9} "
    f"{'match':>6}  verdict"
  )
  for r in rows:
    print(
      f"{r['geometry']:>10} {r['d_sae']:>5} {r['sparsity']:>6} {r['init']:>16} "
      f"{r['l_sae_closed_form']:>9.3g} {r['l_sae_trained']:>9.3g} {r['match_cos']:>6.3f}  "
      f"{r['verdict']}"
    )
  print(
    f"wrote {out / 'theory_check.json'} and {out / 'theory_check.png'} in {result['seconds']:.0f} s"
  )


if __name__ == "__main__":
  sys.exit(main())
