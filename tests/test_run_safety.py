"""No command loses work: run folders are never mixed or silently overwritten, outputs are checked
before training, and the exit status says how a run ended (issue #16)."""

import contextlib
import os
import subprocess

import numpy as np
import pytest

import wsae_jax as w
from wsae_jax.app import cli
from wsae_jax.storage import checkpoint
from wsae_jax.storage import saelens as io
from wsae_jax.training import run as run_lib
from wsae_jax.training import trainer as train_lib

ARGS = ["--steps", "20", "--batch-size", "64", "--checkpoint-every", "10", "--no-progress"]


def _train(out, *extra):
  return cli.main(["train", "--out", str(out), *ARGS, *extra])


def _snapshot(folder):
  """Every file under `folder` with its bytes: what a refused command must leave as it was."""
  return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def _read_only(path):
  """Makes a folder unwritable even for root (CI runs as root: chmod alone does not stop it)."""
  if os.geteuid() == 0:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
      pytest.skip("chattr +i is not supported on this filesystem (needed to deny root writes)")
    try:
      yield
    finally:
      subprocess.run(["chattr", "-i", str(path)], check=True)
  else:
    mode = path.stat().st_mode
    path.chmod(0o555)
    try:
      yield
    finally:
      path.chmod(mode)


def _forbid_training(monkeypatch):
  """From here on, compiling a training step fails the test: refused input must not start work."""

  def boom(*a, **k):
    raise AssertionError("training started although the input was refused")

  monkeypatch.setattr(train_lib, "make_train_step", boom)


def test_resume_with_another_shape_is_refused_and_the_run_is_untouched(tmp_path, capsys):
  run = tmp_path / "run"
  assert _train(run) == 0
  before = _snapshot(run)
  assert _train(run, "--d-sae", "40", "--resume") == 2
  err = capsys.readouterr().err
  assert "sae_config.d_sae: checkpoint has 28, this run has 40" in err
  assert "Nothing was changed" in err
  assert _snapshot(run) == before


def test_library_resume_compares_records_before_restoring_arrays(tmp_path):
  """A run folder without run.json (older runs): the checkpoint's own record is compared first,
  so a shape change is named as such instead of every checkpoint looking corrupted."""
  src = w.SyntheticSource(w.polygon_matrix(3, 3, n_mono=2), 0.8, 64)
  tc = w.TrainConfig(steps=20, batch_size=64, log_every=10)
  ck = checkpoint.Checkpointer(tmp_path, every=10)
  train_lib.train(w.TiedSAEConfig(d_in=8, d_sae=11), tc, src, progress=False, checkpointer=ck)
  before = _snapshot(tmp_path)
  import warnings

  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no "falling back" warning: nothing looks corrupted
    with pytest.raises(checkpoint.CheckpointError, match="sae_config.d_sae"):
      train_lib.train(
        w.TiedSAEConfig(d_in=8, d_sae=20),
        tc,
        src,
        progress=False,
        checkpointer=checkpoint.Checkpointer(tmp_path, every=10),
        resume=True,
      )
  assert _snapshot(tmp_path) == before


def test_a_new_run_into_a_folder_holding_a_run_is_refused(tmp_path, capsys, monkeypatch):
  run = tmp_path / "run"
  assert _train(run, "--arch", "relu") == 0
  before = _snapshot(run)
  _forbid_training(monkeypatch)
  assert _train(run, "--arch", "topk", "--k", "3") == 2
  err = capsys.readouterr().err
  assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
  assert _snapshot(run) == before
  # A folder of someone else's files is not a run folder either.
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "todo.txt").write_text("mine")
  assert _train(tmp_path / "notes") == 2
  assert "holds no wsae run" in capsys.readouterr().err


def test_the_library_refuses_to_mix_two_runs_in_one_checkpoint_folder(tmp_path):
  src = w.SyntheticSource(w.polygon_matrix(3, 3, n_mono=2), 0.8, 64)
  tc = w.TrainConfig(steps=20, batch_size=64, log_every=10)
  cfg = w.TiedSAEConfig(d_in=8, d_sae=11)
  train_lib.train(
    cfg, tc, src, progress=False, checkpointer=checkpoint.Checkpointer(tmp_path, every=10)
  )
  with pytest.raises(
    checkpoint.CheckpointError, match=r"already holds checkpoints \(steps \[10, 20\]\)"
  ):
    train_lib.train(
      cfg, tc, src, progress=False, checkpointer=checkpoint.Checkpointer(tmp_path, every=10)
    )
  assert checkpoint.Checkpointer(tmp_path).steps() == [10, 20]


