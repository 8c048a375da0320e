"""SAE vs. WSAE on real language-model activations (SmolLM2-135M, layer 15 of 30).

Trains Top-k SAEs (k = 32) at several widths on a harvested activation store, with the
reconstruction loss weighted by γ_i = Var(x_i)^α (α = 0 is the plain SAE), and reports on
held-out shards: FVU, unweighted MSE, L0, dead fraction, per-latent variance, token-level
monosemanticity (consistency of each latent with the current token id, entropy of its
top-activating tokens) and the LM's next-token loss with the layer replaced by the SAE
reconstruction (fraction of loss recovered against zero-ablation).

    python experiments/harvest.py --out data/smollm2-l15
    python experiments/real_wsae.py --store data/smollm2-l15      # 16 SAEs, ~1 h on 2 CPU cores

Resumable: each trained SAE is saved (SAELens format) with its metrics under --work; rerunning
skips finished ones. Writes experiments/results/real_wsae.json and real_wsae.png.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np

# Rows with norm <= 5x the median: without the few massive-norm tokens.
from wsae_jax.objectives.weights import typical_rows  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def _floats(s):
  return [float(t) for t in s.split(",") if t.strip()]


def _ints(s):
  return [int(t) for t in s.split(",") if t.strip()]


def parse(argv=None):
  p = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--store", default="data/smollm2-l15", help="activation store (harvest.py output)")
  p.add_argument("--work", default="data/real_wsae", help="trained SAEs and per-run metrics")
  p.add_argument("--out", default=str(HERE / "results"), help="folder for real_wsae.json/.png")
  p.add_argument("--widths", type=_ints, default=[8, 32], help="d_sae / d_in")
  p.add_argument("--alphas", type=_floats, default=[0.0, 0.5, 1.0], help="WSAE exponents (0 = SAE)")
  p.add_argument(
    "--gammas",
    default="variance,typical",
    help="comma-separated sources of γ for α > 0: 'variance' (Var(x_i) over all rows, "
    "the paper's), 'typical' (Var over rows with norm <= 5x the median, i.e. without "
    "the few massive-norm tokens)",
  )
  p.add_argument(
    "--typical-widths", type=_ints, default=[8], help="widths at which the 'typical' γ runs"
  )
  p.add_argument("--seeds", type=int, default=2)
  p.add_argument("--k", type=int, default=32)
  p.add_argument(
    "--train-tokens",
    type=int,
    default=409_600,
    help="training tokens per SAE (0: one epoch of the training shards; the default, "
    "400 steps of 1024, keeps 16 SAEs within an hour on 2 CPU cores)",
  )
  p.add_argument("--batch-size", type=int, default=1024)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--eval-shards", type=int, default=2, help="last shards held out for evaluation")
  p.add_argument(
    "--loss-contexts",
    type=int,
    default=32,
    help="held-out contexts for the LM-loss-with-reconstruction evaluation (0: skip)",
  )
  p.add_argument("--model", default=None, help="LM for the loss evaluation (default: SmolLM2 GGUF)")
  p.add_argument(
    "--devices",
    type=int,
    default=None,
    help="train on the first N devices (default: all, data-parallel)",
  )
  p.add_argument("--no-progress", action="store_true")
  return p.parse_args(argv)


def run_name(width, alpha, seed, source="variance"):
  tag = "" if source == "variance" or alpha == 0 else f"_{source}"
  return f"w{width}_a{alpha:g}{tag}_s{seed}"


def encode_eval(cfg, params, x, batch=2048):
  """Reconstruction and sparse codes (latent ids, values) of `x`, in batches."""
  from wsae_jax import models

  @jax.jit
  def f(p, xb):
    pre = models.pre_activations(cfg, p, xb)
    vals, idx = jax.lax.top_k(pre, cfg.k)
    vals = jax.nn.relu(vals)
    x_hat = models.decode(cfg, p, models.topk_activation(pre, cfg.k))
    return x_hat, idx, vals

  outs = [jax.device_get(f(params, jnp.asarray(x[i : i + batch]))) for i in range(0, len(x), batch)]
  x_hat = np.concatenate([o[0] for o in outs])
  idx = np.concatenate([o[1] for o in outs])
  vals = np.concatenate([o[2] for o in outs])
  return x_hat, np.where(vals > 0, idx, -1), vals


EVAL_VERSION = 2  # bump when evaluate() changes: finished runs are re-evaluated from their SAEs


def evaluate(cfg, params, x, tokens, gamma):
  """Held-out metrics of one SAE; `x` is normalised, `params` act on normalised inputs."""
  from wsae_jax.evaluation import metrics

  x_hat, lat, val = encode_eval(cfg, params, x)
  err2 = (x.astype(np.float64) - x_hat) ** 2
  stats = metrics.latent_token_stats(lat, val, tokens, cfg.d_sae)
  count = stats["count"]
  var = stats["variance"]
  frequent = count >= 20
  svar = np.sort(var)[::-1]
  # A few rows (position 1 of some contexts: a second attention sink) have norms 10-100x the
  # median and hold about half of the total variance; report the metrics without them too.
  typical = typical_rows(x)
  return {
    "eval_version": EVAL_VERSION,
    "fvu": metrics.fvu(x, x_hat),
    "mse": float(err2.mean()),
    "weighted_mse": float((err2 * gamma).mean()),
    "fvu_typical_rows": metrics.fvu(x[typical], x_hat[typical]),
    "mse_typical_rows": float(err2[typical].mean()),
    "outlier_rows": int((~typical).sum()),
    "l0": float((lat >= 0).sum(1).mean()),
    "dead_frac": float(np.mean(count == 0)),
    "latent_var_mean": float(var.mean()),
    "latent_var_median": float(np.median(var)),
    "latent_var_top1pct_share": float(svar[: max(1, len(svar) // 100)].sum() / svar.sum()),
    "token_consistency": float(np.nanmean(stats["consistency"][frequent])),
    "top20_token_entropy_bits": float(np.nanmean(stats["top_entropy"][frequent])),
    "latents_with_20_activations": int(frequent.sum()),
    "per_dim_mse": err2.mean(0).tolist(),
    "latent_variance_hist": np.histogram(np.log10(var[var > 0]), bins=40, range=(-8, 2))[
      0
    ].tolist(),
  }


def normalised_params(work, name, scale):
  """A saved SAE (SAELens folder, scale folded in for raw inputs) back in normalised units."""
  from wsae_jax.storage import saelens as io

  cfg, p = io.load_saelens(work / name / "sae")
  c = np.float32(scale)  # undo io.save_saelens's fold: W_enc c, W_dec / c, b_dec / c
  return cfg, {
    "W_enc": np.asarray(p["W_enc"]) / c,
    "W_dec": np.asarray(p["W_dec"]) * c,
    "b_enc": np.asarray(p["b_enc"]),
    "b_dec": np.asarray(p["b_dec"]) * c,
  }


def train_all(args, store_path, work):
  from wsae_jax import models, parallel
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.objectives import weights
  from wsae_jax.storage import saelens as io
  from wsae_jax.training import trainer as train

  mesh = parallel.data_mesh(jax.devices()[: args.devices] if args.devices else None)

  probe = ActivationStore(
    store_path,
    args.batch_size,
    shards=slice(0, -args.eval_shards),
    normalize=True,
    prefetch=0,
    validate=True,
  )
  scale, d_in = probe.scale, probe.d_in
  sample = probe.sample(65536) * np.float32(scale)
  train_rows = probe.n_tokens
  steps = (args.train_tokens or train_rows) // args.batch_size
  ev = ActivationStore(
    store_path, 1, shards=slice(-args.eval_shards, None), shuffle=False, prefetch=0
  )
  x_eval, tok_eval = ev.read_all(with_tokens=True)
  x_eval = x_eval * np.float32(scale)
  print(
    f"store {store_path}: {train_rows:,} training rows, {len(x_eval):,} held-out rows; "
    f"scale {scale:.4g}; {steps} steps of {args.batch_size} per SAE",
    flush=True,
  )
  sources = [g.strip() for g in args.gammas.split(",") if g.strip()]
  bad = set(sources) - {"variance", "typical"}
  if bad:
    raise SystemExit(f"--gammas: unknown source(s) {sorted(bad)}; use variance, typical")
  typical = sample[typical_rows(sample)]
  gammas = {
    (src, a): np.asarray(weights.variance_weights(sample if src == "variance" else typical, a))
    for src in sources
    for a in args.alphas
  }
  plan = [
    (width, seed, alpha, src)
    for width in args.widths
    for seed in range(args.seeds)
    for src in sources
    for alpha in args.alphas
    if (alpha > 0 or src == sources[0])
    and (src != "typical" or args.typical_widths is None or width in args.typical_widths)
  ]
  rows = []
  for width, seed, alpha, src in plan:
    gamma = gammas[(src, alpha)]
    name = run_name(width, alpha, seed, src)
    done = work / name / "metrics.json"
    if done.exists():
      row = json.loads(done.read_text())
      row.setdefault("gamma_source", src if alpha > 0 else "none")
      if row.get("eval_version") != EVAL_VERSION:
        cfg, params = normalised_params(work, name, scale)
        row.update(evaluate(cfg, params, x_eval, tok_eval, gamma))
        done.write_text(json.dumps(row))
        print(f"{name}: trained earlier, re-evaluated", flush=True)
      else:
        print(f"{name}: done earlier", flush=True)
      rows.append(row)
      continue
    cfg = models.TopKSAEConfig(d_in=d_in, d_sae=width * d_in, k=args.k)
    tc = train.TrainConfig(
      steps=steps,
      batch_size=args.batch_size,
      learning_rate=args.lr,
      warmup_steps=min(100, steps // 10),
      decay_fraction=0.2,
      seed=seed,
      log_every=max(1, steps // 10),
    )
    t0 = time.perf_counter()
    with ActivationStore(
      store_path, args.batch_size, seed=seed, normalize=True, shards=slice(0, -args.eval_shards)
    ) as stream:
      state, hist = train.train(
        cfg,
        tc,
        stream,
        gamma=None if alpha == 0 else gamma,
        mesh=mesh,
        progress=False if args.no_progress else name,
        normalization_scale=scale,
      )
    train_s = time.perf_counter() - t0
    params = jax.device_get(state.params)
    m = evaluate(cfg, params, x_eval, tok_eval, gamma)
    row = {
      "name": name,
      "width": width,
      "d_sae": cfg.d_sae,
      "alpha": alpha,
      "seed": seed,
      "gamma_source": src if alpha > 0 else "none",
      "k": args.k,
      "steps": steps,
      "train_tokens": steps * args.batch_size,
      "train_s": train_s,
      "tokens_per_s": steps * args.batch_size / train_s,
      "final_train_loss": hist.last().get("loss"),
      "diverged_at": hist.diverged_at,
      **m,
    }
    io.save_saelens(work / name / "sae", cfg, params, normalization_scale=scale)
    done.write_text(json.dumps(row))
    rows.append(row)
    print(
      f"{name}: fvu {m['fvu']:.4f} mse {m['mse']:.4f} L0 {m['l0']:.1f} dead "
      f"{m['dead_frac']:.3f} consistency {m['token_consistency']:.3f} "
      f"({train_s:.0f} s, {row['tokens_per_s']:.0f} tok/s)",
      flush=True,
    )
  return rows, scale, gammas


def lm_losses(args, store_path, work, rows):
  """Next-token loss with block 15's output replaced by each SAE's reconstruction."""
  from wsae_jax import models
  from wsae_jax.data.store import ActivationStore
  from wsae_jax.lm import harvest as hv
  from wsae_jax.storage import saelens as io

  store = ActivationStore(
    store_path,
    1,
    shards=slice(-args.eval_shards, None),
    shuffle=False,
    drop_first_position=False,
    prefetch=0,
  )
  ctx_len, layer = store.context_len, int(store.metadata["layer"])
  _, tokens = store.read_all(with_tokens=True)
  contexts = tokens.reshape(-1, ctx_len)[: args.loss_contexts]
  cache = work / f"lm_loss_{len(contexts)}.json"
  losses = json.loads(cache.read_text()) if cache.exists() else {}
  todo = [r["name"] for r in rows if r["name"] not in losses]
  if todo or "clean" not in losses:
    model, _ = hv.load_model(hv.store_model_path(store.metadata, args.model), tokenizer=False)
    if "clean" not in losses:
      t0 = time.perf_counter()
      losses["clean"] = hv.next_token_loss(model, contexts)
      losses["zero_ablation"] = hv.next_token_loss(
        model, contexts, layer=layer, replace=np.zeros_like
      )
      losses["clean_s"] = time.perf_counter() - t0
      cache.write_text(json.dumps(losses))
    for name in todo:
      cfg, params = io.load_saelens(work / name / "sae")  # takes raw activations
      fwd = jax.jit(lambda p, x: models.forward(cfg, p, x)[1])

      def replace(h):
        flat = h.reshape(-1, h.shape[-1])
        return np.asarray(fwd(params, jnp.asarray(flat))).reshape(h.shape)

      t0 = time.perf_counter()
      losses[name] = hv.next_token_loss(model, contexts, layer=layer, replace=replace)
      print(
        f"{name}: LM loss {losses[name]:.4f} (clean {losses['clean']:.4f}, zero-ablation "
        f"{losses['zero_ablation']:.4f}) in {time.perf_counter() - t0:.0f} s",
        flush=True,
      )
      cache.write_text(json.dumps(losses))
  for r in rows:
    r["lm_loss"] = losses[r["name"]]
    r["loss_recovered"] = (losses["zero_ablation"] - losses[r["name"]]) / (
      losses["zero_ablation"] - losses["clean"]
    )
    r["delta_lm_loss"] = losses[r["name"]] - losses["clean"]
  return {
    "clean": losses["clean"],
    "zero_ablation": losses["zero_ablation"],
    "contexts": len(contexts),
    "tokens": int(contexts.size),
  }


METRICS = (
  "fvu",
  "mse",
  "weighted_mse",
  "fvu_typical_rows",
  "mse_typical_rows",
  "l0",
  "dead_frac",
  "latent_var_mean",
  "latent_var_top1pct_share",
  "token_consistency",
  "top20_token_entropy_bits",
  "loss_recovered",
  "delta_lm_loss",
)


def series(rows):
  """(width, γ source) pairs present; α = 0 runs belong to every source's series."""
  out = []
  for r in rows:
    key = (r["width"], r.get("gamma_source", "variance"))
    if key[1] != "none" and key not in out:
      out.append(key)
  return sorted(out, key=lambda k: (k[0], k[1] != "variance"))


