"""A run's output folder: one writer, never mixed with another run, replaced only on request.

`wsae train` and `wsae sweep` (and notebooks that want the same guarantees) open their folder as
a `RunFolder`:

    folder = RunFolder(out, entries=("run.json", "checkpoints", ...), marker="run.json")
    with folder.claim(resume=False, overwrite=False) as old:   # locked; refused if it would mix
      ... every input check ...
      folder.clear(old)                                        # --overwrite: only now
      folder.write_json("run.json", meta)

`claim` holds the folder's lock (`storage.lock`) for the whole block and refuses, before any work,
a path that is a file or cannot be written, a folder holding another kind of content, and a
folder holding a run unless the caller resumes it or overwrites it. If the block fails before the
run wrote its `marker` in a folder this call created, what it wrote is removed again (entries in
`keep`, such as a costly harvest, excepted), so a failed start leaves nothing to trip the next
one. Writes go through `storage.records` (atomic: a crash leaves the old file or the new one).
"""

from __future__ import annotations

import contextlib
import pathlib
import shutil
from typing import Any, Iterator

import numpy as np

from wsae_jax import _validate as V
from wsae_jax.storage import lock, records


class RunFolder:
  """The folder of one run (or one sweep).

  `entries`: the names this kind of run writes there (what `clear` may remove). `keep`: names
  that belong to the run but survive `clear` and a failed start. `marker`: the entry whose
  presence means a run was started (None: any of `entries`). `others_ok`: allow unrelated files
  beside the run (a sweep's output folder may be a working directory); otherwise a non-empty
  folder without a run is refused. `where`: how messages name the folder (the option that gave
  it).
  """

  def __init__(
    self,
    path,
    *,
    entries: tuple[str, ...],
    keep: tuple[str, ...] = (),
    marker: str | None = None,
    others_ok: bool = False,
    where: str = "--out",
    what: str = "run",
  ):
    self.path = pathlib.Path(path)
    self.entries, self.keep, self.marker = tuple(entries), tuple(keep), marker
    self.others_ok, self.where, self.what = others_ok, where, what

  def existing(self) -> list[pathlib.Path]:
    """The run's own entries already in the folder (`keep` excluded), sorted."""
    if not self.path.is_dir():
      return []
    return sorted(self.path / n for n in self.entries if (self.path / n).exists())

  def check(self, *, resume: bool, overwrite: bool) -> list[pathlib.Path]:
    """Refuses a folder this run would mix with; returns the run entries already there (what
    `clear` removes on overwrite). Does not lock (see `claim`)."""
    V.check_writable_dir(self.path, self.where)
    ours = self.existing()
    if not ours:
      others = sorted(
        e.name for e in self.path.iterdir() if e.name not in (lock.LOCK_NAME, *self.keep)
      )
      if others and not self.others_ok:
        raise V.WSAEInputError(
          f"{self.where} {str(self.path)!r} is not empty and holds no wsae {self.what} (it has "
          f"{', '.join(others[:5])}{', …' if len(others) > 5 else ''}); choose a new or empty "
          f"folder."
        )
      return []
    if not (resume or overwrite):
      raise V.WSAEInputError(
        f"{self.where} {str(self.path)!r} already holds a {self.what} "
        f"({', '.join(e.name for e in ours)}). Pass --resume to continue it with the same "
        f"settings, --overwrite to replace it, or choose another folder."
      )
    for e in ours:
      if e.is_dir():
        V.check_writable_dir(e, f"{self.where} {e.name}/")
    return ours

  @contextlib.contextmanager
  def claim(self, *, resume: bool, overwrite: bool) -> Iterator[list[pathlib.Path]]:
    """Locks the folder, checks it (`check`) and yields the run entries already there; a failed
    start in a folder this call created is undone (see the module docstring)."""
    created = not self.path.exists()
    V.check_writable_dir(self.path, self.where)  # a file or an unwritable place: before a lock
    try:
      with lock.folder_lock(self.path):
        yield self.check(resume=resume, overwrite=overwrite)
    except BaseException:
      if created and not self._started():
        self._remove_failed_start()
      raise

  def clear(self, entries) -> None:
    """Removes `entries` (from `claim`/`check`): call once every input check has passed."""
    for e in entries:
      if e.name in self.keep:
        continue
      shutil.rmtree(e) if e.is_dir() else e.unlink()

  def write_json(self, name: str, obj: Any, **kw) -> None:
    records.write_json(self.path / name, obj, **kw)

  def save_npy(self, name: str, array) -> None:
    records.save_npy(self.path / name, np.asarray(array))

  def _started(self) -> bool:
    if self.marker is not None:
      return (self.path / self.marker).exists()
    return bool(self.existing())

  def _remove_failed_start(self) -> None:
    if not self.path.is_dir():
      return
    for entry in self.path.iterdir():
      if entry.name not in self.keep:
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()
    if not any(self.path.iterdir()):
      self.path.rmdir()