def test_overwrite_replaces_the_old_run_and_export_sees_the_new_one(tmp_path, capsys):
  run = tmp_path / "run"
  assert _train(run, "--arch", "relu") == 0
  assert _train(run, "--arch", "topk", "--k", "3", "--d-sae", "40", "--overwrite") == 0
  cfg, _, meta = run_lib.load_params(run / "checkpoints")
  assert cfg.architecture == "topk" and cfg.d_sae == 40
  assert checkpoint.Checkpointer(run / "checkpoints").steps() == [10, 20]
  assert cli.main(["export", str(run), "--overwrite"]) == 0  # RUN/sae exists: as --out
  cfg2, p2 = io.load_saelens(run / "sae")
  assert cfg2.architecture == "topk" and p2["W_enc"].shape == (20, 40)
  # --overwrite with bad input removes nothing: the checks come first.
  before = _snapshot(run)
  assert _train(run, "--arch", "topk", "--k", "99", "--d-sae", "8", "--overwrite") == 2
  assert _snapshot(run) == before


def test_resume_on_a_read_only_run_fails_before_training(tmp_path, capsys, monkeypatch):
  run = tmp_path / "run"
  assert _train(run) == 0
  _forbid_training(monkeypatch)
  with _read_only(run / "checkpoints"):
    assert _train(run, "--resume") == 2
  assert "cannot be written" in capsys.readouterr().err


def test_an_output_that_is_a_file_or_unwritable_is_a_clear_error(tmp_path, capsys, monkeypatch):
  _forbid_training(monkeypatch)
  f = tmp_path / "file"
  f.write_text("x")
  assert _train(f) == 2
  assert f"--out '{f}' is a file" in capsys.readouterr().err
  locked = tmp_path / "locked"
  locked.mkdir()
  with _read_only(locked):
    assert _train(locked / "run") == 2
    assert "cannot be written" in capsys.readouterr().err
  assert cli.main(["export", str(tmp_path / "nowhere")]) == 2
  assert "not a run folder" in capsys.readouterr().err


def test_export_refuses_a_file_or_a_foreign_folder(tmp_path, capsys):
  run = tmp_path / "run"
  assert _train(run) == 0
  f = tmp_path / "file"
  f.write_text("x")
  assert cli.main(["export", str(run), "--out", str(f)]) == 2
  assert "is a file" in capsys.readouterr().err
  other = tmp_path / "other"
  other.mkdir()
  (other / "keep.txt").write_text("mine")
  assert cli.main(["export", str(run), "--out", str(other)]) == 2
  assert "--overwrite" in capsys.readouterr().err
  assert (other / "keep.txt").read_text() == "mine"
  assert cli.main(["export", str(run), "--out", str(tmp_path / "fresh")]) == 0


def test_d_sae_zero_is_refused_not_replaced_by_the_default(tmp_path, capsys, monkeypatch):
  _forbid_training(monkeypatch)
  assert _train(tmp_path / "run", "--d-sae", "0") == 2
  assert "--d-sae must be >= 1, got 0" in capsys.readouterr().err


def test_resuming_onto_another_activation_file_of_the_same_shape_is_refused(tmp_path, capsys):
  rng = np.random.default_rng(0)
  a, b = tmp_path / "a.npy", tmp_path / "b.npy"
  np.save(a, rng.standard_normal((512, 8)).astype(np.float32))
  np.save(b, rng.standard_normal((512, 8)).astype(np.float32))
  run = tmp_path / "run"
  assert _train(run, "--activations", str(a), "--steps", "10") == 0
  assert _train(run, "--activations", str(b), "--steps", "10", "--resume") == 2
  assert "data.fingerprint" in capsys.readouterr().err
  assert _train(run, "--activations", str(a), "--steps", "10", "--resume") == 0
  # The library's array source carries the fingerprint too.
  x = np.load(a)
  y = x.copy()
  y[200] += 1.0
  assert w.data.sources.array_fingerprint(x) == w.data.sources.array_fingerprint(x.copy())
  assert w.data.sources.array_fingerprint(x) != w.data.sources.array_fingerprint(y)


