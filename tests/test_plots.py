"""The figures say what they show: titles are the ones asked for."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402

from wsae_jax.app import plots  # noqa: E402


def test_demo_figure_keeps_its_title_and_panel_titles(tmp_path, monkeypatch):
  seen = {}
  real = matplotlib.figure.Figure.savefig

  def savefig(fig, *a, **k):
    seen["suptitle"] = fig._suptitle.get_text()
    seen["panels"] = [ax.get_title() for ax in fig.axes]
    return real(fig, *a, **k)

  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
  summary = [
    {
      "model": m,
      "sparsity": S,
      **{k: 1.0 for k in ("l_gt", "mse", "mmcs", "features_per_latent")},
      **{k + "_std": 0.1 for k in ("l_gt", "mse", "mmcs", "features_per_latent")},
    }
    for m in ("SAE", "WSAE")
    for S in (0.7, 0.9)
  ]
  plots.demo_summary(summary, tmp_path / "d.png", alpha=1.0, title="SAE vs WSAE, triangles")
  # A loop variable used to shadow `title`: the figure was titled "features per latent".
  assert seen["suptitle"] == "SAE vs WSAE, triangles"
  assert seen["panels"] == [
    "L_GT (decoder matching)",
    "x_p reconstruction (L_SAE)",
    "MMCS",
    "features per latent",
  ]
  assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
