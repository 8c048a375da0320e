"""`wsae demo`: SAE vs. WSAE on a superposition problem at a few sparsities, as a table, JSON and PNG."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import numpy as np

from wsae_jax import _validate as V
from wsae_jax import models
from wsae_jax.app import plots
from wsae_jax.data import problems
from wsae_jax.data import sources as data_lib
from wsae_jax.evaluation import metrics
from wsae_jax.objectives import weights
from wsae_jax.training import trainer as train_lib
from wsae_jax.training.config import TrainConfig

GEOMETRIES = ("polygon", "toy", "random")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
  """What `wsae demo` runs."""

  out: str = "demo_out"
  """Output folder for demo.json and demo.png."""
  geometry: str = "polygon"
  """W_p: 'polygon' (triangles in 2-D planes + monosemantic dims), 'toy' (trained toy model), 'random'."""
  sparsities: tuple[float, ...] = (0.7, 0.9, 0.99)
  """Feature sparsities S to compare at."""
  alpha: float = 1.0
  """WSAE exponent: γ_i = Var(x_p,i)^α."""
  architecture: str = "tied"
  """SAE architecture: 'tied' (the theory's SAE) or any other registered one (relu, topk, ...)."""
  steps: int = 3000
  """Training steps per SAE."""
  batch_size: int = 1024
  """Batch size."""
  learning_rate: float = 3e-3
  """Peak Adam learning rate."""
  seeds: int = 1
  """Seeds per (sparsity, model); metrics are averaged and their spread reported."""
  eval_samples: int = 16384
  """Held-out samples for the metrics."""

  def __post_init__(self):
    if self.geometry not in GEOMETRIES:
      raise V.WSAEInputError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}.")
    if not self.sparsities:
      raise V.WSAEInputError("sparsities must name at least one value.")
    for s in self.sparsities:
      V.check_range("sparsity", s, low=0.0, high=1.0, high_open=True)
    V.check_range("alpha", self.alpha, low=0.0)
    if self.architecture not in models.ARCHITECTURES:
      raise V.WSAEInputError(
        f"architecture must be one of {sorted(models.ARCHITECTURES)}, got {self.architecture!r}."
      )
    V.check_int("seeds", self.seeds, low=1)
    V.check_int("eval_samples", self.eval_samples, low=16)


def build_problem(geometry: str, sparsity: float, seed: int = 0) -> np.ndarray:
  """The demo's W_p: 20 observed dimensions, as in the paper's synthetic setting (polygon: 8
  triangles and 4 monosemantic dimensions, n = 28; toy and random: n = 40)."""
  return problems.build(geometry, sparsity=sparsity, seed=seed, toy_steps=2000)


def sae_config(architecture: str, W_p, sparsity: float) -> models.SAEConfig:
  """The demo's SAE for W_p: d_sae = n; architectures that take k (active latents) get the
  expected number of active features, (1 − S)·n."""
  n_p, n = np.shape(W_p)
  active = max(1, min(n, round((1 - sparsity) * n)))
  takes_k = any(h.name == "k" for h in models.get(architecture).hyperparameters)
  return models.make_config(architecture, d_in=n_p, d_sae=n, **({"k": active} if takes_k else {}))


def run_demo(cfg: DemoConfig, *, progress: bool = True, echo=print) -> dict:
  """Trains the SAE and the WSAE at each sparsity; returns the results written to demo.json."""
  out = pathlib.Path(cfg.out)
  V.check_writable_dir(out, "--out")
  t0 = time.perf_counter()
  tc = TrainConfig(
    steps=cfg.steps,
    batch_size=cfg.batch_size,
    learning_rate=cfg.learning_rate,
    warmup_steps=min(100, cfg.steps // 10),
    log_every=max(cfg.steps // 20, 1),
  )
  rows = []
  for sparsity in cfg.sparsities:
    W_p = build_problem(cfg.geometry, sparsity)
    sae_cfg = sae_config(cfg.architecture, W_p, sparsity)
    for seed in range(cfg.seeds):
      source = data_lib.SyntheticSource(W_p, sparsity, cfg.batch_size, seed=seed)
      x_eval, x_p_eval = source.sample(problems.HELD_OUT_STEP, cfg.eval_samples)
      gamma = weights.variance_weights(np.asarray(x_p_eval), cfg.alpha)
      for model, g in (("SAE", None), ("WSAE", gamma)):
        state, hist = train_lib.train(
          sae_cfg,
          dataclasses.replace(tc, seed=seed),
          source,
          gamma=g,
          progress=f"S={sparsity} {model} seed {seed}" if progress else False,
        )
        m = metrics.evaluate(sae_cfg, state.params, x_eval, W_p)
        rows.append(
          {
            "sparsity": sparsity,
            "model": model,
            "seed": seed,
            "train_seconds": hist.seconds,
            "diverged_at": hist.diverged_at,
            **m,
          }
        )
  summary = _summarise(rows)
  result = {
    "config": dataclasses.asdict(cfg),
    "devices": [str(d) for d in jax.devices()],
    "rows": rows,
    "summary": summary,
    "seconds": time.perf_counter() - t0,
  }
  (out / "demo.json").write_text(json.dumps(result, indent=2))
  plots.demo_summary(
    summary,
    out / "demo.png",
    alpha=cfg.alpha,
    title=f"{cfg.architecture} SAE vs WSAE, {cfg.geometry} W_p, {cfg.seeds} seed(s)",
  )
  echo(format_table(summary))
  echo(f"\nwrote {out / 'demo.json'} and {out / 'demo.png'} in {result['seconds']:.1f} s")
  return result


_COLUMNS = ("mse", "l_gt", "mmcs", "features_per_latent", "shrinkage", "vanishing", "l0")


def _summarise(rows):
  summary = []
  for key in dict.fromkeys((r["sparsity"], r["model"]) for r in rows):
    group = [r for r in rows if (r["sparsity"], r["model"]) == key]
    entry = {"sparsity": key[0], "model": key[1], "seeds": len(group)}
    for c in _COLUMNS:
      vals = np.asarray([r[c] for r in group], np.float64)
      entry[c] = float(vals.mean())
      entry[c + "_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
    summary.append(entry)
  return summary


def format_table(summary) -> str:
  head = (
    f"{'S':>6} {'model':>5} {'L_SAE':>9} {'L_GT':>9} {'MMCS':>6} {'feat/lat':>8} "
    f"{'shrink':>7} {'vanish':>7} {'L0':>6}"
  )
  lines = [head, "-" * len(head)]
  for e in summary:
    lines.append(
      f"{e['sparsity']:>6.3g} {e['model']:>5} {e['mse']:>9.4g} {e['l_gt']:>9.4g} "
      f"{e['mmcs']:>6.3f} {e['features_per_latent']:>8.2f} {e['shrinkage']:>7.3f} "
      f"{e['vanishing']:>7.3f} {e['l0']:>6.2f}"
    )
  return "\n".join(lines)
