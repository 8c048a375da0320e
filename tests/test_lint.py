"""The lint, format and type checks configured in pyproject.toml ([tool.ruff], [tool.mypy]) hold,
so CI fails on a violation. `ruff check --fix` repairs most of what ruff reports, `ruff format`
the layout (ruff is pinned in the test extra: formatters change between versions)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _ruff():
  ruff = shutil.which("ruff") or (pathlib.Path(sys.executable).parent / "ruff")
  if not pathlib.Path(ruff).exists():
    pytest.skip("ruff is not installed (it comes with the `test` extra)")
  return str(ruff)


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_passes(command):
  r = subprocess.run(
    [_ruff(), *command, "wsae_jax", "tests", "experiments", "benchmarks"],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_mypy_passes():
  if shutil.which("mypy") is None and not (pathlib.Path(sys.executable).parent / "mypy").exists():
    pytest.skip("mypy is not installed (it comes with the `test` extra)")
  r = subprocess.run(
    [sys.executable, "-m", "mypy", "--no-error-summary"], cwd=ROOT, capture_output=True, text=True
  )
  assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
