"""The real-activation training recipe, before and after: dead latents, FVU, LM loss recovered.

Trains Top-k SAEs (k = 32) at 8x and 32x on the SmolLM2 layer-15 store for 409,600 tokens (the
setting of REAL.md) under several recipes, and scores each on the held-out shards (every row,
massive ones included, on the raw scale through the exported SAELens folder):

  before       b_dec = 0, a latent is dead after 10M tokens (so AuxK never engages in this run)
  dead-5%      b_dec = 0, dead after 5% of the run's tokens (20,480): AuxK engages early
  median       b_dec at the geometric median of the first 16,384 rows, dead after 5%
  mean         b_dec at the mean, dead after 5%
  median-drop  as median, training rows with norm > 10x the median dropped

    python experiments/harvest.py --out data/smollm2-l15
    python experiments/recipe.py --store data/smollm2-l15 --widths 8 --recipes before,dead-5%,median,mean,median-drop
    python experiments/recipe.py --store data/smollm2-l15 --widths 32 --recipes before,median

Resumable (finished SAEs are kept under --work). Writes experiments/results/recipe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import real_wsae  # noqa: E402  (held-out evaluation and LM loss, shared with REAL.md's study)

RECIPES = {
  "before": {"b_dec_init": "zeros", "dead_after_tokens": 10_000_000, "max_norm_ratio": None},
  "dead-5%": {"b_dec_init": "zeros", "dead_fraction": 0.05, "max_norm_ratio": None},
  "median": {"b_dec_init": "median", "dead_fraction": 0.05, "max_norm_ratio": None},
  "mean": {"b_dec_init": "mean", "dead_fraction": 0.05, "max_norm_ratio": None},
  "median-drop": {"b_dec_init": "median", "dead_fraction": 0.05, "max_norm_ratio": 10.0},
}


def parse(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--store", default="data/smollm2-l15")
  p.add_argument("--work", default="data/recipe")
  p.add_argument("--out", default=str(HERE / "results" / "recipe.json"))
  p.add_argument("--widths", type=lambda s: [int(t) for t in s.split(",")], default=[8, 32])
  p.add_argument(
    "--recipes", type=lambda s: [t.strip() for t in s.split(",")], default=list(RECIPES)
  )
  p.add_argument("--k", type=int, default=32)
  p.add_argument("--train-tokens", type=int, default=409_600)
  p.add_argument("--batch-size", type=int, default=1024)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--eval-shards", type=int, default=2)
  p.add_argument("--loss-contexts", type=int, default=32)
  p.add_argument("--model", default=None)
  p.add_argument(
    "--devices",
    type=int,
    default=None,
    help="train on the first N devices (default: all, data-parallel)",
  )
  p.add_argument("--no-progress", action="store_true")
  a = p.parse_args(argv)
  bad = set(a.recipes) - set(RECIPES)
  if bad:
    p.error(f"unknown recipes {sorted(bad)}; choose from {sorted(RECIPES)}")
  return a


def train_one(args, width, recipe, work):
  from wsae_jax import models, parallel
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.training import workdir
  from wsae_jax.training.config import TrainConfig

  spec = RECIPES[recipe]
  name = f"w{width}_{recipe}_s{args.seed}"
  done = work / name / "train.json"
  if done.exists():
    return name, json.loads(done.read_text())
  steps = args.train_tokens // args.batch_size
  dead = spec.get("dead_after_tokens") or max(
    args.batch_size, int(spec["dead_fraction"] * args.train_tokens)
  )
  with ActivationStore(
    args.store,
    args.batch_size,
    seed=args.seed,
    normalize=True,
    shards=slice(0, -args.eval_shards),
    max_norm_ratio=spec["max_norm_ratio"],
  ) as stream:
    d_in = stream.d_in
    cfg = models.TopKSAEConfig(d_in=d_in, d_sae=width * d_in, k=args.k, dead_after_tokens=dead)
    tc = TrainConfig(
      steps=steps,
      batch_size=args.batch_size,
      learning_rate=args.lr,
      warmup_steps=min(100, steps // 10),
      decay_fraction=0.2,
      seed=args.seed,
      log_every=max(1, steps // 10),
      b_dec_init=spec["b_dec_init"],
    )
    t0 = time.perf_counter()
    mesh = parallel.data_mesh(jax.devices()[: args.devices] if args.devices else None)
    # The run folder of `wsae train` (record, one checkpoint, history, sae/): an interrupted
    # run resumes where it stopped.
    hist = workdir.start_run(
      work / name,
      cfg,
      tc,
      workdir.RunData(stream, scale=stream.scale),
      mesh=mesh,
      resume=True,
      checkpoints=workdir.CheckpointPolicy(every=steps),
      progress=False if args.no_progress else name,
    ).history
    seconds = time.perf_counter() - t0
    info = {
      "name": name,
      "width": width,
      "recipe": recipe,
      **spec,
      "dead_after_tokens": dead,
      "steps": steps,
      "train_tokens": steps * args.batch_size,
      "train_s": seconds,
      "tokens_per_s": steps * args.batch_size / seconds,
      "dropped_rows": stream.dropped_rows,
      "train_dead_frac": hist.last().get("dead_frac"),
      "diverged_at": hist.diverged_at,
    }
  done.write_text(json.dumps(info))
  return name, info


def main(argv=None):
  args = parse(argv)
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.storage import saelens

  work = pathlib.Path(args.work)
  work.mkdir(parents=True, exist_ok=True)
  ev = ActivationStore(
    args.store, 1, shards=slice(-args.eval_shards, None), shuffle=False, prefetch=0
  )
  x_eval, tok_eval = ev.read_all(with_tokens=True)
  print(f"{len(x_eval):,} held-out rows", flush=True)
  rows = []
  for width in args.widths:
    for recipe in args.recipes:
      name, info = train_one(args, width, recipe, work)
      metrics_file = work / name / "metrics.json"
      if metrics_file.exists():
        m = json.loads(metrics_file.read_text())
      else:
        cfg, params = saelens.load_saelens(work / name / "sae")  # takes raw activations
        m = real_wsae.evaluate(cfg, params, x_eval, tok_eval, np.ones(cfg.d_in))
        m = {k: v for k, v in m.items() if k not in ("per_dim_mse", "latent_variance_hist")}
        metrics_file.write_text(json.dumps(m))
      row = {**info, **m}
      rows.append(row)
      print(
        f"{name}: dead {m['dead_frac']:.3f}  FVU {m['fvu']:.4f}  FVU typical "
        f"{m['fvu_typical_rows']:.4f}  L0 {m['l0']:.1f}  {info['tokens_per_s']:.0f} tok/s",
        flush=True,
      )
  lm = None
  if args.loss_contexts:
    lm = real_wsae.lm_losses(
      types.SimpleNamespace(
        eval_shards=args.eval_shards, loss_contexts=args.loss_contexts, model=args.model
      ),
      args.store,
      work,
      rows,
    )
  out = pathlib.Path(args.out)
  old = json.loads(out.read_text())["rows"] if out.exists() else []
  keep = [r for r in old if r["name"] not in {r2["name"] for r2 in rows}]
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(
    json.dumps(
      {"rows": keep + rows, "lm": lm, "command": " ".join(sys.argv)}, indent=2, default=float
    )
  )
  print(f"{'name':<24} {'dead':>6} {'FVU':>7} {'FVU typ':>7} {'L0':>5} {'LM rec':>7} {'tok/s':>6}")
  for r in keep + rows:
    print(
      f"{r['name']:<24} {r['dead_frac']:>6.3f} {r['fvu']:>7.4f} {r['fvu_typical_rows']:>7.4f} "
      f"{r['l0']:>5.1f} {r.get('loss_recovered', float('nan')):>7.4f} "
      f"{r['tokens_per_s']:>6.0f}"
    )
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
