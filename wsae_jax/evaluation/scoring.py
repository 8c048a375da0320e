"""Scoring trained SAEs: one table row per sweep member, and the Pareto front of a table.

Training returns states and histories; this module turns them into numbers. Synthetic members are
scored against the ground truth on a held-out batch of their own stream (`evaluate`: L_SAE, L_GT,
MMCS, features per latent, shrinkage, ...); members trained on real activations by
reconstruction (L_SAE, MSE, FVU, L0, dead fraction, latent variance).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wsae_jax import models
from wsae_jax.data import sources as data_lib
from wsae_jax.data.problems import HELD_OUT_STEP, SyntheticProblem
from wsae_jax.evaluation import metrics as metrics_lib
from wsae_jax.evaluation import synthbench as synthbench_lib
from wsae_jax.objectives.reconstruction import reconstruction_loss


def score_sweep(result, data, *, eval_samples: int = 8192) -> list[dict]:
  """One row per member of a `training.sweep.SweepResult`: its hyperparameters and its scores.

  `data` is what the sweep trained on: a `SyntheticProblem` (each member is scored on a held-out
  batch of its own stream) or the real activations (scored on the first `eval_samples` rows the
  sweep's source yields, shared by every member).
  """
  synthetic = isinstance(data, SyntheticProblem)
  synthbench = hasattr(data, "law")  # a data.synthbench.SynthBenchSource
  source: Any = None if synthetic else data_lib.as_source(data, result.train_cfg.batch_size, seed=0)
  hp_names = [h.name for h in models.get(result.sae_cfg).hyperparameters]
  params = jax.device_get(result.states.params)
  rows: list[dict] = []
  cache: dict = {}
  for i, m in enumerate(result.members):
    row = {
      k: m[k]
      for k in ("seed", "data_seed", "sparsity", "alpha", "gamma_kind", "learning_rate", *hp_names)
    }
    row["gamma_given"] = m["gamma"] is not None
    row["diverged_at"] = result.diverged.get(i)
    p_i = jax.tree.map(lambda a: jnp.asarray(a[i]), params)
    cfg_i, gamma = result.member_config(i), result.gamma(i)
    if synthetic:
      key = (m["data_seed"], m["sparsity"])
      if key not in cache:
        src = data.source(m["sparsity"], m["data_seed"])
        cache[key] = np.asarray(src.features(HELD_OUT_STEP + 1, eval_samples))
      row.update(metrics_lib.evaluate(cfg_i, p_i, cache[key], data.W_p, gamma=gamma))
    else:
      if "x" not in cache and synthbench:
        # SynthSAEBench: held-out steps of its stream, drawn once; every reading sees these rows.
        cache["held_out"] = list(
          synthbench_lib.held_out_batches(
            data, eval_samples, step0=HELD_OUT_STEP, batch_size=source.batch_size
          )
        )
        cache["x"] = np.concatenate([np.asarray(x) for x, _ in cache["held_out"]])
        cache["f"] = np.concatenate([np.asarray(f) for _, f in cache["held_out"]])
      elif "x" not in cache:  # real data: the first batches, shared
        cache["x"] = np.concatenate(
          [np.asarray(source.batch(t)) for t in range(max(1, eval_samples // source.batch_size))]
        )
      row.update(reconstruction_scores(cfg_i, p_i, cache["x"], gamma))
      if synthbench:
        s = synthbench_lib.score_batches(cfg_i, p_i, data.law, cache["held_out"]).to_dict()
        row.update({f"synthbench_{k}": v for k, v in s.items() if k != "classification"})
        row.update({f"synthbench_{k}": v for k, v in s["classification"].items()})
        gt = synthbench_lib.ground_truth_readings(cfg_i, p_i, data.law, cache["f"])
        row.update({f"gt_{k}": gt[k] for k in ("l_gt", "mcc", "mmcs", "shrinkage", "vanishing")})
    h = result.histories[i]
    row["final_train_loss"] = h[-1]["loss"] if h else float("nan")
    rows.append(row)
  return rows


def reconstruction_scores(sae_cfg, params, x_BxD, gamma=None) -> dict:
  """L_SAE (weighted by γ), MSE, FVU, L0, dead fraction and mean latent variance on a sample."""
  x = jnp.asarray(x_BxD)
  z, x_hat = models.forward(sae_cfg, params, x)
  return {
    "l_sae": float(reconstruction_loss(x, x_hat, gamma)[0]),
    "mse": float(reconstruction_loss(x, x_hat)[0]),
    "fvu": metrics_lib.fvu(x, x_hat),
    "l0": metrics_lib.l0(z),
    "dead_frac": metrics_lib.dead_fraction(z),
    "latent_var": float(np.mean(metrics_lib.latent_variance(z))),
  }


def pareto_front(rows: Sequence[dict], x: str = "l0", y: str = "mse") -> list[int]:
  """Indices of rows not dominated in (x, y), both minimised, sorted by x."""
  pts = [
    (r[x], r[y], i)
    for i, r in enumerate(rows)
    if np.isfinite(r.get(x, np.nan)) and np.isfinite(r.get(y, np.nan))
  ]
  pts.sort()
  front, best = [], np.inf
  for _px, py, i in pts:
    if py < best:
      front.append(i)
      best = py
  return front
