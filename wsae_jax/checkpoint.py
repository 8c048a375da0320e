"""Checkpoints of the whole training state with orbax: save every N steps, keep the last K, resume.

A checkpoint holds the `TrainState` (parameters, optimiser state, step, dead-latent counters, the
divergence flag) and a JSON record of everything else a resumed run needs to be the same run: the
SAE and training configs, γ, the normalisation scale, and the data stream's description (kind,
seed; the position is the step, because every batch is a function of `(seed, step)`).

Writes are atomic: orbax writes into a temporary folder and renames it when complete, so a crash
or SIGKILL mid-save never leaves a checkpoint that looks finished. A checkpoint that fails to
restore (truncated or corrupted files) raises `CheckpointError` naming its folder, and
`restore_latest` falls back to the previous complete one with a warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wsae_jax import _validate as V

log = logging.getLogger(__name__)

# Fields that may differ between the run that wrote a checkpoint and the run resuming from it.
_RESUMABLE_DIFFERENCES = frozenset({"log_every"})


class CheckpointError(V.WSAEInputError):
  """A checkpoint cannot be used: corrupted, truncated, or written by an incompatible run."""


class IncompatibleRunError(CheckpointError):
  """The checkpoint is intact but was written by a run with other settings or data: resuming
  must stop here rather than fall back to an older checkpoint of the same run."""


def _jsonable(v):
  if isinstance(v, np.ndarray) or isinstance(v, jax.Array):
    return np.asarray(v).tolist()
  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  if isinstance(v, tuple):
    return list(v)
  return v


def _clean(d):
  if isinstance(d, dict):
    return {k: _clean(v) for k, v in d.items()}
  if isinstance(d, (list, tuple)):
    return [_clean(v) for v in d]
  return _jsonable(d)


class Checkpointer:
  """Saves and restores training states under one folder (one sub-folder per step).

  Args:
    directory: where checkpoints live (created if missing).
    every: save when the step count is a multiple of this (and always at the end of a run).
    keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, directory, *, every: int = 1000, keep: int = 3):
    V.check_int("every", every, low=1)
    V.check_int("keep", keep, low=1)
    self.directory = pathlib.Path(directory).absolute()
    self.every = every
    self.keep = keep
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                             create=True))

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

  def save(self, step: int, state, meta: dict) -> None:
    """Writes `state` and `meta` as the checkpoint of `step` (atomically; blocks until done)."""
    meta = _clean({**meta, "step": int(step)})
    if int(step) in self.steps():  # a damaged checkpoint we fell back from: replace it
      self._manager.delete(int(step))
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, step: int, target) -> tuple[Any, dict]:
    """Restores the checkpoint of `step` into the structure and shardings of `target`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      out = self._manager.restore(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      state, meta = out.state, out.meta
      jax.block_until_ready(state)
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
      raise CheckpointError(
          f"checkpoint {self.path(step)} could not be restored ({type(e).__name__}: "
          f"{str(e).splitlines()[0][:300]}); it is corrupted, truncated, or does not match this "
          f"run's parameter shapes.") from e
    return state, meta

  def read_meta(self, step: int) -> dict:
    """The JSON record of the checkpoint of `step`, read and checked without touching its arrays.

    Raises `CheckpointError` naming the file when it cannot be read or does not follow the schema
    (a missing or ill-typed field, or a field this version does not know).
    """
    f = self.path(step) / "meta" / "metadata"
    try:
      meta = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      raise CheckpointError(f"checkpoint {self.path(step)}: its record {f} cannot be read "
                            f"({type(e).__name__}: {e}); it is corrupted or truncated.") from None
    check_meta(meta, f)
    return meta

  def restore_latest(self, target, expected_meta: dict | None = None):
    """The newest usable checkpoint as `(state, meta)`, or None if the folder holds none.

    Each checkpoint's record is read and compared with `expected_meta` *before* any array is
    restored: a checkpoint written by a run with a different configuration or data raises
    `CheckpointError` listing the differences, and nothing is touched. A damaged checkpoint
    (unreadable record or arrays) is skipped with a warning naming it. If checkpoints exist but
    none can be used, `CheckpointError` is raised rather than returning None, so a caller never
    silently restarts from step 0 over a run's files.
    """
    steps = self.steps()
    problems = []
    for step in reversed(steps):
      try:
        meta = self.read_meta(step)
        if expected_meta is not None:
          check_compatible(meta, expected_meta, f"checkpoint {self.path(step)}")
        state, meta = self.restore(step, target)
      except IncompatibleRunError:
        raise
      except CheckpointError as e:
        problems.append(str(e))
        warnings.warn(f"{e} Falling back to the previous checkpoint.", RuntimeWarning,
                      stacklevel=2)
        continue
      return state, meta
    if steps:
      raise CheckpointError(
          f"none of the {len(steps)} checkpoint(s) in {self.directory} can be used:\n  "
          + "\n  ".join(problems) + "\nNothing was changed. Move the folder away (or pass "
          "--overwrite to `wsae train`) to start afresh.")
    return None

  def resume_or_start(self, target, meta: dict, *, resume: bool):
    """Resume-or-init, the one place `train` and `train_sweep` decide where a run starts.

    `resume=False` requires a folder without checkpoints: a second run written beside the first
    would mix the two (keep-K pruning would delete the newer run's checkpoints as they are
    written). `resume=True` returns `restore_latest(target, meta)`: `(state, saved_meta)`, or None
    when there is nothing to resume yet.
    """
    if resume:
      return self.restore_latest(target, expected_meta=meta)
    steps = self.steps()
    if steps:
      raise CheckpointError(
          f"{self.directory} already holds checkpoints (steps {steps}) of an earlier run; pass "
          f"resume=True to continue it (same settings), or give this run an empty folder "
          f"(`wsae train --overwrite` replaces the old run).")
    return None

  def close(self):
    self._manager.close()


# The checkpoint record's schema (what `run_meta` writes, plus the step and a sweep's histories).
_META_REQUIRED = {"sae_config": dict, "train_config": dict, "data": dict, "step": int}
_META_OPTIONAL = {"gamma": (list, type(None)), "normalization_scale": (float, type(None)),
                  "histories": list}


def check_meta(meta, where) -> dict:
  """Checks a checkpoint record against its schema; `CheckpointError` names the file and field."""
  try:
    V.check_fields(f"checkpoint record {where}", meta, _META_REQUIRED, _META_OPTIONAL)
    V.check_fields(f"checkpoint record {where}: sae_config", meta["sae_config"],
                   {"architecture": str, "d_in": int, "d_sae": int}, allow_unknown=True)
  except CheckpointError:
    raise
  except V.WSAEInputError as e:
    raise CheckpointError(str(e)) from None
  return meta


def check_compatible(saved: dict, current: dict, where) -> None:
  """Raises `IncompatibleRunError` listing every field that differs between saved and current."""
  diffs = []
  for section in ("sae_config", "train_config", "data"):
    a, b = saved.get(section, {}), _clean(current.get(section, {}))
    for k in sorted(set(a) | set(b)):
      if k in _RESUMABLE_DIFFERENCES:
        continue
      if a.get(k) != b.get(k):
        diffs.append(f"{section}.{k}: checkpoint has {a.get(k)!r}, this run has {b.get(k)!r}")
  sg, cg = saved.get("gamma"), _clean(current.get("gamma"))
  if (sg is None) != (cg is None) or (sg is not None and not np.allclose(sg, cg, rtol=0, atol=0)):
    diffs.append("gamma differs")
  if diffs:
    raise IncompatibleRunError(
        f"{where} was written by an incompatible run:\n  " + "\n  ".join(diffs)
        + "\nNothing was changed. Start a fresh run in another folder, or resume with the "
        "original settings.")


def run_meta(sae_cfg, train_cfg, *, gamma=None, data: dict | None = None,
             scale: float | None = None) -> dict:
  """The JSON record saved beside each state."""
  return {"sae_config": sae_cfg.to_dict(), "train_config": dataclasses.asdict(train_cfg),
          "gamma": None if gamma is None else np.asarray(gamma, np.float64).tolist(),
          "normalization_scale": scale, "data": data or {}}


def load_params(directory):
  """`(sae_config, params, meta)` of the newest usable checkpoint in `directory`, from its record."""
  from wsae_jax import sae as sae_lib
  from wsae_jax import train as train_lib
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise CheckpointError(f"no checkpoints at {directory} (no such folder).")
  ck = Checkpointer(directory)
  problems = []
  for step in reversed(ck.steps()):
    try:
      meta = ck.read_meta(step)
      where = f"checkpoint record {ck.path(step) / 'meta' / 'metadata'}"
      cfg = sae_lib.config_from_dict(meta["sae_config"], f"{where}: sae_config")
      tc = V.build_dataclass(train_lib.TrainConfig, meta["train_config"], f"{where}: train_config")
      state, meta = ck.restore(step, train_lib.new_state(cfg, tc))
    except V.WSAEInputError as e:
      problems.append(str(e))
      warnings.warn(f"skipping checkpoint {ck.path(step)}: {e}", RuntimeWarning, stacklevel=2)
      continue
    return cfg, state.params, meta
  raise CheckpointError(f"no usable checkpoint in {directory}"
                        + (":\n  " + "\n  ".join(problems) if problems else "."))
