"""The paper's labelled-feature arm at small scale (issue #12): γ from semantic consistency.

    python experiments/weights_digits.py           # ~3 min on 2 CPU cores
    python experiments/weights_digits.py --smoke

The paper trains SAEs on a ResNet-18's features of ImageNet-100 and weights each input dimension
by its semantic consistency (how often the samples that activate it share one label); that cannot
run here. Its small version: scikit-learn's bundled digits (1,797 8×8 images, 10 classes, offline;
the `study` extra), a one-hidden-layer ReLU network (64 → `--hidden` → 10) trained on 1,200 of
them, and Top-k SAEs (`--width`× the hidden width, k = `--k`; the recipe of `wsae train
--activations`: AuxK on latents dead for 5% of the run, b_dec at the geometric median) on its
non-negative hidden features (dead units dropped, scaled to E‖f‖ = √d), plain and weighted, all members of one compiled sweep (same batches; seed = initialisation, so
each weighted SAE is paired with the plain SAE of its seed). Weightings: semantic consistency
(`consistency_weights`, γ = c^α, from the training images' labels), and two label-free ones for
comparison: zero-fraction (ReLU features have exact zeros, so the paper's data model applies) and
variance (the paper's proxy). Scored on the 597 held-out images: the mean semantic consistency of
the SAE's latents (the paper's metric), the accuracy of a 10-class probe (one-vs-rest logistic) on
the latents, FVU, dead fraction. The latents' consistency is compared on a common-size set: per
seed pair, each SAE's n most frequently firing latents, n the smaller count of latents firing on at
least `--min-fires` test images (`stats.common_set_means`), so a weighting that keeps more rare
latents alive is not scored over a different set. Paired differences against the plain SAE over
`--seeds` seeds: the median with its order-statistic interval, exact sign tests,
Benjamini–Hochberg across every weighting × metric; the primary reading (fixed before the
numbers) is consistency γ at α = 1 lifting the latents' consistency, Holm-adjusted alone.
Writes weights_digits.json and weights_digits.png.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
import warnings

import numpy as np

import wsae_jax as w
from wsae_jax.evaluation import probing, stats
from wsae_jax.objectives import weights
from wsae_jax.training import sweep

HERE = pathlib.Path(__file__).resolve().parent
METRICS = ("consistency", "probe_accuracy", "fvu", "dead_frac")
CLAIMS = {"consistency": "higher", "probe_accuracy": "higher", "fvu": "non-inferior"}
PRIMARY = ("consistency α=1", "consistency")
FVU_MARGIN = 0.10  # non-inferiority: FVU at most 10% of the plain SAE's above it


def parse(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--out", default=str(HERE / "results"))
  p.add_argument("--hidden", type=int, default=32)
  p.add_argument("--width", type=int, default=4)
  p.add_argument("--k", type=int, default=4)
  p.add_argument("--seeds", type=int, default=10)
  p.add_argument(
    "--min-fires",
    type=int,
    default=10,
    help="a latent counts for the consistency when it fires on this many test images",
  )
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--net-steps", type=int, default=600)
  p.add_argument("--alphas", type=lambda s: [float(t) for t in s.split(",")], default=[0.5, 1.0])
  p.add_argument("--smoke", action="store_true", help="tiny CI version")
  p.add_argument("--no-progress", action="store_true")
  args = p.parse_args(argv)
  if args.smoke:
    args.seeds, args.steps, args.net_steps, args.alphas = 2, 60, 60, [1.0]
  return args


def digits(seed: int = 0, n_train: int = 1200):
  from sklearn.datasets import load_digits  # the `study` extra; the data ship inside the wheel

  X, y = load_digits(return_X_y=True)
  order = np.random.default_rng(seed).permutation(len(y))
  X = (X / 16.0).astype(np.float32)
  tr, te = order[:n_train], order[n_train:]
  return X[tr], y[tr], X[te], y[te]


def train_network(X, y, hidden: int, steps: int, seed: int = 0):
  """64 → hidden (ReLU) → 10, full-batch Adam; returns the hidden layer as a function."""
  import jax
  import jax.numpy as jnp
  import optax

  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {
    "W1": jax.random.normal(k1, (X.shape[1], hidden)) / np.sqrt(X.shape[1]),
    "b1": jnp.zeros(hidden),
    "W2": jax.random.normal(k2, (hidden, 10)) / np.sqrt(hidden),
    "b2": jnp.zeros(10),
  }
  hid = lambda p, x: jax.nn.relu(x @ p["W1"] + p["b1"])
  onehot = jax.nn.one_hot(y, 10)

  def loss(p):
    logits = hid(p, X) @ p["W2"] + p["b2"]
    return optax.softmax_cross_entropy(logits, onehot).mean() + 1e-4 * jnp.sum(p["W1"] ** 2)

  opt = optax.adam(1e-2)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s)
    return optax.apply_updates(p, u), s

  for _ in range(steps):
    params, state = step(params, state)
  acc = lambda Xe, ye: float(
    np.mean(np.argmax(np.asarray(hid(params, Xe) @ params["W2"] + params["b2"]), 1) == ye)
  )
  return (lambda Xe: np.asarray(hid(params, jnp.asarray(Xe)))), acc


def probe_accuracy(z_fit, y_fit, z_test, y_test) -> float:
  """A 10-class probe: one-vs-rest logistic regressions, the largest logit wins."""
  logits = []
  for c in range(10):
    wc, bc = probing.logistic_fit(z_fit, y_fit == c)
    logits.append(np.asarray(z_test, np.float64) @ wc + bc)
  return float(np.mean(np.argmax(np.stack(logits, 1), 1) == y_test))


def gammas(F, y, alphas):
  out = {"sae": None}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # reported in the JSON instead
    for a in alphas:
      out[f"consistency α={a:g}"] = weights.consistency_weights(F, y, a)
      out[f"zero-fraction α={a:g}"] = weights.weights_from_polysemanticity(
        weights.zero_fraction_polysemanticity(F), a
      )
      out[f"variance α={a:g}"] = weights.variance_weights(F, a)
  return out


def main(argv=None):
  args = parse(argv)
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  Xtr, ytr, Xte, yte = digits()
  hidden, net_acc = train_network(Xtr, ytr, args.hidden, args.net_steps)
  Ftr, Fte = hidden(Xtr), hidden(Xte)
  live = Ftr.std(axis=0) > 0  # dead ReLU units carry nothing (and variance γ refuses them)
  Ftr, Fte = Ftr[:, live], Fte[:, live]
  d = int(live.sum())
  scale = float(np.mean(np.linalg.norm(Ftr, axis=1)) / np.sqrt(d))
  Ftr, Fte = Ftr / scale, Fte / scale  # E‖f‖ = √d, as `normalize=True` does
  per_dim, feat_consistency = weights.semantic_consistency(Fte, yte)
  G = gammas(Ftr, ytr, args.alphas)
  names = list(G)
  # The recipe of `wsae train --activations` (REAL.md): dead after 5% of the run's samples, so
  # that AuxK revives them, and b_dec at the geometric median.
  cfg = w.TopKSAEConfig(d_in=d, d_sae=args.width * d, k=args.k)  # dead window: the default
  tc = w.TrainConfig(
    steps=args.steps,
    batch_size=256,
    learning_rate=3e-3,
    warmup_steps=min(100, args.steps // 10),
    log_every=max(1, args.steps // 10),
  )
  members = [
    {"seed": s, **({} if G[n] is None else {"gamma": G[n]})}
    for s in range(args.seeds)
    for n in names
  ]
  res = sweep.train_sweep(cfg, tc, members, Ftr, progress=not args.no_progress)
  rows = []
  for i, m in enumerate(members):
    p = res.params(i)
    z_tr = np.asarray(w.models.encode(cfg, p, Ftr))
    z_te, x_hat = (np.asarray(a) for a in w.models.forward(cfg, p, Fte))
    alive = (z_te > 0).any(0)
    per_latent, _ = (
      weights.semantic_consistency(z_te, yte)
      if alive.any()
      else (np.full(z_te.shape[1], np.nan), None)
    )
    rows.append(
      {
        "weighting": names[i % len(names)],
        "seed": m["seed"],
        "consistency_per_latent": np.nan_to_num(per_latent).tolist(),
        "fires_per_latent": (z_te > 0).sum(0).tolist(),
        "probe_accuracy": probe_accuracy(z_tr, ytr, z_te, yte),
        "fvu": w.evaluation.metrics.fvu(Fte, x_hat),
        "dead_frac": float(1.0 - alive.mean()),
      }
    )
  paired = pair_up(rows, names, G, args.min_fires)
  result = {
    "command": " ".join([pathlib.Path(sys.argv[0]).name] + list(argv or sys.argv[1:])),
    "network": {
      "hidden": args.hidden,
      "live_hidden_units": d,
      "train_images": int(len(ytr)),
      "test_images": int(len(yte)),
      "test_accuracy": net_acc(Xte, yte),
      "feature_consistency": feat_consistency,
      "feature_consistency_per_dim": per_dim.tolist(),
      "raw_probe_accuracy": probe_accuracy(Ftr, ytr, Fte, yte),
    },
    "sae": cfg.to_dict(),
    "steps": args.steps,
    "seeds": args.seeds,
    "rows": rows,
    "paired": paired,
    "seconds": time.perf_counter() - t0,
  }
  (out_dir / "weights_digits.json").write_text(json.dumps(result, indent=2, default=float))
  plot(paired, out_dir / "weights_digits.png")
  n = result["network"]
  print(
    f"network: test accuracy {n['test_accuracy']:.3f}; hidden features: consistency "
    f"{n['feature_consistency']:.3f}, probe accuracy {n['raw_probe_accuracy']:.3f}"
  )
  for e in paired:
    print(
      f"{e['weighting']:>22}: "
      + "; ".join(
        f"{m} {e[m]['weighted']:.3f} vs {e[m]['plain']:.3f} (Δ {e[m]['median']:+.3f} "
        f"[{e[m]['lo']:+.3f}, {e[m]['hi']:+.3f}]{' ' + e[m]['verdict'] if 'verdict' in e[m] else ''})"
        for m in METRICS[:3]
      )
    )
  print(
    f"wrote {out_dir / 'weights_digits.json'} and {out_dir / 'weights_digits.png'} "
    f"({result['seconds']:.0f} s)"
  )
  return result


def pair_up(rows, names, G, min_fires: int) -> list[dict]:
  """Per weighting and metric: paired differences against the plain SAE, intervals, adjusted
  p-values and verdicts (module docstring)."""
  plain = {r["seed"]: r for r in rows if r["weighting"] == "sae"}
  paired, readings = [], []
  for n in names[1:]:
    mine = {r["seed"]: r for r in rows if r["weighting"] == n}
    entry = {"weighting": n, "gamma_report": weights.gamma_report(G[n]).summary()}
    for met in METRICS:
      if met == "consistency":
        trip = [
          stats.common_set_means(
            mine[s]["consistency_per_latent"],
            mine[s]["fires_per_latent"],
            plain[s]["consistency_per_latent"],
            plain[s]["fires_per_latent"],
            min_count=min_fires,
          )
          for s in sorted(plain)
        ]
        a, b = [t[0] for t in trip], [t[1] for t in trip]
        extra = {"common_latents": [t[2] for t in trip], "min_fires": min_fires}
      else:
        a = [mine[s][met] for s in sorted(plain)]
        b = [plain[s][met] for s in sorted(plain)]
        extra = {}
      d = np.subtract(a, b)
      ci = stats.paired_interval(d)
      entry[met] = {
        **ci.as_dict(),
        "plain": float(np.nanmedian(b)),
        "weighted": float(np.nanmedian(a)),
        **extra,
      }
      if met in CLAIMS:
        if CLAIMS[met] == "non-inferior":
          entry[met]["margin"] = FVU_MARGIN * abs(entry[met]["plain"])
          entry[met]["p"] = stats.sign_test(d, margin=entry[met]["margin"], alternative="less")
        else:
          entry[met]["p"] = ci.p_value
        entry[met]["primary"] = (n, met) == PRIMARY
        readings.append((entry, met))
    paired.append(entry)
  prim = [(e, m) for e, m in readings if e[m]["primary"]]
  rest = [(e, m) for e, m in readings if not e[m]["primary"]]
  for group, adjust, name in (
    (prim, stats.holm, "Holm (primary)"),
    (rest, stats.benjamini_hochberg, "Benjamini–Hochberg"),
  ):
    for (e, m), q in zip(group, adjust([e[m]["p"] for e, m in group])):
      r = e[m]
      r["p_adjusted"], r["correction"] = float(q), f"{name} over {len(group)}"
      r["verdict"] = stats.decide(stats.Interval.from_dict(r), CLAIMS[m], q, margin=r.get("margin"))
  return paired


def plot(paired, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for ax, met in zip(axes, METRICS[:3]):
    names = [e["weighting"] for e in paired]
    mean = np.array([e[met]["median"] for e in paired])
    lo = np.array([e[met]["lo"] for e in paired])
    hi = np.array([e[met]["hi"] for e in paired])
    y = np.arange(len(names))
    ax.errorbar(mean, y, xerr=[mean - lo, hi - mean], fmt="o", capsize=3)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels(names if met == METRICS[0] else [])
    ax.set_title(f"{met}: weighted − plain (median, 95%)", fontsize=9)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


if __name__ == "__main__":
  main()
