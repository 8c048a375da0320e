"""Runs that survive two writers and a full disk: real processes racing for one run folder, a real
file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets) during a checkpoint, an export and a report,
and the small input checks that used to give raw errors."""

import json
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

import wsae_jax as w
from wsae_jax.app import cli
from wsae_jax.storage import lock, records

TRAIN = ["train", "--no-progress", "--batch-size", "64", "--checkpoint-every", "10"]


@pytest.fixture()
def store(tmp_path):
  """Four shards of 64 rows (contexts of 16) with token ids."""
  from wsae_jax.data.store import ActivationWriter

  rng = np.random.default_rng(0)
  writer = ActivationWriter(tmp_path / "store", d_in=8, dtype="float32", context_len=16)
  for i in range(4):
    writer.write_shard(
      i, rng.standard_normal((64, 8)) + np.arange(8), tokens=rng.integers(0, 30, 64)
    )
  return tmp_path / "store"


def _wsae(args, *, fsize=None, wait=True):
  """`wsae ARGS` in a child process, optionally under a file-size limit (bytes) that the child
  sets on itself (as `ulimit -f` would) before it imports anything."""
  code = (
    "import resource, runpy, sys\n"
    f"limit = {fsize!r}\n"
    "if limit is not None: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "sys.argv = ['wsae', *sys.argv[1:]]\n"
    "runpy.run_module('wsae_jax.app.cli', run_name='__main__')\n"
  )
  cmd = [sys.executable, "-c", code, *map(str, args)]
  if not wait:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _no_temporaries(folder):
  left = [
    p
    for p in folder.rglob("*")
    if ".tmp" in p.name or "orbax-checkpoint-tmp" in p.name or ".old-" in p.name
  ]
  assert not left, left


def test_two_trainers_on_one_folder_the_second_is_refused_naming_the_first(tmp_path, capsys):
  run = tmp_path / "run"
  first = _wsae([*TRAIN, "--out", run, "--steps", "100000"], wait=False)
  try:
    for _ in range(1200):  # until the first holds the lock and has started training
      if (
        (run / "checkpoints").is_dir()
        and (run / lock.LOCK_NAME).exists()
        and str(first.pid) in (run / lock.LOCK_NAME).read_text()
      ):
        break
      assert first.poll() is None, first.communicate()
      time.sleep(0.1)
    else:
      raise AssertionError("the first trainer never took the lock")
    for extra in ([], ["--resume"], ["--overwrite"]):
      assert cli.main([*TRAIN, "--out", str(run), "--steps", "20", "--seed", "1", *extra]) == 2
      err = capsys.readouterr().err
      assert f"in use by pid {first.pid}" in err and "Traceback" not in err
    assert cli.main(["export", str(run), "--out", str(tmp_path / "exp")]) == 2
    assert f"in use by pid {first.pid}" in capsys.readouterr().err
  finally:
    first.send_signal(signal.SIGKILL)
    first.communicate()
  # The killed trainer's lock went with it: the folder can be taken over.
  assert cli.main([*TRAIN, "--out", str(run), "--steps", "20", "--overwrite"]) == 0


def test_a_full_disk_at_a_checkpoint_exits_3_in_one_line_and_resume_is_exact(tmp_path):
  run, ref = tmp_path / "run", tmp_path / "ref"
  args = [*TRAIN, "--steps", "20", "--d-sae", "4096"]  # ~330 kB per weight matrix
  bad = _wsae([*args, "--out", run], fsize=100_000)
  assert bad.returncode == 3, bad.stderr[-2000:]
  assert "cannot write" in bad.stderr and "File too large" in bad.stderr
  assert "Traceback" not in bad.stderr and bad.stderr.count("\n") <= 3, bad.stderr
  _no_temporaries(run)
  assert (run / "run.json").exists() and not (run / "sae").exists()
  # The limit lifted, the run resumes and ends with the parameters of an uninterrupted run.
  assert cli.main([*args, "--out", str(run), "--resume"]) == 0
  assert cli.main([*args, "--out", str(ref)]) == 0
  a = w.storage.saelens.load_saelens(run / "sae")[1]
  b = w.storage.saelens.load_saelens(ref / "sae")[1]
  for k in b:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_export_and_report_on_a_full_disk_leave_the_old_outputs(tmp_path):
  run = tmp_path / "run"
  assert cli.main([*TRAIN, "--steps", "20", "--d-sae", "4096", "--out", str(run)]) == 0
  before = (run / "sae" / "sae_weights.safetensors").read_bytes()
  # A new export folder: nothing is left behind.
  r = _wsae(["export", run, "--out", tmp_path / "new"], fsize=100_000)
  assert r.returncode == 3 and "cannot write" in r.stderr and "Traceback" not in r.stderr
  assert not (tmp_path / "new").exists()
  _no_temporaries(tmp_path)
  # Over the run's own export: the old folder survives whole.
  r = _wsae(["export", run, "--overwrite"], fsize=100_000)
  assert r.returncode == 3 and "Traceback" not in r.stderr
  assert (run / "sae" / "sae_weights.safetensors").read_bytes() == before
  _no_temporaries(run)
  # A report too large for the limit.
  r = _wsae(["report", run], fsize=20_000)
  assert r.returncode == 3 and "report.html" in r.stderr and "Traceback" not in r.stderr
  assert not (run / "report.html").exists()
  _no_temporaries(run)


def test_export_over_the_runs_own_folder_needs_overwrite(tmp_path):
  run = tmp_path / "run"
  assert cli.main([*TRAIN, "--steps", "10", "--out", str(run)]) == 0
  assert cli.main(["export", str(run)]) == 2
  assert cli.main(["export", str(run), "--overwrite"]) == 0
  assert not (run / "sae" / lock.LOCK_NAME).exists()  # the lock lives in the run, not the export


