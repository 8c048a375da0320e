"""The application's figures (matplotlib, headless). The library itself plots nothing."""

from __future__ import annotations

import numpy as np

from wsae_jax.evaluation.scoring import pareto_front


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # headless: the figures are files
  import matplotlib.pyplot as plt

  return plt


def pareto(rows, path) -> None:
  """A sweep's members in (L0, MSE) with their Pareto front."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 4))
  l0 = np.asarray([r["l0"] for r in rows])
  mse = np.asarray([r["mse"] for r in rows])
  ax.scatter(l0, mse, s=14, alpha=0.7, label="members")
  front = pareto_front(rows)
  ax.plot(l0[front], mse[front], "r-o", ms=4, label="Pareto front")
  ax.set_xlabel("L0 (active latents per example)")
  ax.set_ylabel("reconstruction MSE")
  ax.set_ylim(bottom=0)
  ax.set_xlim(left=0)
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def demo_summary(summary, path, *, alpha: float, title: str) -> None:
  """`wsae demo`'s figure: L_GT, L_SAE, MMCS and features per latent against sparsity."""
  plt = _pyplot()
  panels = (
    ("l_gt", "L_GT (decoder matching)"),
    ("mse", "x_p reconstruction (L_SAE)"),
    ("mmcs", "MMCS"),
    ("features_per_latent", "features per latent"),
  )
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
  for ax, (key, panel_title) in zip(axes, panels):
    for model, colour in (("SAE", "tab:blue"), ("WSAE", "tab:orange")):
      es = [e for e in summary if e["model"] == model]
      ax.errorbar(
        [e["sparsity"] for e in es],
        [e[key] for e in es],
        yerr=[e[key + "_std"] for e in es],
        marker="o",
        capsize=3,
        color=colour,
        label=model if model == "SAE" else f"WSAE (α={alpha})",
      )
    ax.set_title(panel_title)
    ax.set_xlabel("sparsity S")
    ax.set_ylim(bottom=0)  # honest axes: start at zero.
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
