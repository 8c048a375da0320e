"""JSON records made JSON-safe, and every file and folder the library writes written atomically.

A reader never sees a half-written file or a folder whose files disagree: files are written to a
temporary sibling and renamed over the target (`atomic_file`, `write_json`, `write_text`), folders
built in a temporary sibling and renamed into place (`atomic_folder`). A write that fails (disk
full, file-size limit, I/O error, permissions changed mid-run) removes its temporary and raises
`OutputWriteError`, naming the path and the cause; what was there before is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
import shutil

import jax
import numpy as np


def jsonable(v):
  """A JSON-safe version of one value (arrays to lists, numpy scalars to Python numbers)."""
  if isinstance(v, (np.ndarray, jax.Array)):
    return np.asarray(v).tolist()
  if isinstance(v, (np.floating, np.integer, np.bool_)):
    return v.item()
  if isinstance(v, tuple):
    return list(v)
  return v


def clean(d):
  """`jsonable` applied through nested dicts and lists."""
  if isinstance(d, dict):
    return {k: clean(v) for k, v in d.items()}
  if isinstance(d, (list, tuple)):
    return [clean(v) for v in d]
  return jsonable(d)


class OutputWriteError(OSError):
  """Writing an output failed (ENOSPC, EFBIG, EIO, EACCES, ...): `path` and the cause's `errno` /
  `strerror`. The previous version of the output, if any, is untouched and no temporary is left.
  The CLI reports it in one line with exit status 3."""

  def __init__(self, path, cause: BaseException):
    err = cause if isinstance(cause, OSError) else None
    code = getattr(err, "errno", None)
    reason = getattr(err, "strerror", None) or str(cause) or type(cause).__name__
    super().__init__(code, reason)
    self.path = pathlib.Path(path)
    self.cause = cause

  def __str__(self):
    hint = {
      errno.ENOSPC: "free some space",
      errno.EFBIG: "the file-size limit (ulimit -f) is too small",
      errno.EDQUOT: "the disk quota is exhausted",
      errno.EACCES: "the folder's permissions changed",
      errno.EROFS: "the file system is read-only",
    }.get(self.errno, "check the disk")
    return f"cannot write {self.path}: {self.strerror} ({hint})"


WRITE_ERRNOS = frozenset(
  {errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EACCES, errno.EPERM, errno.EROFS, errno.EDQUOT}
)


def write_failure(exc: BaseException | None) -> OSError | None:
  """The OSError of a failed write somewhere in `exc`'s chain (`__cause__` / `__context__`, as
  libraries such as orbax wrap it, or only an "[Errno N]" / "os error N" in a message), or None."""
  import re

  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
      return exc
    m = re.search(
      r"\[Errno (\d+)\]|os error (\d+)|os_error_code='?(\d+)|errno[ =:]+(\d+)", str(exc)
    )
    if m:
      code = int(next(g for g in m.groups() if g))
      if code in WRITE_ERRNOS:
        return OSError(code, os.strerror(code))
    exc = exc.__cause__ or exc.__context__
  return None


def _remove(path: pathlib.Path) -> None:
  with contextlib.suppress(OSError):
    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


@contextlib.contextmanager
def atomic_file(path):
  """Yields a temporary path beside `path`; on success it is renamed over `path`, on any error
  removed (an OSError of a write becomes `OutputWriteError`)."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException as e:
    _remove(tmp)
    if isinstance(e, OSError) and not isinstance(e, OutputWriteError):
      raise OutputWriteError(path, e) from e
    raise


@contextlib.contextmanager
def atomic_folder(path, *, replace: bool = False):
  """Yields an empty temporary folder beside `path`; on success it becomes `path`.

  An existing `path` is replaced only with `replace=True`: it is moved aside, the new folder
  renamed in, then the old one deleted, so `path` is at every moment either the old folder or the
  new one. On any error the temporary is removed and `path` is untouched.
  """
  path = pathlib.Path(path)
  if path.exists() and not replace:
    raise FileExistsError(errno.EEXIST, "exists (pass replace=True)", str(path))
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  old = path.with_name(f".{path.name}.old-{os.getpid()}")
  _remove(tmp)
  try:
    tmp.mkdir(parents=True)
    yield tmp
    if path.exists():
      os.replace(path, old)
    os.replace(tmp, path)
  except BaseException as e:
    _remove(tmp)
    if old.exists() and not path.exists():
      os.replace(old, path)
    if isinstance(e, OSError) and not isinstance(e, OutputWriteError):
      raise OutputWriteError(path, e) from e
    raise
  _remove(old)


def write_text(path, text: str) -> None:
  """Writes `text` (UTF-8) atomically; see `atomic_file`."""
  with atomic_file(path) as tmp:
    tmp.write_text(text, encoding="utf-8")


def save_npy(path, arr) -> None:
  """Writes `arr` as a .npy file atomically; see `atomic_file`."""
  with atomic_file(path) as tmp:
    with open(tmp, "wb") as f:  # np.save on a name would append ".npy" to the temporary's
      np.save(f, np.asarray(arr))


def write_json(path, obj, *, indent: int = 2) -> None:
  """Writes `obj` as JSON atomically; see `atomic_file`."""
  write_text(path, json.dumps(clean(obj), indent=indent))