def in_series(r, width, source):
  return r["width"] == width and r.get("gamma_source") in (source, "none")


def summarise(rows, alphas):
  table = []
  for width, source in series(rows):
    for alpha in alphas:
      rs = [r for r in rows if in_series(r, width, source) and r["alpha"] == alpha]
      if not rs:
        continue
      entry = {
        "width": width,
        "gamma_source": source if alpha > 0 else "none",
        "alpha": alpha,
        "seeds": len(rs),
      }
      for m in METRICS:
        vals = [r[m] for r in rs if r.get(m) is not None]
        if vals:
          entry[m] = float(np.mean(vals))
          entry[m + "_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
      table.append(entry)
  return table


def plot(rows, table, alphas, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  panels = [
    ("fvu", "FVU (held out)"),
    ("fvu_typical_rows", "FVU without massive-norm rows"),
    ("loss_recovered", "fraction of LM loss recovered"),
    ("token_consistency", "token consistency of latents"),
    ("top20_token_entropy_bits", "entropy of top-20 tokens (bits)"),
    ("dead_frac", "dead fraction"),
  ]
  fig, axes = plt.subplots(2, 4, figsize=(18, 8))
  for ax, (m, title) in zip(axes.flat, panels):
    for width, source in series(rows):
      es = [
        e for e in table if e["width"] == width and e["gamma_source"] in (source, "none") and m in e
      ]
      es = [
        e for i, e in enumerate(es) if e["alpha"] not in [f["alpha"] for f in es[:i]]
      ]  # α=0 once
      if es:
        ax.errorbar(
          [e["alpha"] for e in es],
          [e[m] for e in es],
          [e[m + "_sd"] for e in es],
          marker="o",
          capsize=3,
          label=f"{width}× ({width * 576} latents), γ: {source}",
          linestyle="-" if source == "variance" else "--",
        )
    ax.set_title(title)
    ax.set_xlabel("α (0 = plain SAE)")
    if m in ("fvu", "fvu_typical_rows"):
      ax.set_yscale("log")
    ax.legend(fontsize=7)
  widths = sorted({r["width"] for r in rows})
  ax = axes.flat[6]
  for width in widths:
    for alpha in alphas:
      rs = [
        r
        for r in rows
        if r["width"] == width
        and r["alpha"] == alpha
        and r["seed"] == 0
        and r.get("gamma_source") in ("variance", "none")
      ]
      if rs:
        ax.plot(
          np.linspace(-8, 2, 41)[:-1] + 0.125,
          rs[0]["latent_variance_hist"],
          label=f"{width}×, α={alpha:g}",
        )
  ax.set_title("per-latent variance (held out)")
  ax.set_xlabel("log10 variance")
  ax.set_ylabel("latents")
  ax.legend(fontsize=7)
  ax = axes.flat[7]
  for width in widths[:1]:
    for alpha in alphas:
      rs = [
        r
        for r in rows
        if r["width"] == width
        and r["alpha"] == alpha
        and r["seed"] == 0
        and r.get("gamma_source") in ("variance", "none")
      ]
      if rs:
        ax.plot(sorted(rs[0]["per_dim_mse"], reverse=True), label=f"{width}×, α={alpha:g}")
  ax.set_yscale("log")
  ax.set_title("per-dimension MSE, sorted")
  ax.set_xlabel("input dimension (rank)")
  ax.legend(fontsize=7)
  fig.suptitle("SmolLM2-135M (Q4_1) layer 15, Jane Austen: Top-k SAE (k=32) vs WSAE γ = Var^α")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  args = parse(argv)
  store_path = pathlib.Path(args.store)
  work = pathlib.Path(args.work)
  out = pathlib.Path(args.out)
  work.mkdir(parents=True, exist_ok=True)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  rows, scale, gammas = train_all(args, store_path, work)
  train_s = time.perf_counter() - t0
  lm = None
  if args.loss_contexts:
    t1 = time.perf_counter()
    lm = lm_losses(args, store_path, work, rows)
    lm["seconds"] = time.perf_counter() - t1
  table = summarise(rows, args.alphas)
  meta = json.loads((store_path / "metadata.json").read_text())
  result = {
    "store": {
      k: meta.get(k)
      for k in (
        "model",
        "layer",
        "n_layers",
        "d_in",
        "dtype",
        "context_len",
        "n_tokens",
        "corpus",
        "lm_loss_nats",
      )
    },
    "normalization_scale": scale,
    "args": vars(args),
    "lm_loss": lm,
    "summary": table,
    "gamma": {
      f"{src} a={a:g}": {"min": float(g.min()), "max": float(g.max()), "top_dim": int(np.argmax(g))}
      for (src, a), g in gammas.items()
    },
    "runs": [
      {k: v for k, v in r.items() if k not in ("per_dim_mse", "latent_variance_hist")} for r in rows
    ],
    "seconds": {"train_and_eval": train_s, "total": time.perf_counter() - t0},
  }
  (out / "real_wsae.json").write_text(json.dumps(result, indent=2))
  plot(rows, table, args.alphas, out / "real_wsae.png")
  print(
    f"\n{'width':>5} {'γ':>8} {'alpha':>5} {'FVU':>8} {'FVU typ':>8} {'L0':>5} {'dead':>6} "
    f"{'consist':>8} {'H top20':>8} {'loss rec':>8}"
  )
  for e in table:
    print(
      f"{e['width']:>5} {e['gamma_source']:>8} {e['alpha']:>5g} {e['fvu']:>8.4f} "
      f"{e['fvu_typical_rows']:>8.4f} {e['l0']:>5.1f} "
      f"{e['dead_frac']:>6.3f} {e['token_consistency']:>8.3f} "
      f"{e['top20_token_entropy_bits']:>8.3f} {e.get('loss_recovered', float('nan')):>8.3f}"
    )
  print(
    f"\nwrote {out / 'real_wsae.json'} and {out / 'real_wsae.png'} "
    f"({time.perf_counter() - t0:.0f} s)"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