def test_a_diverged_run_exits_with_status_1_and_names_the_step(tmp_path, capsys):
  x = np.full((256, 8), 1e30, np.float32)  # finite, but its squares overflow float32
  np.save(tmp_path / "huge.npy", x)
  rc = _train(tmp_path / "run", "--activations", str(tmp_path / "huge.npy"), "--log-every", "5")
  err = capsys.readouterr().err
  assert rc == 1, err
  assert "diverged at step 0" in err
  assert (tmp_path / "run" / "sae" / "cfg.json").exists()  # the last finite state is written


def test_a_sweep_with_a_diverged_member_exits_with_status_1(tmp_path, capsys):
  cfg = tmp_path / "s.toml"
  cfg.write_text(f"""
[sae]
architecture = "tied"
[train]
steps = 10
batch_size = 64
log_every = 5
grad_clip = 1e30
[data]
geometry = "polygon"
planes = 2
polygon_k = 3
mono = 2
[grid]
learning_rate = [1e-3, 1e30]
sparsity = [0.8]
[output]
dir = "{tmp_path / "out"}"
""")
  assert cli.main(["sweep", str(cfg), "--no-progress"]) == 1
  assert "1 member(s) diverged" in capsys.readouterr().err
  assert (tmp_path / "out" / "sweep.json").exists()
  # Running it again into the same folder would mix two sweeps: refused, then --overwrite.
  assert cli.main(["sweep", str(cfg), "--no-progress"]) == 2
  assert "already holds a sweep" in capsys.readouterr().err
  assert cli.main(["sweep", str(cfg), "--no-progress", "--overwrite"]) == 1


def test_exit_statuses_are_documented():
  assert (
    "Exit status: 0 on success; 1 if training diverged"
    in cli.build_parser()._subparsers._group_actions[0].choices["train"].description
  )
  assert "1 if training diverged, 2 for bad input" in cli.build_parser().epilog


def test_demo_and_theory_check_their_outputs_before_working(tmp_path, capsys, monkeypatch):
  _forbid_training(monkeypatch)
  f = tmp_path / "file"
  f.write_text("x")
  assert cli.main(["demo", "--out", str(f), "--no-progress"]) == 2
  assert "is a file" in capsys.readouterr().err
  assert cli.main(["theory", "--json", str(tmp_path)]) == 2
  assert "is a folder" in capsys.readouterr().err


def test_run_folder_claims_refuses_clears_and_undoes_a_failed_start(tmp_path):
  """The library object behind `wsae train` and `wsae sweep` folders, used directly."""
  from wsae_jax.storage.run_folder import RunFolder

  mk = lambda p, **kw: RunFolder(
    p, entries=("run.json", "checkpoints"), keep=("activations",), marker="run.json", **kw
  )
  # A failed start in a folder the claim created leaves nothing, except what `keep` names.
  out = tmp_path / "new"
  with pytest.raises(RuntimeError):
    with mk(out).claim(resume=False, overwrite=False):
      (out / "checkpoints").mkdir()
      (out / "activations").mkdir()
      raise RuntimeError("input check failed")
  assert sorted(e.name for e in out.iterdir()) == ["activations"]
  # A started run is kept on failure; then it is refused unless resumed or overwritten.
  with pytest.raises(RuntimeError):
    with mk(out).claim(resume=False, overwrite=False):
      mk(out).write_json("run.json", {"step": 0})
      raise RuntimeError("diverged")
  assert (out / "run.json").exists()
  with pytest.raises(w.WSAEInputError, match="already holds a run \\(run.json\\)"):
    with mk(out).claim(resume=False, overwrite=False):
      pass
  folder = mk(out)
  with folder.claim(resume=False, overwrite=True) as old:
    assert [e.name for e in old] == ["run.json"]
    folder.clear(old)
  assert sorted(e.name for e in out.iterdir() if e.name != ".wsae.lock") == ["activations"]
  # Unrelated files: refused unless the kind of folder allows them (a sweep's working dir).
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("mine")
  with pytest.raises(w.WSAEInputError, match="holds no wsae run \\(it has notes.txt\\)"):
    with mk(other).claim(resume=False, overwrite=False):
      pass
  with mk(other, others_ok=True).claim(resume=False, overwrite=False) as old:
    assert old == []
  assert (other / "notes.txt").read_text() == "mine"  # never touched