def test_a_failed_start_removes_only_the_folder_it_created(tmp_path):
  new = tmp_path / "new"
  assert cli.main([*TRAIN, "--steps", "10", "--out", str(new), "--gamma", "bogus"]) == 2
  assert not new.exists()
  mine = tmp_path / "mine"
  mine.mkdir()
  assert cli.main([*TRAIN, "--steps", "10", "--out", str(mine), "--gamma", "bogus"]) == 2
  assert mine.is_dir()  # the user's folder stays


def test_save_saelens_is_a_unit(tmp_path):
  cfg = w.ReLUSAEConfig(d_in=4, d_sae=8)
  import jax

  p = w.models.init(cfg, jax.random.key(0))
  out = w.storage.saelens.save_saelens(tmp_path / "s", cfg, p)
  assert sorted(x.name for x in out.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(w.WSAEInputError, match="holds no SAELens folder"):
    w.storage.saelens.save_saelens(tmp_path / "other", cfg, p)


def test_atomic_folder_keeps_the_old_one_on_failure(tmp_path):
  target = tmp_path / "t"
  target.mkdir()
  (target / "a").write_text("old")
  with pytest.raises(RuntimeError):
    with records.atomic_folder(target, replace=True) as tmp:
      (tmp / "a").write_text("new")
      raise RuntimeError("interrupted")
  assert (target / "a").read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
  with records.atomic_folder(target, replace=True) as tmp:
    (tmp / "a").write_text("new")
  assert (target / "a").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_write_failure_is_found_in_wrapped_errors():
  e = ValueError("orbax: save failed")
  e.__cause__ = OSError(28, "No space left on device")
  assert records.write_failure(e).errno == 28
  assert records.write_failure(RuntimeError("[Errno 27] File too large: '/x'")).errno == 27
  assert records.write_failure(ValueError("shape mismatch")) is None


def test_eval_refuses_the_rows_the_run_trained_on(store, tmp_path, capsys):
  run = tmp_path / "run"
  assert (
    cli.main(
      [
        "train",
        "--out",
        str(run),
        "--activations",
        str(store),
        "--arch",
        "topk",
        "--k",
        "3",
        "--d-sae",
        "24",
        "--steps",
        "10",
        "--batch-size",
        "32",
        "--no-progress",
      ]
    )
    == 0
  )
  assert cli.main(["eval", str(run), "--activations", str(store), "--eval-shards", "1"]) == 2
  assert "--allow-train-rows" in capsys.readouterr().err
  assert (
    cli.main(
      ["eval", str(run), "--activations", str(store), "--eval-shards", "1", "--allow-train-rows"]
    )
    == 0
  )
  assert json.loads((run / "eval.json").read_text())["training_rows"] is True


def test_small_inputs_get_the_librarys_error():
  x = jnp.ones((2, 3))
  with pytest.raises(w.WSAEInputError, match=r"shape \(1,\).*\(3,\)"):
    w.objectives.reconstruction.reconstruction_loss(x, x * 0, jnp.ones(1))


def test_a_pickled_tokens_file_and_a_stale_shard_are_named(store, tmp_path):
  import shutil

  from wsae_jax.data.store import ActivationStore

  bad = tmp_path / "bad"
  shutil.copytree(store, bad)
  meta = json.loads((bad / "metadata.json").read_text())
  tok = bad / meta["shards"][0]["tokens_file"]
  np.save(
    tok, np.array([object()] * meta["shards"][0]["n_tokens"], dtype=object), allow_pickle=True
  )
  with pytest.raises(w.WSAEInputError, match="not a plain .npy array of token ids"):
    ActivationStore(bad, 16, shuffle=False).read_all(with_tokens=True)
  stale = tmp_path / "stale"
  shutil.copytree(store, stale)
  meta = json.loads((stale / "metadata.json").read_text())
  meta["shards"][1]["n_tokens"] += 256  # the entry edited, the file and the total not
  (stale / "metadata.json").write_text(json.dumps(meta))
  with pytest.raises(w.WSAEInputError, match=meta["shards"][1]["file"] + " lists"):
    ActivationStore(stale, 16)


def test_sweep_file_checkpoint_every_zero_names_the_table_and_file(tmp_path):
  f = tmp_path / "s.toml"
  f.write_text(
    '[sae]\narchitecture = "tied"\nd_sae = 6\n[data]\ngeometry = "polygon"\n'
    "planes = 1\npolygon_k = 3\nmono = 2\n[train]\nsteps = 2\nbatch_size = 8\n"
    '[grid]\nseed = [0]\nsparsity = [0.9]\n[output]\ndir = "%s"\n'
    "checkpoint_every = 0\n" % (tmp_path / "o")
  )
  with pytest.raises(w.WSAEInputError, match=r"s.toml: \[output\] checkpoint_every must be >= 1"):
    from wsae_jax.app import sweep_file

    sweep_file.run_sweep_file(f, progress=False)


def test_only_write_failures_are_dropped_from_asyncio_logs():
  import logging

  from wsae_jax.storage import checkpoint

  def record(exc):
    return logging.LogRecord(
      "asyncio",
      logging.ERROR,
      __file__,
      1,
      "Task exception was never retrieved",
      None,
      (type(exc), exc, None),
    )

  disk = ValueError("OUT_OF_RANGE: Failed to write 80 bytes: File too large [os_error_code='27']")
  assert checkpoint._drop_reported_write_failures(record(disk)) is False
  assert checkpoint._drop_reported_write_failures(record(ValueError("a real bug"))) is True
  plain = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "no exception", None, None)
  assert checkpoint._drop_reported_write_failures(plain) is True
