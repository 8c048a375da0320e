"""One writer per output folder: an OS advisory lock on a file inside it.

`wsae train`, `wsae sweep` and `wsae export` hold `folder_lock(folder)` for as long as they may
write there. A second process asking for the same folder is refused at once with the holder's
pid, host and command (`FolderInUseError`, exit status 2 at the CLI). The lock is `flock` on
`folder/.wsae.lock`: the kernel releases it when the holder exits, however it exits (a killed
process leaves a stale file, never a stale lock). The file is never deleted (deleting it would let
two processes lock two different files of the same name); commands that check whether a folder is
empty ignore it.

On a file system without `flock` (some network mounts) the lock is not enforced and a warning
says so; on Windows there is no `fcntl` and the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import socket
import sys
import warnings

from wsae_jax import _validate as V

try:
  import fcntl
except ImportError:  # pragma: no cover - Windows
  fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".wsae.lock"


class FolderInUseError(V.WSAEInputError):
  """Another process holds the folder's lock."""


def _holder(path: pathlib.Path) -> str:
  try:
    h = json.loads(path.read_text() or "{}")
  except (OSError, ValueError):
    h = {}
  if not h:
    return "another process"
  return (
    f"pid {h.get('pid', '?')} on {h.get('host', '?')} ({h.get('command', '?')}, since "
    f"{h.get('since', '?')})"
  )


@contextlib.contextmanager
def folder_lock(folder, command: str | None = None):
  """Holds the advisory lock of `folder` (created if missing) for the `with` block.

  Raises `FolderInUseError` naming the holder if another process holds it.
  """
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / LOCK_NAME
  if fcntl is None:  # pragma: no cover - Windows
    yield
    return
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise FolderInUseError(
        f"{folder} is in use by {_holder(path)}: two processes writing one run folder would "
        f"mix their files. Wait for it to finish, or choose another folder."
      ) from None
    except OSError as e:  # no flock on this file system: say so, carry on unlocked
      warnings.warn(
        f"cannot lock {path} ({e}); another process could write {folder} at the same time.",
        RuntimeWarning,
        stacklevel=3,
      )
      yield
      return
    info = {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "command": command or " ".join(["wsae", *sys.argv[1:]])[:200],
      "since": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
