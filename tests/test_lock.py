"""One writer per folder: a real second process is refused, naming the holder; a killed holder
leaves no lock behind."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from wsae_jax.storage import lock


def _holder(folder, ready):
  code = textwrap.dedent(f"""
      import pathlib, time
      from wsae_jax.storage import lock
      with lock.folder_lock({str(folder)!r}, command="holder-test"):
          pathlib.Path({str(ready)!r}).write_text("locked")
          time.sleep(60)
  """)
  return subprocess.Popen([sys.executable, "-c", code])


def _wait(path, proc):
  for _ in range(300):
    if path.exists():
      return
    assert proc.poll() is None, "the holder died"
    time.sleep(0.05)
  raise AssertionError("the holder never took the lock")


def test_a_second_process_is_refused_and_a_killed_holder_releases(tmp_path):
  run = tmp_path / "run"
  proc = _holder(run, tmp_path / "ready")
  try:
    _wait(tmp_path / "ready", proc)
    with pytest.raises(lock.FolderInUseError, match=rf"pid {proc.pid} .*holder-test"):
      with lock.folder_lock(run):
        pass
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  # The kernel released the dead holder's lock: the folder is free again.
  with lock.folder_lock(run, command="after"):
    assert (run / lock.LOCK_NAME).read_text().count(str(os.getpid())) == 1
  assert (run / lock.LOCK_NAME).read_text() == ""  # released: no holder recorded


def test_the_lock_is_reentrant_across_sequential_uses(tmp_path):
  for _ in range(3):
    with lock.folder_lock(tmp_path / "x"):
      pass
