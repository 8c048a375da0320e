"""Bad input at the command line: a clear message and exit status 2, before any training."""

import numpy as np
import pytest

from wsae_jax.app import cli


def _train(tmp_path, *extra):
  return cli.main(
    [
      "train",
      "--out",
      str(tmp_path / "run"),
      "--steps",
      "20",
      "--batch-size",
      "64",
      "--checkpoint-every",
      "10",
      "--no-progress",
      *extra,
    ]
  )


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda d: d / "missing.npy", "does not exist"),
    (lambda d: (d / "x.txt").write_text("1 2 3") and d / "x.txt", "is not a .npy array"),
    (lambda d: np.save(d / "i.npy", np.ones((100, 8), np.int32)) or d / "i.npy", "floating-point"),
    (lambda d: np.save(d / "r.npy", np.ones(100, np.float32)) or d / "r.npy", "rank 2"),
    (
      lambda d: np.save(d / "n.npy", np.full((100, 8), np.nan, np.float32)) or d / "n.npy",
      "non-finite",
    ),
  ],
)
def test_bad_activation_files(make, match, tmp_path, capsys):
  path = make(tmp_path)
  assert _train(tmp_path, "--activations", str(path)) == 2
  err = capsys.readouterr().err
  assert match in err and "wsae train: error:" in err
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
    p.name.isdigit() for p in (tmp_path / "run" / "checkpoints").iterdir()
  )


def test_resume_with_an_incompatible_config_is_refused(tmp_path, capsys):
  assert _train(tmp_path, "--arch", "relu") == 0
  assert _train(tmp_path, "--arch", "relu", "--lr", "0.01", "--resume") == 2
  assert "train_config.learning_rate" in capsys.readouterr().err


def test_unknown_architecture_and_k_too_large(tmp_path, capsys):
  with pytest.raises(SystemExit):  # argparse rejects an unknown --arch itself
    _train(tmp_path, "--arch", "abstopk")
  assert "invalid choice: 'abstopk'" in capsys.readouterr().err
  assert _train(tmp_path, "--arch", "topk", "--k", "500") == 2
  assert "k must be <= d_sae" in capsys.readouterr().err
