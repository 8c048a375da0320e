"""The experiment scripts run end to end in their tiny CI versions and write JSON + PNG."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))


def test_theory_check_smoke(tmp_path):
  import theory_check
  theory_check.main(["--smoke", "--out", str(tmp_path)])
  r = json.loads((tmp_path / "theory_check.json").read_text())
  assert r["example_1"]["matches_paper"]
  assert r["identities"]["max_relative_error"] < 1e-10
  assert {row["geometry"] for row in r["training"]} == {"digons", "triangles", "squares",
                                                        "pentagons", "toy model"}
  assert (tmp_path / "theory_check.png").stat().st_size > 0


def test_synthetic_smoke(tmp_path):
  import synthetic
  synthetic.main(["--smoke", "--out", str(tmp_path), "--no-progress"])
  r = json.loads((tmp_path / "synthetic.json").read_text())
  g = r["geometries"]["constructed"]
  assert {e["model"] for e in g["by_sparsity"]} == {"SAE", "WSAE"}
  assert {e["weighting"] for e in g["alpha_sweep"]} == {"variance", "oracle"}
  assert all(e["seeds"] == 2 for e in g["by_sparsity"])
  assert (tmp_path / "synthetic.png").stat().st_size > 0
