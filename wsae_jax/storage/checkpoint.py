"""Checkpoints of a training state with orbax: save every N steps, keep the last K, restore.

A checkpoint holds a state pytree and a JSON record beside it (what the record says is the run
lifecycle's business: `wsae_jax.training.run`). Writes are atomic: orbax writes into a temporary
folder and renames it when complete, so a crash or SIGKILL mid-save never leaves a checkpoint that
looks finished. A checkpoint that fails to restore (truncated or corrupted files) raises
`CheckpointError` naming its folder.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from wsae_jax import _validate as V
from wsae_jax.storage import records


class CheckpointError(V.WSAEInputError):
  """A checkpoint cannot be used: corrupted, truncated, or written by an incompatible run."""


def _quiet_closed_event_loops() -> None:
  """When a save fails, tensorstore's pending callbacks reach orbax's already closed event loop
  and each prints an "Event loop is closed" traceback (dozens of them, as unraisable exceptions or
  from its threads), and asyncio logs the failed task's exception once more. The failure itself is
  reported once, by `save`; these are dropped. Every other exception passes through. Installed
  once, before the first save."""
  import threading

  if getattr(sys.unraisablehook, "_wsae_quiet", False):
    return
  noise = lambda e: isinstance(e, RuntimeError) and "Event loop is closed" in str(e)
  previous_unraisable, previous_thread = sys.unraisablehook, threading.excepthook
  previous_except = sys.excepthook

  def unraisable(u):
    if not noise(u.exc_value):
      previous_unraisable(u)

  def thread(args):
    if not noise(args.exc_value):
      previous_thread(args)

  def printed(kind, value, tb):  # what PyErr_Print in a callback thread goes through
    if not noise(value):
      previous_except(kind, value, tb)

  unraisable._wsae_quiet = True  # type: ignore[attr-defined]
  sys.unraisablehook = unraisable
  threading.excepthook = thread
  sys.excepthook = printed
  # The failed write's own exception, left in an orbax task, is logged again by asyncio when the
  # task is collected ("Task exception was never retrieved"), often at interpreter exit.
  logging.getLogger("asyncio").addFilter(_drop_reported_write_failures)


def _drop_reported_write_failures(record: logging.LogRecord) -> bool:
  """A logging filter: False for a record that carries a write failure (already raised as
  `OutputWriteError` by `Checkpointer.save`), True for everything else."""
  exc = record.exc_info[1] if record.exc_info else None
  return exc is None or records.write_failure(exc) is None


class Checkpointer:
  """Saves and restores training states under one folder (one sub-folder per step).

  Args:
    directory: where checkpoints live (created if missing).
    every: save when the step count is a multiple of this (and always at the end of a run).
    keep: how many of the newest checkpoints to keep.
    every_minutes: also save when this many minutes have passed since the last save (or since
      the checkpointer was made): a preemptible job loses at most this much work. One process
      only: the processes of a multi-host job would disagree on the time.
  """

  def __init__(self, directory, *, every: int = 1000, keep: int = 3, every_minutes=None):
    V.check_int("every", every, low=1)
    V.check_int("keep", keep, low=1)
    if every_minutes is not None:
      V.check_range("every_minutes", every_minutes, low=0.0, low_open=True)
      if jax.process_count() > 1:
        raise V.WSAEInputError(
          "time-based checkpoints (every_minutes) need a single process: the processes of a "
          "multi-host job would save at different steps; use every (steps) instead."
        )
    self.directory = pathlib.Path(directory).absolute()
    self.every = every
    self.keep = keep
    self.every_minutes = every_minutes
    self._last_save = time.monotonic()
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=False, create=True
      ),
    )

  def check_writable(self) -> None:
    """Raises `WSAEInputError` now if checkpoints could not be written here (before training)."""
    V.check_writable_dir(self.directory, "checkpoint folder")

  def steps(self) -> list[int]:
    """Steps of the complete checkpoints, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def path(self, step: int) -> pathlib.Path:
    return self.directory / str(step)

  def should_save(self, step: int) -> bool:
    return step % self.every == 0

  def time_due(self) -> bool:
    """`every_minutes` have passed since the last save (or since this checkpointer was made)."""
    return (
      self.every_minutes is not None
      and time.monotonic() - self._last_save >= 60.0 * self.every_minutes
    )

  def save(self, step: int, state, meta: dict) -> None:
    """Writes `state` and `meta` as the checkpoint of `step` (atomically; blocks until done)."""
    meta = records.clean({**meta, "step": int(step)})
    if int(step) in self.steps():  # a damaged checkpoint we fell back from: replace it
      self._manager.delete(int(step))
    # orbax logs a failed write from each of its threads with a full traceback (at ERROR, through
    # absl) before raising; the raised error below says it once.
    _quiet_closed_event_loops()
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.CRITICAL)
    try:
      self._manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
      )
      self._manager.wait_until_finished()
      self._last_save = time.monotonic()
    except Exception as e:
      failure = records.write_failure(e)
      if failure is None:
        raise
      self._remove_partial(int(step))
      raise records.OutputWriteError(self.path(step), failure) from e
    finally:
      absl_log.setLevel(level)

  def _remove_partial(self, step: int) -> None:
    """Removes what a failed save of `step` left (orbax's temporary folder); complete
    checkpoints are never touched."""
    import shutil

    # orbax's writer threads can still be finishing (and creating folders) after the save raised:
    # wait for them, then remove until two looks in a row find nothing.
    try:
      self._manager.wait_until_finished()
    except Exception:  # the same failure again; it was reported already
      pass
    clean_looks = 0
    for attempt in range(50):
      left = list(self.directory.glob(f"{step}.orbax-checkpoint-tmp*"))
      if self.path(step).exists() and step not in self.steps():
        left.append(self.path(step))
      for p in left:
        shutil.rmtree(p, ignore_errors=True)
      clean_looks = clean_looks + 1 if not left else 0
      if clean_looks == 2:
        return
      time.sleep(0.02 * (attempt + 1) if left else 0.05)

  def restore(self, step: int, target) -> tuple[Any, dict]:
    """Restores the checkpoint of `step` into the structure and shardings of `target`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      out = self._manager.restore(
        int(step),
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        ),
      )
      state, meta = out.state, out.meta
      jax.block_until_ready(state)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      raise CheckpointError(
        f"checkpoint {self.path(step)} could not be restored ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:300]}); it is corrupted, truncated, or does not match this "
        f"run's parameter shapes."
      ) from e
    return state, meta

  def read_meta(self, step: int) -> dict:
    """The JSON record of the checkpoint of `step`, read without touching its arrays.

    Raises `CheckpointError` naming the file when it cannot be read or is not JSON.
    """
    f = self.meta_file(step)
    try:
      return json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointError(
        f"checkpoint {self.path(step)}: its record {f} cannot be read "
        f"({type(e).__name__}: {e}); it is corrupted or truncated."
      ) from None

  def meta_file(self, step: int) -> pathlib.Path:
    return self.path(step) / "meta" / "metadata"

  def close(self):
    self._manager.close()
